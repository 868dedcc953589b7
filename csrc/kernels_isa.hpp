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
#include <type_traits>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

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
    using UI = std::uint32_t;  // ULP arithmetic: distances of float32 fit 32 bits
    typedef std::uint32_t vui __attribute__((vector_size(4 * L)));
    typedef std::int32_t vsi __attribute__((vector_size(4 * L)));
    static vd to_double(V v) { return __builtin_convertvector(v, vd); }
    static vi widen(vsi m) { return __builtin_convertvector(m, vi); }
};
template <> struct VecOf<double> {
    using V = vd;
    using UI = std::uint64_t;
    typedef std::uint64_t vui __attribute__((vector_size(8 * L)));
    typedef std::int64_t vsi __attribute__((vector_size(8 * L)));
    static vd to_double(V v) { return v; }
    static vi widen(vsi m) { return m; }
};

// Any lane set in a comparison mask (one movemask where the ISA has it).
inline bool any_true(vi m) {
#if defined(__AVX__) && TOLERANCE_LANES == 4
    return _mm256_movemask_pd(_mm256_castsi256_pd((__m256i)m)) != 0;
#elif defined(__AVX512F__) && TOLERANCE_LANES == 8
    return _mm512_test_epi64_mask((__m512i)m, (__m512i)m) != 0;
#elif defined(__SSE2__) && TOLERANCE_LANES == 2
    return _mm_movemask_pd(_mm_castsi128_pd((__m128i)m)) != 0;
#else
    std::int64_t r = 0;
    for (int k = 0; k < L; ++k) r |= m[k];
    return r != 0;
#endif
}

inline double scalar_rel(double x, double y) {  // the rel figure of one compared pair
    return rel_diff(abs_diff(x, y), mag_max(x, y), is_inf_mismatch(x, y));
}

// ULP distances of the pairs (0 for NaN pairs is the caller's business).
template <class T>
inline typename VecOf<T>::vui ulp_lanes(typename VecOf<T>::V ta, typename VecOf<T>::V tb) {
    using vui = typename VecOf<T>::vui;
    using vsi = typename VecOf<T>::vsi;
    using UI = typename VecOf<T>::UI;
    const UI magbits = static_cast<UI>(~UI{0} >> 1);
    const vsi ia = (vsi)ta, ib = (vsi)tb;
    const vsi ma = (vsi)((vui)ia & magbits), mb = (vsi)((vui)ib & magbits);
    const vsi oa = ia < 0 ? -ma : ma, ob = ib < 0 ? -mb : mb;
    return oa >= ob ? (vui)oa - (vui)ob : (vui)ob - (vui)oa;
}

#if defined(__AVX2__) && TOLERANCE_LANES == 4
#define TOLERANCE_AVX2_FAST 1
// Hand-scheduled AVX2 fast blocks (finite values only; false when the block holds a NaN,
// an infinity or an overflowing difference, and then the caller refolds it on the full
// path). The same IEEE operations as the rules: no contraction, exact division.
inline __m256d as_pd(vd v) { return (__m256d)v; }
inline vd as_vd(__m256d v) { return (vd)v; }

// The exact relative differences of 8 pairs (0 where max(|a|,|b|) is 0) folded into the
// running maxima, and the thresholds below which a later pair cannot raise them.
inline void fold_rel(__m256d d0, __m256d d1, __m256d m0, __m256d m1, __m256d shrink,
                     __m256d& rel0, __m256d& rel1, __m256d& thr0, __m256d& thr1) {
    const __m256d zero = _mm256_setzero_pd();
    rel0 = _mm256_max_pd(_mm256_and_pd(_mm256_cmp_pd(m0, zero, _CMP_GT_OQ), _mm256_div_pd(d0, m0)), rel0);
    rel1 = _mm256_max_pd(_mm256_and_pd(_mm256_cmp_pd(m1, zero, _CMP_GT_OQ), _mm256_div_pd(d1, m1)), rel1);
    thr0 = _mm256_mul_pd(rel0, shrink);
    thr1 = _mm256_mul_pd(rel1, shrink);
}

// The margin's element maxima (rtol > 0) of 8 pairs: d / bound, dividing only in lanes
// where d may beat the running maximum m, i.e. d > t*bound with t = m(1 - 2^-50) (t = 0
// for m < 2^-900; a product under 2^-1000 always divides): the same rule as the generic
// loop (run_float_vec), so the same maxima.
struct MarginLanes {
    __m256d m0, m1, t0, t1;
    static __m256d thr(__m256d m) {
        return _mm256_and_pd(_mm256_cmp_pd(m, _mm256_set1_pd(0x1p-900), _CMP_GE_OQ),
                             _mm256_mul_pd(m, _mm256_set1_pd(1.0 - 0x1p-50)));
    }
    explicit MarginLanes(vd m) : m0(as_pd(m)), m1(as_pd(m)), t0(thr(as_pd(m))), t1(thr(as_pd(m))) {}
    static __m256d cand(__m256d d, __m256d bound, __m256d t) {
        const __m256d l = _mm256_mul_pd(t, bound);
        return _mm256_and_pd(_mm256_cmp_pd(d, _mm256_setzero_pd(), _CMP_GT_OQ),
                             _mm256_or_pd(_mm256_cmp_pd(d, l, _CMP_GT_OQ),
                                          _mm256_cmp_pd(l, _mm256_set1_pd(0x1p-1000), _CMP_LT_OQ)));
    }
    static __m256d quot(__m256d d, __m256d bound) {  // margin_of: NaN (0/0, inf/inf) -> 0
        const __m256d q = _mm256_div_pd(d, bound);
        return _mm256_and_pd(q, _mm256_cmp_pd(q, q, _CMP_ORD_Q));
    }
    void fold(__m256d d0, __m256d d1, __m256d b0, __m256d b1) {
        if (_mm256_movemask_pd(_mm256_or_pd(cand(d0, b0, t0), cand(d1, b1, t1))) == 0) return;
        m0 = _mm256_max_pd(quot(d0, b0), m0);
        m1 = _mm256_max_pd(quot(d1, b1), m1);
        t0 = thr(m0);
        t1 = thr(m1);
    }
    vd result() const { return as_vd(_mm256_max_pd(m0, m1)); }
};

