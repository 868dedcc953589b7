// The contiguous kernels, written once and compiled once per ISA: kernels_baseline.cpp,
// kernels_avx2.cpp and kernels_avx512.cpp include this file with their own compiler flags,
// their own namespace (TOLERANCE_ISA_NS) and their own lane count (TOLERANCE_LANES, in
// float64 lanes). Everything here has internal linkage or lives in that namespace, so no
// code compiled for one ISA can be picked by the linker for another.
//
// The vector loop uses GCC/Clang vector extensions: each operation is the same IEEE
// operation as the scalar rule in kernels.hpp (no contraction: -ffp-contract=off), so
// every path is bit-identical. Per block of BLOCK elements the loop keeps per-lane maxima
// and counts; the first index of a new maximum is found by rescanning that block only when
// its maximum beats the running one (ties keep the earlier index).
#pragma once

#include <algorithm>

#include "kernels.hpp"

#if !defined(TOLERANCE_ISA_NS) || !defined(TOLERANCE_LANES)
#error "define TOLERANCE_ISA_NS and TOLERANCE_LANES before including kernels_isa.hpp"
#endif

#if defined(__GNUC__) && !defined(__clang__)
// Vectors wider than the ISA's registers are passed between inlined internal helpers only;
// the ABI note does not concern us.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace tolerance {
namespace TOLERANCE_ISA_NS {
namespace {

using namespace ::tolerance::rules;
using std::int64_t;
using std::size_t;
using std::uint64_t;

inline int64_t ordered(float x) { return ordered_f32(x); }
inline int64_t ordered(double x) { return ordered_f64(x); }

// ---- scalar loops: one element at a time through the named rules ----------------------
template <class T, bool WantUlp>
void run_float_scalar(const void* av, const void* bv, size_t n, const Params& p, RunStats& rs,
                      int64_t base) {
    const T* a = static_cast<const T*>(av);
    const T* b = static_cast<const T*>(bv);
    for (size_t k = 0; k < n; ++k) {
        const uint64_t ulpd = WantUlp ? ulp_distance(ordered(a[k]), ordered(b[k])) : 0;
        float_element(static_cast<double>(a[k]), static_cast<double>(b[k]), ulpd, WantUlp, p, rs,
                      base + static_cast<int64_t>(k));
    }
}

template <bool WantUlp>
void run_half(const void* av, const void* bv, size_t n, const Params& p, RunStats& rs,
              int64_t base) {
    const std::uint16_t* a = static_cast<const std::uint16_t*>(av);
    const std::uint16_t* b = static_cast<const std::uint16_t*>(bv);
    for (size_t k = 0; k < n; ++k) {
        const uint64_t ulpd = WantUlp ? ulp_distance(ordered_f16(a[k]), ordered_f16(b[k])) : 0;
        float_element(half_to_double(a[k]), half_to_double(b[k]), ulpd, WantUlp, p, rs,
                      base + static_cast<int64_t>(k));
    }
}

template <class T> struct Wide { using W = int64_t; using M = uint64_t; };
template <> struct Wide<uint64_t> { using W = uint64_t; using M = uint64_t; };
template <> struct Wide<i128> { using W = i128; using M = u128; };

template <class T, bool WantUlp>
void run_int(const void* av, const void* bv, size_t n, const Params& p, RunStats& rs,
             int64_t base) {
    using W = typename Wide<T>::W;
    using M = typename Wide<T>::M;
    const T* a = static_cast<const T*>(av);
    const T* b = static_cast<const T*>(bv);
    for (size_t k = 0; k < n; ++k) {
        T x, y;
        std::memcpy(&x, a + k, sizeof x);
        std::memcpy(&y, b + k, sizeof y);
        int_element<W, M>(static_cast<W>(x), static_cast<W>(y), p, rs,
                          base + static_cast<int64_t>(k));
    }
}

// ---- the vector loop for float32 / float64 --------------------------------------------
constexpr int L = TOLERANCE_LANES;
typedef double vd __attribute__((vector_size(8 * L)));
typedef int64_t vi __attribute__((vector_size(8 * L)));
typedef uint64_t vu __attribute__((vector_size(8 * L)));
typedef float vf __attribute__((vector_size(4 * L)));
typedef std::int32_t vi32 __attribute__((vector_size(4 * L)));

template <class V, class S>
inline V splat(S s) {
    V v;
    for (int k = 0; k < L; ++k) v[k] = s;
    return v;
}
template <class V, class S>
inline S hmax(V v, S init) {
    S m = init;
    for (int k = 0; k < L; ++k) m = v[k] > m ? v[k] : m;
    return m;
}
template <class V>
inline int64_t hsum(V v) {
    int64_t s = 0;
    for (int k = 0; k < L; ++k) s += static_cast<int64_t>(v[k]);
    return s;
}

template <class T> struct VecOf;
template <> struct VecOf<float> {
    using V = vf;
    static vd to_double(V v) { return __builtin_convertvector(v, vd); }
    static vi bits(V v) { return __builtin_convertvector((vi32)v, vi); }
    static constexpr int64_t mag_mask = 0x7fffffff;
};
template <> struct VecOf<double> {
    using V = vd;
    static vd to_double(V v) { return v; }
    static vi bits(V v) { return (vi)v; }
    static constexpr int64_t mag_mask = 0x7fffffffffffffff;
};

inline double scalar_rel(double x, double y) {  // the rel figure of one compared pair
    return rel_diff(abs_diff(x, y), mag_max(x, y), is_inf_mismatch(x, y));
}

template <class T, bool WantUlp>
void run_float_vec(const void* av, const void* bv, size_t n, const Params& p, RunStats& rs,
                   int64_t base) {
    using V = typename VecOf<T>::V;
    constexpr size_t BLOCK = 2048;
    const T* a = static_cast<const T*>(av);
    const T* b = static_cast<const T*>(bv);
    const vd vinf = splat<vd>(std::numeric_limits<double>::infinity());
    const vd vzero = splat<vd>(0.0), vneg = splat<vd>(-1.0);
    const vd vatol = splat<vd>(p.atol), vrtol = splat<vd>(p.rtol);
    const vu vulp = splat<vu>(p.ulp);
    const vu absmask = splat<vu>(uint64_t{0x7fffffffffffffff});
    const vi magmask = splat<vi>(VecOf<T>::mag_mask);
    const bool check_ulp = WantUlp && p.ulp != std::numeric_limits<uint64_t>::max();
    vi c_over = splat<vi>(int64_t{0}), c_nm = c_over, c_nb = c_over, c_inf = c_over;
    vu v_ulp = splat<vu>(uint64_t{0});
    size_t i = 0;
    while (n - i >= static_cast<size_t>(L)) {
        const size_t len = std::min(BLOCK, (n - i) / L * L);
        vd bmax = vneg, brel = vneg;
        for (size_t j = i; j < i + len; j += L) {
            V ta, tb;
            std::memcpy(&ta, a + j, sizeof ta);
            std::memcpy(&tb, b + j, sizeof tb);
            const vd da = VecOf<T>::to_double(ta), db = VecOf<T>::to_double(tb);
            const vi eq = da == db;
            const vd diff = da - db;
            const vd ad = eq ? vzero : (vd)((vu)diff & absmask);
            const vd xa = (vd)((vu)da & absmask), xb = (vd)((vu)db & absmask);
            const vd mx = xa > xb ? xa : xb;
            const vi nana = da != da, nanb = db != db;
            const vi anyn = nana | nanb, both = nana & nanb;
            const vi infm = ((xa == vinf) | (xb == vinf)) & ~eq & ~anyn;
            const vd bound = vatol + vrtol * mx;
            vi inside = (ad <= bound) & ~infm;
            if constexpr (WantUlp) {
                const vi ia = VecOf<T>::bits(ta), ib = VecOf<T>::bits(tb);
                const vi ma = ia & magmask, mb = ib & magmask;
                const vi oa = ia < 0 ? -ma : ma, ob = ib < 0 ? -mb : mb;
                const vu ud0 = oa >= ob ? (vu)oa - (vu)ob : (vu)ob - (vu)oa;
                const vu ud = ud0 & ~(vu)anyn;
                if (check_ulp) inside &= (ud <= vulp);
                v_ulp = ud > v_ulp ? ud : v_ulp;
            }
            inside |= eq | both;
            c_over -= ~inside;
            c_nm -= anyn & ~both;
            c_nb -= both;
            c_inf -= infm;
            bmax = ad > bmax ? ad : bmax;
            vd rel = mx > vzero ? ad / mx : vzero;
            rel = infm ? vinf : rel;
            rel = anyn ? vneg : rel;
            brel = rel > brel ? rel : brel;
        }
        const double m = hmax(bmax, -1.0);
        if (m > rs.best_abs) {
            for (size_t k = i; k < i + len; ++k) {
                if (abs_diff(static_cast<double>(a[k]), static_cast<double>(b[k])) == m) {
                    rs.best_abs = m;
                    rs.arg_abs = base + static_cast<int64_t>(k);
                    break;
                }
            }
        }
        const double r = hmax(brel, -1.0);
        if (r > rs.best_rel) {
            for (size_t k = i; k < i + len; ++k) {
                const double x = static_cast<double>(a[k]), y = static_cast<double>(b[k]);
                if (!is_nan(x) && !is_nan(y) && scalar_rel(x, y) == r) {
                    rs.best_rel = r;
                    rs.arg_rel = base + static_cast<int64_t>(k);
                    break;
                }
            }
        }
        i += len;
    }
    rs.count_over += hsum(c_over);
    rs.nan_mismatch += hsum(c_nm);
    rs.nan_both += hsum(c_nb);
    rs.inf_mismatch += hsum(c_inf);
    if (WantUlp) rs.max_ulp = std::max(rs.max_ulp, hmax(v_ulp, uint64_t{0}));
    if (i < n) run_float_scalar<T, WantUlp>(a + i, b + i, n - i, p, rs, base + static_cast<int64_t>(i));
}

// ---- a read-only pass over the same bytes (the memory ceiling of the benchmark) -------
uint64_t read_pass_one(const unsigned char* p, size_t nbytes) {
    typedef uint64_t v4u __attribute__((vector_size(32)));
    v4u s0 = {0, 0, 0, 0}, s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 128 <= nbytes; i += 128) {
        v4u x0, x1, x2, x3;
        std::memcpy(&x0, p + i, 32);
        std::memcpy(&x1, p + i + 32, 32);
        std::memcpy(&x2, p + i + 64, 32);
        std::memcpy(&x3, p + i + 96, 32);
        s0 ^= x0; s1 += x1; s2 ^= x2; s3 += x3;
    }
    uint64_t s = 0;
    for (int k = 0; k < 4; ++k) s += s0[k] ^ s1[k] ^ s2[k] ^ s3[k];
    for (; i < nbytes; ++i) s += p[i];
    return s;
}
uint64_t read_pass_impl(const void* a, size_t abytes, const void* b, size_t bbytes) {
    return read_pass_one(static_cast<const unsigned char*>(a), abytes) ^
           (read_pass_one(static_cast<const unsigned char*>(b), bbytes) * 3);
}

template <bool Vec>
KernelTable make_table(const char* name) {
    KernelTable t{};
    t.name = name;
    t.fn[K_F16][0] = run_half<false>;
    t.fn[K_F16][1] = run_half<true>;
    if constexpr (Vec) {
        t.fn[K_F32][0] = run_float_vec<float, false>;
        t.fn[K_F32][1] = run_float_vec<float, true>;
        t.fn[K_F64][0] = run_float_vec<double, false>;
        t.fn[K_F64][1] = run_float_vec<double, true>;
    } else {
        t.fn[K_F32][0] = run_float_scalar<float, false>;
        t.fn[K_F32][1] = run_float_scalar<float, true>;
        t.fn[K_F64][0] = run_float_scalar<double, false>;
        t.fn[K_F64][1] = run_float_scalar<double, true>;
    }
#define TOLERANCE_INT_ENTRY(K, T) t.fn[K][0] = t.fn[K][1] = run_int<T, false>;
    TOLERANCE_INT_ENTRY(K_I8, std::int8_t)
    TOLERANCE_INT_ENTRY(K_I16, std::int16_t)
    TOLERANCE_INT_ENTRY(K_I32, std::int32_t)
    TOLERANCE_INT_ENTRY(K_I64, std::int64_t)
    TOLERANCE_INT_ENTRY(K_U8, std::uint8_t)
    TOLERANCE_INT_ENTRY(K_U16, std::uint16_t)
    TOLERANCE_INT_ENTRY(K_U32, std::uint32_t)
    TOLERANCE_INT_ENTRY(K_U64, std::uint64_t)
    TOLERANCE_INT_ENTRY(K_I128, i128)
#undef TOLERANCE_INT_ENTRY
    t.read_pass = read_pass_impl;
    return t;
}

}  // namespace
}  // namespace TOLERANCE_ISA_NS
}  // namespace tolerance