// 8 float32 pairs widened to float64 (exact): |a-b| and max(|a|,|b|), low and high halves.
// `mx` is max(|a|,|b|) already taken in float32 (exact: it is one of the inputs).
struct Widened8 {
    __m256d d0, d1, m0, m1;
};
inline Widened8 widen8(__m256 fa, __m256 fb, __m256 mx) {
    const __m256d absd = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffff));
    const __m256d a0 = _mm256_cvtps_pd(_mm256_castps256_ps128(fa));
    const __m256d a1 = _mm256_cvtps_pd(_mm256_extractf128_ps(fa, 1));
    const __m256d b0 = _mm256_cvtps_pd(_mm256_castps256_ps128(fb));
    const __m256d b1 = _mm256_cvtps_pd(_mm256_extractf128_ps(fb, 1));
    return {_mm256_and_pd(_mm256_sub_pd(a0, b0), absd), _mm256_and_pd(_mm256_sub_pd(a1, b1), absd),
            _mm256_cvtps_pd(_mm256_castps256_ps128(mx)), _mm256_cvtps_pd(_mm256_extractf128_ps(mx, 1))};
}

template <bool WantUlp>
inline bool fast_block_avx2(const float* a, const float* b, size_t len, const Params& p,
                            bool check_ulp, vd& vmax_io, vd& brel_io, vd& thr_io, int64_t& over,
                            uint64_t& ulpmax, bool want_margin, vd& marg_io) {
    MarginLanes mg(marg_io);
    const __m256i mag = _mm256_set1_epi32(0x7fffffff);
    const __m256d atol = _mm256_set1_pd(p.atol), rtol = _mm256_set1_pd(p.rtol);
    const __m256d zero = _mm256_setzero_pd(), shrink = _mm256_set1_pd(1.0 - 0x1p-50);
    const __m256i lim = _mm256_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(
        p.ulp > 0xffffffffu ? 0xffffffffu : p.ulp)));
    __m256d vmax0 = as_pd(vmax_io), vmax1 = vmax0, rel0 = as_pd(brel_io), rel1 = rel0;
    __m256d thr0 = as_pd(thr_io), thr1 = thr0;
    __m256i nf = _mm256_setzero_si256(), um = _mm256_setzero_si256();
    // a lane that compared nothing yet (rel < 0) must take its first value whatever it is
    bool force = _mm256_movemask_pd(_mm256_cmp_pd(rel0, zero, _CMP_LT_OQ)) != 0;
    int64_t cnt = 0;
    for (size_t j = 0; j < len; j += 8) {
        const __m256 fa = _mm256_loadu_ps(a + j), fb = _mm256_loadu_ps(b + j);
        const __m256i ia = _mm256_castps_si256(fa), ib = _mm256_castps_si256(fb);
        const __m256i ua = _mm256_and_si256(ia, mag), ub = _mm256_and_si256(ib, mag);
        const __m256i umx = _mm256_max_epu32(ua, ub);
        nf = _mm256_max_epu32(nf, umx);
        unsigned ulpbits = 0;
        if constexpr (WantUlp) {
            const __m256i oa = _mm256_sign_epi32(ua, ia), ob = _mm256_sign_epi32(ub, ib);
            const __m256i d = _mm256_sub_epi32(oa, ob);
            const __m256i gt = _mm256_cmpgt_epi32(ob, oa);
            const __m256i ud = _mm256_sub_epi32(_mm256_xor_si256(d, gt), gt);
            um = _mm256_max_epu32(um, ud);
            if (check_ulp) {
                const __m256i le = _mm256_cmpeq_epi32(_mm256_max_epu32(ud, lim), lim);
                ulpbits = ~static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(le))) & 0xffu;
            }
        }
        const Widened8 w = widen8(fa, fb, _mm256_castsi256_ps(umx));
        const __m256d d0 = w.d0, d1 = w.d1, m0 = w.m0, m1 = w.m1;
        const __m256d bd0 = _mm256_add_pd(atol, _mm256_mul_pd(rtol, m0));
        const __m256d bd1 = _mm256_add_pd(atol, _mm256_mul_pd(rtol, m1));
        const __m256d o0 = _mm256_cmp_pd(d0, bd0, _CMP_GT_OQ);
        const __m256d o1 = _mm256_cmp_pd(d1, bd1, _CMP_GT_OQ);
        if (want_margin) mg.fold(d0, d1, bd0, bd1);
        const unsigned bits = static_cast<unsigned>(_mm256_movemask_pd(o0)) |
                              (static_cast<unsigned>(_mm256_movemask_pd(o1)) << 4) | ulpbits;
        cnt += __builtin_popcount(bits);
        vmax0 = _mm256_max_pd(d0, vmax0);
        vmax1 = _mm256_max_pd(d1, vmax1);
        const __m256d c0 = _mm256_cmp_pd(d0, _mm256_mul_pd(thr0, m0), _CMP_GT_OQ);
        const __m256d c1 = _mm256_cmp_pd(d1, _mm256_mul_pd(thr1, m1), _CMP_GT_OQ);
        if (force || _mm256_movemask_pd(_mm256_or_pd(c0, c1))) {
            force = false;
            fold_rel(d0, d1, m0, m1, shrink, rel0, rel1, thr0, thr1);
        }
    }
    alignas(32) std::uint32_t nfv[8], umv[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(nfv), nf);
    _mm256_store_si256(reinterpret_cast<__m256i*>(umv), um);
    for (int k = 0; k < 8; ++k) {
        if (nfv[k] >= 0x7f800000u) return false;
        ulpmax = std::max<uint64_t>(ulpmax, umv[k]);
    }
    over = cnt;
    marg_io = mg.result();
    vmax_io = as_vd(_mm256_max_pd(vmax0, vmax1));
    brel_io = as_vd(_mm256_max_pd(rel0, rel1));
    thr_io = as_vd(_mm256_mul_pd(as_pd(brel_io), shrink));
    return true;
}

template <bool WantUlp>
inline bool fast_block_avx2(const double* a, const double* b, size_t len, const Params& p,
                            bool check_ulp, vd& vmax_io, vd& brel_io, vd& thr_io, int64_t& over,
                            uint64_t& ulpmax, bool want_margin, vd& marg_io) {
    MarginLanes mg(marg_io);
    const __m256i magq = _mm256_set1_epi64x(0x7fffffffffffffff);
    const __m256d absd = _mm256_castsi256_pd(magq);
    const __m256d atol = _mm256_set1_pd(p.atol), rtol = _mm256_set1_pd(p.rtol);
    const __m256d zero = _mm256_setzero_pd(), shrink = _mm256_set1_pd(1.0 - 0x1p-50);
    const __m256d tiny = _mm256_set1_pd(0x1p-900);
    const __m256i bias = _mm256_set1_epi64x(static_cast<int64_t>(0x8000000000000000ull));
    // unsigned compares as signed ones on biased values
    const __m256i limb = _mm256_xor_si256(_mm256_set1_epi64x(static_cast<int64_t>(p.ulp)), bias);
    const __m256i zi = _mm256_setzero_si256();
    __m256d vmax0 = as_pd(vmax_io), vmax1 = vmax0, rel0 = as_pd(brel_io), rel1 = rel0;
    __m256d thr0 = as_pd(thr_io), thr1 = thr0;
    __m256d chk0 = zero, chk1 = zero;
    __m256i umb0 = bias, umb1 = bias;  // biased ULP maxima
    bool force = _mm256_movemask_pd(_mm256_cmp_pd(rel0, zero, _CMP_LT_OQ)) != 0;
    int64_t cnt = 0;
    auto ulp_of = [&](__m256d x, __m256d y) {
        const __m256i ix = _mm256_castpd_si256(x), iy = _mm256_castpd_si256(y);
        const __m256i sx = _mm256_cmpgt_epi64(zi, ix), sy = _mm256_cmpgt_epi64(zi, iy);
        const __m256i ux = _mm256_and_si256(ix, magq), uy = _mm256_and_si256(iy, magq);
        const __m256i ox = _mm256_sub_epi64(_mm256_xor_si256(ux, sx), sx);
        const __m256i oy = _mm256_sub_epi64(_mm256_xor_si256(uy, sy), sy);
        const __m256i d = _mm256_sub_epi64(ox, oy);
        const __m256i gt = _mm256_cmpgt_epi64(oy, ox);
        return _mm256_xor_si256(_mm256_sub_epi64(_mm256_xor_si256(d, gt), gt), bias);  // biased
    };
    for (size_t j = 0; j < len; j += 8) {
        // one cache line of each input a step: ask for the lines 2 KiB ahead, as the float32
        // pre-filter does (an address past the end is harmless: a prefetch never faults)
        _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<std::uintptr_t>(a + j) + 2048), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<std::uintptr_t>(b + j) + 2048), _MM_HINT_T0);
        const __m256d a0 = _mm256_loadu_pd(a + j), a1 = _mm256_loadu_pd(a + j + 4);
        const __m256d b0 = _mm256_loadu_pd(b + j), b1 = _mm256_loadu_pd(b + j + 4);
        const __m256d d0 = _mm256_and_pd(_mm256_sub_pd(a0, b0), absd);
        const __m256d d1 = _mm256_and_pd(_mm256_sub_pd(a1, b1), absd);
        chk0 = _mm256_add_pd(chk0, _mm256_mul_pd(d0, zero));
        chk1 = _mm256_add_pd(chk1, _mm256_mul_pd(d1, zero));
        const __m256d m0 = _mm256_max_pd(_mm256_and_pd(a0, absd), _mm256_and_pd(b0, absd));
        const __m256d m1 = _mm256_max_pd(_mm256_and_pd(a1, absd), _mm256_and_pd(b1, absd));
        const __m256d bd0 = _mm256_add_pd(atol, _mm256_mul_pd(rtol, m0));
        const __m256d bd1 = _mm256_add_pd(atol, _mm256_mul_pd(rtol, m1));
        const __m256d o0 = _mm256_cmp_pd(d0, bd0, _CMP_GT_OQ);
        const __m256d o1 = _mm256_cmp_pd(d1, bd1, _CMP_GT_OQ);
        if (want_margin) mg.fold(d0, d1, bd0, bd1);
        unsigned bits = static_cast<unsigned>(_mm256_movemask_pd(o0)) |
                        (static_cast<unsigned>(_mm256_movemask_pd(o1)) << 4);
        if constexpr (WantUlp) {
            const __m256i u0 = ulp_of(a0, b0), u1 = ulp_of(a1, b1);
            umb0 = _mm256_blendv_epi8(umb0, u0, _mm256_cmpgt_epi64(u0, umb0));
            umb1 = _mm256_blendv_epi8(umb1, u1, _mm256_cmpgt_epi64(u1, umb1));
            if (check_ulp) {
                bits |= static_cast<unsigned>(_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(u0, limb)))) |
                        (static_cast<unsigned>(_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(u1, limb)))) << 4);
            }
        }
        cnt += __builtin_popcount(bits);
        vmax0 = _mm256_max_pd(d0, vmax0);
        vmax1 = _mm256_max_pd(d1, vmax1);
        const __m256d c0 = _mm256_or_pd(_mm256_cmp_pd(d0, _mm256_mul_pd(thr0, m0), _CMP_GT_OQ),
                                        _mm256_cmp_pd(m0, tiny, _CMP_LT_OQ));
        const __m256d c1 = _mm256_or_pd(_mm256_cmp_pd(d1, _mm256_mul_pd(thr1, m1), _CMP_GT_OQ),
                                        _mm256_cmp_pd(m1, tiny, _CMP_LT_OQ));
        if (force || _mm256_movemask_pd(_mm256_or_pd(c0, c1))) {
            force = false;
            fold_rel(d0, d1, m0, m1, shrink, rel0, rel1, thr0, thr1);
        }
    }
    alignas(32) double cv[4];
    _mm256_store_pd(cv, _mm256_add_pd(chk0, chk1));
    for (double c : cv)
        if (c != 0.0) return false;
    alignas(32) std::uint64_t uv0[4], uv1[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(uv0), umb0);
    _mm256_store_si256(reinterpret_cast<__m256i*>(uv1), umb1);
    for (int k = 0; k < 4; ++k)
        // unbias each lane before the unsigned maximum (the biased images order as signed)
        ulpmax = std::max(ulpmax, std::max<uint64_t>(uv0[k] ^ 0x8000000000000000ull,
                                                     uv1[k] ^ 0x8000000000000000ull));
    over = cnt;
    marg_io = mg.result();
    vmax_io = as_vd(_mm256_max_pd(vmax0, vmax1));
    brel_io = as_vd(_mm256_max_pd(rel0, rel1));
    thr_io = as_vd(_mm256_mul_pd(as_pd(brel_io), shrink));
    return true;
}

// ---- float32 pre-filter: the whole block in float32 lanes, exact figures -----------------
// The float32 fast block above converts every element to float64 (the contract computes
// |a-b| and the bound test in float64). This pre-filter decides each lane in float32 with
// proven error margins and gives up (returns false, the caller then refolds the block on
// the exact float64 path) when a lane lies too near its bound, when the block holds a value
// of magnitude >= 2^100 (this also catches NaN, inf and a float32 difference that
// overflows), or when the parameters are outside the range the margins are proven for.
// Figures it returns are bit-identical to the float64 path's.
//
// Notation: x = |a-b| exactly (reals), d32 = fl32(x) (float32 subtraction, correctly
// rounded), d64 = fl64(x) (the contract's value), mx = max(|a|,|b|) (a float32, exact in
// float64), B = atol + rtol*mx in reals with the float64 atol/rtol, B64 = fl64(atol +
// fl64(rtol*mx)) (the contract's bound).
//  (1) d32(1-2^-23) <= x <= d32(1+2^-23): rounding to nearest moves a normal value by at
//      most half an ulp, and where d32 < 2^-126 the subtraction of two float32 is exact.
//      d32 == 0 <=> x == 0 <=> d64 == 0. Rounding is monotone: x <= y => fl(x) <= fl(y).
//  (2) Parameters: atol and rtol are each 0 or in [2^-100, 2^100] (rtol <= 2^20); then
//      B64 = B(1+e), |e| <= 2^-52 (two float64 roundings of non-negative terms, no
//      underflow since rtol*mx >= 2^-249 when non-zero). A = fl32(atol), R = fl32(rtol)
//      are within 2^-24 relative (normal float32), so R*mx + A = B(1+e'), |e'| <= 2^-24,
//      and fma32(R, mx, A) is within 2^-23 B + 2^-150 of B (the absolute term for a
//      subnormal result); (3) applies this to the constants with the margins folded in.
//      With |values| < 2^100 nothing overflows.
//  (3) The margins are folded into the constants: lo = max(fma32(Rlo, mx, Alo), 0) and
//      hi = fma32(Rhi, mx, Ahi), Rlo = fl32(rtol(1-2^-18)), Alo = fl32(atol(1-2^-18) -
//      2^-120), Rhi = fl32(rtol(1+2^-18)), Ahi = fl32(atol(1+2^-18) + 2^-120) (each
//      rounding adds <= 2^-24 relative, or 2^-150 absolute below 2^-126). As in (2):
//      lo <= B(1-2^-19) when lo > 0, and hi >= B(1+2^-19) + 2^-121.
//      Certainly inside: d32 <= lo. Either d32 == 0 (inside, d64 == 0 <= B64), or
//      x <= lo(1+2^-23) < B(1-2^-52) <= B64, so d64 = fl64(x) <= B64 by monotonicity.
//      Certainly outside: d32 > hi >= 2^-121 (normal), x >= d32(1-2^-23) > B(1+2^-20),
//      d64 >= x(1-2^-53) > B(1+2^-52) >= B64. Any lane neither => the block is refolded.
//      With atol == rtol == 0 the test is exact: lo = hi = 0 and d32 > 0 <=> d64 > 0.
//  (4) max_rel: a lane whose running float64 maximum is r >= 2^-100 gets the float32
//      threshold t = fl32(fl64(r(1-2^-20))) <= r(1-2^-21) (t = 0 when r < 2^-100). The
//      lane is skipped (its relative difference cannot exceed r) when d32 == 0, or when
//      d32 < p = fl32(t*mx): p is the nearest float32 to t*mx, so a float32 strictly
//      below it is below t*mx in reals (also when p is subnormal or inf). Then
//      d64 <= x(1+2^-53) <= d32(1+2^-23)(1+2^-53) < r*mx, so fl64(d64/mx) <= r. Other
//      lanes of the 8 get their exact float64 division, as on the float64 path.
//  (5) max_abs: d32 is monotone in x, so the lanes with the largest d32 of the block hold
//      its largest x and largest d64. A block whose largest d32 is below Rf (the largest
//      float32 <= the running float64 maximum) cannot raise it: d32 < Rf => x <= Rf (x
//      rounds to d32) => d64 <= Rf. Otherwise the lanes with d32 equal to the block's
//      largest are rescanned in float64 for the exact maximum (deferred: PreMax). Two
//      lanes with different d32 can still share one d64 (x on both sides of a float32
//      midpoint), so the first index of a new best_abs is searched over the whole run.
//  The test is `d32 >= max(fl32(t*mx), 2^-149)` for (4): false exactly when d32 == 0 or
//  d32 < fl32(t*mx).
//  (6) max_ulp and the ULP bound are integer arithmetic on the float32 bit patterns.
struct PreF32 {
    bool on = false;
    float Alo = 0.0f, Rlo = 0.0f, Ahi = 0.0f, Rhi = 0.0f;
};
inline PreF32 pre_f32_params(const Params& p) {
    PreF32 c;
    auto ok = [](double v, double hi) { return v == 0.0 || (v >= 0x1p-100 && v <= hi); };
    if (!ok(p.atol, 0x1p100) || !ok(p.rtol, 0x1p20)) return c;
    c.on = true;
    if (p.atol == 0.0 && p.rtol == 0.0) return c;  // lo = hi = 0: the exact test
    const double eta = 0x1p-120;
    c.Alo = static_cast<float>(p.atol * (1.0 - 0x1p-18) - eta);
    c.Rlo = static_cast<float>(p.rtol * (1.0 - 0x1p-18));
    c.Ahi = static_cast<float>(p.atol * (1.0 + 0x1p-18) + eta);
    c.Rhi = static_cast<float>(p.rtol * (1.0 + 0x1p-18));
    return c;
}

inline __m128 rel_threshold32(__m256d r) {  // (4): t = fl32(r(1-2^-20)), 0 below 2^-100
    const __m256d t = _mm256_mul_pd(r, _mm256_set1_pd(1.0 - 0x1p-20));
    return _mm256_cvtpd_ps(_mm256_and_pd(t, _mm256_cmp_pd(r, _mm256_set1_pd(0x1p-100), _CMP_GE_OQ)));
}

template <bool WantUlp>
inline bool pre_block_f32(const float* a, const float* b, size_t len, const Params& p,
                          const PreF32& c, bool check_ulp, vd& brel_io, int64_t& over,
                          uint64_t& ulpmax, float& m32, bool want_margin, vd& marg_io) {
    const __m256i mag = _mm256_set1_epi32(0x7fffffff);
    const __m256 absf = _mm256_castsi256_ps(mag);
    const __m256 Alo = _mm256_set1_ps(c.Alo), Rlo = _mm256_set1_ps(c.Rlo);
    const __m256 Ahi = _mm256_set1_ps(c.Ahi), Rhi = _mm256_set1_ps(c.Rhi);
    const __m256 zf = _mm256_setzero_ps(), minsub = _mm256_set1_ps(0x1p-149f);
    const __m256d zero = _mm256_setzero_pd();
    const __m256i lim = _mm256_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(
        p.ulp > 0xffffffffu ? 0xffffffffu : p.ulp)));
    const __m256i ones = _mm256_set1_epi32(-1);
    __m256d rel0 = as_pd(brel_io), rel1 = rel0;
    __m256 t32 = _mm256_set_m128(rel_threshold32(rel1), rel_threshold32(rel0));
    __m256 vmax = _mm256_set1_ps(-1.0f);
    __m256 unc = _mm256_setzero_ps();
    __m256i nin = _mm256_setzero_si256();  // per-lane inside counts (<= 128 a lane)
    __m256i nf = _mm256_setzero_si256(), um = _mm256_setzero_si256();
    // (7) margin (rtol > 0): a lane's d / bound can exceed the running maximum m only when
    // d32 >= max(fl32(tm*lo), 2^-149), tm = fl32(m(1-2^-20)) (0 below 2^-100) as in (4) with
    // lo (3) for mx: otherwise x < tm*lo <= m(1-2^-21)*B(1-2^-19), so fl64(d64/B64) <= m
    // (B64 within 2^-52 of B). m <= 2/rtol <= 2^101 (d <= 2mx, B >= rtol*mx), so tm is
    // finite. Candidate lanes get the exact float64 quotient, as on the float64 path.
    const __m256d atol64 = _mm256_set1_pd(p.atol), rtol64 = _mm256_set1_pd(p.rtol);
    __m256d mg0 = as_pd(marg_io), mg1 = mg0;
    __m256 tm32 = _mm256_set_m128(rel_threshold32(mg1), rel_threshold32(mg0));
    auto margin_exact = [&](size_t j) {
        const __m256 fa = _mm256_loadu_ps(a + j), fb = _mm256_loadu_ps(b + j);
        const __m256 mx = _mm256_castsi256_ps(_mm256_max_epu32(
            _mm256_and_si256(_mm256_castps_si256(fa), mag), _mm256_and_si256(_mm256_castps_si256(fb), mag)));
        const Widened8 w = widen8(fa, fb, mx);
        mg0 = _mm256_max_pd(MarginLanes::quot(w.d0, _mm256_add_pd(atol64, _mm256_mul_pd(rtol64, w.m0))), mg0);
        mg1 = _mm256_max_pd(MarginLanes::quot(w.d1, _mm256_add_pd(atol64, _mm256_mul_pd(rtol64, w.m1))), mg1);
        tm32 = _mm256_set_m128(rel_threshold32(mg1), rel_threshold32(mg0));
    };
    // The exact float64 relative differences of the 8 pairs at j, folded into the maxima.
    auto rel_exact = [&](size_t j) {
        const __m256 fa = _mm256_loadu_ps(a + j), fb = _mm256_loadu_ps(b + j);
        const __m256 mx = _mm256_castsi256_ps(_mm256_max_epu32(
            _mm256_and_si256(_mm256_castps_si256(fa), mag), _mm256_and_si256(_mm256_castps_si256(fb), mag)));
        const Widened8 w = widen8(fa, fb, mx);
        const __m256d d0 = w.d0, d1 = w.d1, m0 = w.m0, m1 = w.m1;
        const __m256d r0 = _mm256_and_pd(_mm256_cmp_pd(m0, zero, _CMP_GT_OQ), _mm256_div_pd(d0, m0));
        const __m256d r1 = _mm256_and_pd(_mm256_cmp_pd(m1, zero, _CMP_GT_OQ), _mm256_div_pd(d1, m1));
        rel0 = _mm256_max_pd(r0, rel0);
        rel1 = _mm256_max_pd(r1, rel1);
        t32 = _mm256_set_m128(rel_threshold32(rel1), rel_threshold32(rel0));
    };
    // 8 pairs at j; returns the lanes that may raise max_rel (4)
    auto step = [&](size_t j, __m256& mc) {
        const __m256 fa = _mm256_loadu_ps(a + j), fb = _mm256_loadu_ps(b + j);
        const __m256i ia = _mm256_castps_si256(fa), ib = _mm256_castps_si256(fb);
        const __m256i ua = _mm256_and_si256(ia, mag), ub = _mm256_and_si256(ib, mag);
        const __m256i umx = _mm256_max_epu32(ua, ub);
        nf = _mm256_max_epu32(nf, umx);
        __m256i ulp_in = ones;
        if constexpr (WantUlp) {  // ordered images differ by < 2^32: max - min in 32 bits
            const __m256i oa = _mm256_sign_epi32(ua, ia), ob = _mm256_sign_epi32(ub, ib);
            const __m256i ud = _mm256_sub_epi32(_mm256_max_epi32(oa, ob), _mm256_min_epi32(oa, ob));
            um = _mm256_max_epu32(um, ud);
            if (check_ulp) ulp_in = _mm256_cmpeq_epi32(_mm256_max_epu32(ud, lim), lim);
        }
        const __m256 mx = _mm256_castsi256_ps(umx);
        const __m256 d = _mm256_and_ps(_mm256_sub_ps(fa, fb), absf);
        vmax = _mm256_max_ps(vmax, d);
        // (3): inside (bound and ULP) counted per lane; lo < d <= hi: not certain
        const __m256 lo = _mm256_max_ps(_mm256_fmadd_ps(Rlo, mx, Alo), zf);
        const __m256 hi = _mm256_fmadd_ps(Rhi, mx, Ahi);
        const __m256 in_hi = _mm256_cmp_ps(d, hi, _CMP_LE_OQ);
        unc = _mm256_or_ps(unc, _mm256_andnot_ps(_mm256_cmp_ps(d, lo, _CMP_LE_OQ), in_hi));
        nin = _mm256_sub_epi32(nin, _mm256_and_si256(_mm256_castps_si256(in_hi), ulp_in));
        if (want_margin) mc = _mm256_cmp_ps(d, _mm256_max_ps(_mm256_mul_ps(tm32, lo), minsub), _CMP_GE_OQ);
        return _mm256_cmp_ps(d, _mm256_max_ps(_mm256_mul_ps(t32, mx), minsub), _CMP_GE_OQ);
    };
    // a lane that compared nothing yet (rel < 0) must take its first value whatever it is
    if (_mm256_movemask_pd(_mm256_cmp_pd(rel0, zero, _CMP_LT_OQ)) != 0) rel_exact(0);
    size_t j = 0;
    for (; j + 16 <= len; j += 16) {
        // one cache line of each input a step: ask for the lines 2 KiB ahead (the hardware
        // prefetcher alone leaves a single thread short of the memory bandwidth here)
        // (an address past the end is harmless: a prefetch never faults)
        _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<std::uintptr_t>(a + j) + 2048), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<std::uintptr_t>(b + j) + 2048), _MM_HINT_T0);
        __m256 mc0 = zf, mc1 = zf;
        const __m256 c0 = step(j, mc0), c1 = step(j + 8, mc1);
        if (_mm256_movemask_ps(_mm256_or_ps(c0, c1))) {
            if (_mm256_movemask_ps(c0)) rel_exact(j);
            if (_mm256_movemask_ps(c1)) rel_exact(j + 8);  // c1 used the older, lower t32
        }
        if (want_margin && _mm256_movemask_ps(_mm256_or_ps(mc0, mc1))) {
            if (_mm256_movemask_ps(mc0)) margin_exact(j);
            if (_mm256_movemask_ps(mc1)) margin_exact(j + 8);  // (an older, lower tm32)
        }
    }
    if (j < len) {
        __m256 mc = zf;
        if (_mm256_movemask_ps(step(j, mc))) rel_exact(j);
        if (want_margin && _mm256_movemask_ps(mc)) margin_exact(j);
    }
    if (_mm256_movemask_ps(unc) != 0) return false;
    alignas(32) std::uint32_t nfv[8], umv[8], ninv[8];
    alignas(32) float mv[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(ninv), nin);
    _mm256_store_si256(reinterpret_cast<__m256i*>(nfv), nf);
    _mm256_store_si256(reinterpret_cast<__m256i*>(umv), um);
    _mm256_store_ps(mv, vmax);
    int64_t cnt = static_cast<int64_t>(len);
    float m = -1.0f;
    uint64_t u = ulpmax;
    for (int k = 0; k < 8; ++k) {
        if (nfv[k] >= 0x71800000u) return false;  // |value| >= 2^100, inf or NaN
        cnt -= ninv[k];
        u = std::max<uint64_t>(u, umv[k]);
        m = std::max(m, mv[k]);
    }
    ulpmax = u;
    over = cnt;
    m32 = m;
    marg_io = as_vd(_mm256_max_pd(mg0, mg1));
    brel_io = as_vd(_mm256_max_pd(rel0, rel1));
    return true;
}

// (5): the exact float64 maximum of |a-b| over the lanes whose float32 |a-b| equals m32.
inline double pre_block_max64(const float* a, const float* b, size_t len, float m32) {
    const __m256 absf = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 vm = _mm256_set1_ps(m32);
    double m = -1.0;
    for (size_t j = 0; j < len; j += 8) {
        const __m256 d = _mm256_and_ps(_mm256_sub_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j)), absf);
        unsigned bits = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(d, vm, _CMP_EQ_OQ)));
        while (bits) {
            const size_t k = j + static_cast<size_t>(__builtin_ctz(bits));
            bits &= bits - 1;
            m = std::max(m, abs_diff(static_cast<double>(a[k]), static_cast<double>(b[k])));
        }
    }
    return m;
}

// (5), deferred: the blocks of a run whose largest float32 |a-b| equals the run's largest
// so far (r32) are remembered, and rescanned in float64 only when the run ends, when the
// list is full, or before a block on the float64 path (which then finds exact maxima
// before it, as it expects). A block whose largest is above r32 empties the list.
struct PreMax {
    float r32;
    int nc = 0;
    size_t at[8];
    size_t len[8];
    explicit PreMax(double running) {  // the largest float32 <= the running maximum
        r32 = running < 0.0 ? -1.0f : static_cast<float>(running);
        if (static_cast<double>(r32) > running)
            r32 = std::nextafter(r32, -std::numeric_limits<float>::infinity());
    }
    // Folds the remembered blocks into vmax; a new best_abs gets the first index of its
    // value among a[0..end) (a lane of another block may hold the same float64 value).
    void flush(const float* a, const float* b, vd& vmax, RunStats& rs, int64_t base, size_t end) {
        if (nc == 0) return;
        double m64 = -1.0;
        for (int c = 0; c < nc; ++c) m64 = std::max(m64, pre_block_max64(a + at[c], b + at[c], len[c], r32));
        nc = 0;
        vmax[0] = std::max(vmax[0], m64);
        const double m = hmax(vmax, -1.0);
        if (m > rs.best_abs) {
            for (size_t k = 0; k < end; ++k) {
                if (abs_diff(static_cast<double>(a[k]), static_cast<double>(b[k])) == m) {
                    rs.best_abs = m;
                    rs.arg_abs = base + static_cast<int64_t>(k);
                    break;
                }
            }
        }
    }
    void add(const float* a, const float* b, vd& vmax, RunStats& rs, int64_t base, size_t i,
             size_t n, float m32) {
        if (m32 > r32) {
            r32 = m32;
            nc = 0;
        }
        if (m32 < r32) return;  // cannot raise the maximum
        if (nc == 8) flush(a, b, vmax, rs, base, i);
        at[nc] = i;
        len[nc] = n;
        ++nc;
    }
};
#else
#define TOLERANCE_AVX2_FAST 0
#endif

// Per run: the lanes keep running maxima across blocks (seeded with rs), a block is first
// folded on the fast path that assumes finite values (no NaN/inf rules, a division only
// where a lane's max_rel may rise), and refolded on the full path when it held a NaN or an
// infinity (or an overflowing difference). A block that raised a maximum is rescanned,
// scalar, for the first index of the new value.
template <class T, bool WantUlp>
void run_float_vec(const void* av, const void* bv, size_t n, const Params& p, RunStats& rs,
                   int64_t base) {
    if (n < static_cast<size_t>(2 * L)) {  // too short for a vector: skip the set-up
        run_float_scalar<T, WantUlp>(av, bv, n, p, rs, base);
        return;
    }
    using V = typename VecOf<T>::V;
    using vui = typename VecOf<T>::vui;
    using UI = typename VecOf<T>::UI;
    constexpr size_t BLOCK = 1024;
    const T* a = static_cast<const T*>(av);
    const T* b = static_cast<const T*>(bv);
    const vd vinf = splat<vd>(std::numeric_limits<double>::infinity());
    const vd vzero = splat<vd>(0.0), vneg = splat<vd>(-1.0);
    const vd vatol = splat<vd>(p.atol), vrtol = splat<vd>(p.rtol);
    const vd vtiny = splat<vd>(0x1p-1000);
    const vu absmask = splat<vu>(uint64_t{0x7fffffffffffffff});
    const bool check_ulp = WantUlp && p.ulp != std::numeric_limits<uint64_t>::max();
    const UI ulp_lim = p.ulp > std::numeric_limits<UI>::max() ? std::numeric_limits<UI>::max()
                                                              : static_cast<UI>(p.ulp);
    const vui vulp = splat<vui>(ulp_lim);
    const bool ulp_all = p.ulp >= std::numeric_limits<UI>::max();  // every distance fits
    const double shrink = 1.0 - 0x1p-50;
    // rtol > 0: the margin needs each element's d / bound (margin_of); a lane divides only
    // when its d exceeds mthr*bound, mthr = (running margin)(1 - 2^-50): below that, d/bound
    // rounds to at most the running margin (the product is checked against 2^-1000 so that
    // a subnormal product's absolute rounding cannot hide a greater value, and a running
    // margin under 2^-900 gives mthr = 0: every lane with d > 0 divides).
    const bool elem_margin = p.rtol > 0.0;
    const vd vmtiny = splat<vd>(0x1p-900);
    auto mthr_of = [&](vd m) { return m >= vmtiny ? m * shrink : vzero; };
#if TOLERANCE_AVX2_FAST
    [[maybe_unused]] const PreF32 pre = std::is_same_v<T, float> ? pre_f32_params(p) : PreF32{};
#endif

    vi c_over = splat<vi>(int64_t{0}), c_nm = c_over, c_nb = c_over, c_inf = c_over;
    vui v_ulp = splat<vui>(UI{0});
    vd vmax = splat<vd>(rs.run_max);
#if TOLERANCE_AVX2_FAST
    [[maybe_unused]] PreMax premax(rs.run_max);
#endif
    vd brel = splat<vd>(rs.best_rel);
    vd thr = brel * shrink;
    vd vmarg = splat<vd>(rs.margin);
    vd mthr = mthr_of(vmarg);
    size_t i = 0;
    while (n - i >= static_cast<size_t>(2 * L)) {
        const size_t len = std::min(BLOCK, (n - i) / (2 * L) * (2 * L));
        // ---- fast path: finite values --------------------------------------------------
        vi f_over = c_over;
        vui f_ulp = v_ulp;
        vd f_max = vmax, f_rel = brel, f_thr = thr, f_marg = vmarg, f_mthr = mthr;
        bool finite = true;
#if TOLERANCE_AVX2_FAST
        bool pre_done = false;
        if constexpr (std::is_same_v<T, float>) {
            if (pre.on) {
                int64_t cnt = 0;
                uint64_t um = 0;
                float m32 = 0.0f;
                vd p_rel = brel;
                vd p_marg = vmarg;
                if (pre_block_f32<WantUlp>(a + i, b + i, len, p, pre, check_ulp && !ulp_all, p_rel,
                                           cnt, um, m32, elem_margin, p_marg)) {
                    f_marg = p_marg;
                    f_mthr = mthr_of(p_marg);
                    pre_done = true;
                    f_over[0] += cnt;
                    f_ulp[0] = std::max(f_ulp[0], static_cast<UI>(um));
                    f_rel = p_rel;
                    f_thr = p_rel * shrink;
                    premax.add(a, b, f_max, rs, base, i, len, m32);
                } else {
                    premax.flush(a, b, vmax, rs, base, i);
                    f_max = vmax;
                }
            }
        }
        if (pre_done) {
        } else if constexpr (true) {
            int64_t cnt = 0;
            uint64_t um = 0;
            finite = fast_block_avx2<WantUlp>(a + i, b + i, len, p, check_ulp && !ulp_all, f_max,
                                              f_rel, f_thr, cnt, um, elem_margin, f_marg);
            f_mthr = mthr_of(f_marg);
            f_over[0] += cnt;
            f_ulp[0] = std::max(f_ulp[0], static_cast<UI>(um));
        } else
#endif
        {
            vd chk = vzero;
            for (size_t j = i; j < i + len; j += L) {
                V ta, tb;
                std::memcpy(&ta, a + j, sizeof ta);
                std::memcpy(&tb, b + j, sizeof tb);
                const vd da = VecOf<T>::to_double(ta), db = VecOf<T>::to_double(tb);
                const vd diff = da - db;
                const vd ad = (vd)((vu)diff & absmask);
                chk += ad * vzero;  // NaN from here on if a difference is not finite
                const vd xa = (vd)((vu)da & absmask), xb = (vd)((vu)db & absmask);
                const vd mx = xa > xb ? xa : xb;
                const vd bnd = vatol + vrtol * mx;
                vi over = ad > bnd;
                if constexpr (WantUlp) {
                    const vui ud = ulp_lanes<T>(ta, tb);
                    if (check_ulp && !ulp_all) over |= VecOf<T>::widen((typename VecOf<T>::vsi)(ud > vulp));
                    f_ulp = ud > f_ulp ? ud : f_ulp;
                }
                f_over -= over;
                if (elem_margin) {
                    const vd mlim = f_mthr * bnd;
                    if (any_true((ad > vzero) & ((ad > mlim) | (mlim < vtiny)))) {
                        vd q = ad / bnd;
                        q = q == q ? q : vzero;
                        f_marg = q > f_marg ? q : f_marg;
                        f_mthr = mthr_of(f_marg);
                    }
                }
                f_max = ad > f_max ? ad : f_max;
                const vd lim = f_thr * mx;
                const vi cand = (ad > lim) | (lim < vtiny);
                if (any_true(cand)) {
                    const vd rel = mx > vzero ? ad / mx : vzero;
                    f_rel = rel > f_rel ? rel : f_rel;
                    f_thr = f_rel * shrink;
                }
            }
            for (int k = 0; k < L; ++k) finite = finite && chk[k] == 0.0;
        }
        if (finite) {
            c_over = f_over;
            v_ulp = f_ulp;
            vmax = f_max;
            brel = f_rel;
            thr = f_thr;
            vmarg = f_marg;
            mthr = f_mthr;
        } else {
            // ---- full path: every rule ---------------------------------------------------
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
                const vd bnd = vatol + vrtol * mx;
                vi inside = (ad <= bnd) & ~infm;
                if (elem_margin) {
                    vd q = ad / bnd;
                    q = q == q ? q : vzero;
                    q = (anyn | infm) ? vzero : q;  // (counted as mismatches: margin inf)
                    vmarg = q > vmarg ? q : vmarg;
                }
                if constexpr (WantUlp) {
                    vui ud = ulp_lanes<T>(ta, tb);
                    const vui nanmask = (vui)__builtin_convertvector(anyn, typename VecOf<T>::vsi);
                    ud = ud & ~nanmask;
                    if (check_ulp && !ulp_all)
                        inside &= VecOf<T>::widen((typename VecOf<T>::vsi)(ud <= vulp));
                    v_ulp = ud > v_ulp ? ud : v_ulp;
                }
                inside |= eq | both;
                c_over -= ~inside;
                c_nm -= anyn & ~both;
                c_nb -= both;
                c_inf -= infm;
                vmax = ad > vmax ? ad : vmax;
                vd rel = mx > vzero ? ad / mx : vzero;
                rel = infm ? vinf : rel;
                rel = anyn ? vneg : rel;
                brel = rel > brel ? rel : brel;
            }
            thr = brel * shrink;
            mthr = mthr_of(vmarg);
        }
        const double m = hmax(vmax, -1.0);
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
#if TOLERANCE_AVX2_FAST
    if constexpr (std::is_same_v<T, float>) premax.flush(a, b, vmax, rs, base, i);
#endif
    rs.run_max = std::max(rs.run_max, hmax(vmax, -1.0));
    rs.count_over += hsum(c_over);
    rs.nan_mismatch += hsum(c_nm);
    rs.nan_both += hsum(c_nb);
    rs.inf_mismatch += hsum(c_inf);
    rs.margin = std::max(rs.margin, hmax(vmarg, 0.0));
    if (WantUlp) rs.max_ulp = std::max<uint64_t>(rs.max_ulp, hmax(v_ulp, UI{0}));
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

}  // namespace
}  // namespace TOLERANCE_ISA_NS
}  // namespace tolerance

#include "kernels_dtypes.hpp"

namespace tolerance {
namespace TOLERANCE_ISA_NS {
namespace {

template <bool Vec>
KernelTable make_table(const char* name) {
    KernelTable t{};
    t.name = name;
    for (int k = 0; k < K_COUNT; ++k) t.entry[k] = "scalar";
    t.fn[K_F16][0] = run_half<false>;
    t.fn[K_F16][1] = run_half<true>;
    if constexpr (Vec) {
        t.fn[K_F32][0] = run_float_vec<float, false>;
        t.fn[K_F32][1] = run_float_vec<float, true>;
        t.fn[K_F64][0] = run_float_vec<double, false>;
        t.fn[K_F64][1] = run_float_vec<double, true>;
        t.entry[K_F32] = t.entry[K_F64] = TOLERANCE_AVX2_FAST ? "vector+blocks" : "vector";
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
    dtypes::set_entries<Vec>(t);  // kernels_dtypes.hpp: inner size 1, float16, int64/uint64
    return t;
}

}  // namespace
}  // namespace TOLERANCE_ISA_NS
}  // namespace tolerance
