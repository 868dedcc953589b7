// The kernels for the dtypes and shapes beyond the float32/float64 main loop, included by
// kernels_isa.hpp (so compiled once per ISA, in its namespace, with its lane count L):
//  - one element per step (inner size 1): the series arrays filled in vector blocks;
//  - float16 through the float32 vector loop (lanes converted exactly, the ULP figures in
//    float16 units from the 16-bit images);
//  - int64 / uint64 in vector blocks (exact: see run_int64_vec).
// Written against the lane layer of kernels_isa.hpp only (GCC/Clang vector extensions: vd,
// vi, vu, wu, wi, wf, splat, hmax, hsum, any_true, count_in): the same algorithm on every
// ISA, at its lane count. Every figure equals the scalar
// rules' (kernels.hpp) bit for bit.
#pragma once

#include "kernels.hpp"

namespace tolerance {
namespace TOLERANCE_ISA_NS {
namespace {
namespace dtypes {

// ---- exact lane conversions -----------------------------------------------------------
// u64 lanes -> float64, rounded to nearest like static_cast<double>: hi*2^32 and lo are
// exact as doubles, their sum is rounded once.
inline vd u64_to_double(vu x) {
    const vu lo = (x & splat<vu>(uint64_t{0xffffffff})) | splat<vu>(uint64_t{0x4330000000000000});
    const vu hi = (x >> 32) | splat<vu>(uint64_t{0x4530000000000000});
    return ((vd)hi - splat<vd>(0x1p84 + 0x1p52)) + (vd)lo;
}

// ---- one element per step -------------------------------------------------------------
// The reference for every compute type: each element through the contiguous kernel Fn as a
// run of one, then its step figures (the same as the per-step driver, without the driver).
template <class T, RunFn Fn>
void series_scalar(const void* av, const void* bv, size_t n, const Params& p, SeriesOut& out,
                   RunStats& rs, int64_t base) {
    const T* a = static_cast<const T*>(av);
    const T* b = static_cast<const T*>(bv);
    for (size_t k = 0; k < n; ++k) {
        RunStats e;
        const int64_t idx = base + static_cast<int64_t>(k);
        Fn(a + k, b + k, 1, p, e, idx);
        out.series[k] = e.run_max;
        out.over[k] = e.count_over;
        const double m = step_margin(e, p);
        out.margin[k] = m;
        if (m > out.margin_max) out.margin_max = m;
        if (e.arg_abs >= 0 && (rs.best_abs < 0.0 || e.best_abs > rs.best_abs || e.best_mag > rs.best_mag)) {
            rs.best_abs = e.best_abs;
            rs.best_mag = e.best_mag;
            rs.arg_abs = idx;
        }
        if (e.arg_rel >= 0 && e.best_rel > rs.best_rel) {
            rs.best_rel = e.best_rel;
            rs.arg_rel = idx;
        }
        if (e.run_max > rs.run_max) rs.run_max = e.run_max;
        if (e.max_ulp > rs.max_ulp) rs.max_ulp = e.max_ulp;
        rs.count_over += e.count_over;
        rs.nan_mismatch += e.nan_mismatch;
        rs.nan_both += e.nan_both;
        rs.inf_mismatch += e.inf_mismatch;
    }
}

// float32 / float64, L elements at a time through every rule (float_element and
// step_margin lane by lane); the first index of a new maximum is found by rescanning the
// block's series (|a-b|) or, for max_rel, its pairs.
template <class T, bool WantUlp>
void series_float_vec(const void* av, const void* bv, size_t n, const Params& p, SeriesOut& out,
                      RunStats& rs, int64_t base) {
    using V = typename VecOf<T>::V;
    constexpr size_t BLOCK = 512;
    const T* a = static_cast<const T*>(av);
    const T* b = static_cast<const T*>(bv);
    const double inf = std::numeric_limits<double>::infinity();
    const vd vinf = splat<vd>(inf), vzero = splat<vd>(0.0), vneg = splat<vd>(-1.0);
    const vd vatol = splat<vd>(p.atol), vrtol = splat<vd>(p.rtol);
    const bool check_ulp = WantUlp && p.ulp != std::numeric_limits<uint64_t>::max();
    const vu vulp = splat<vu>(p.ulp);
    const bool elem_margin = p.rtol > 0.0;
    const bool ulp_term = WantUlp && p.ulp_margin >= 0.0;
    const vd vulpm = splat<vd>(p.ulp_margin);
    const vd vtiny = splat<vd>(0x1p-1000);
    const double shrink = 1.0 - 0x1p-50;
    size_t i = 0;
    while (n - i >= static_cast<size_t>(L)) {
        const size_t len = std::min(BLOCK, (n - i) / L * L);
        vi c_over = splat<vi>(int64_t{0}), c_nm = c_over, c_nb = c_over, c_inf = c_over;
        vu v_ulp = splat<vu>(uint64_t{0});
        vd vmax = splat<vd>(rs.best_abs), brel = splat<vd>(rs.best_rel), vrun = splat<vd>(rs.run_max);
        vd vmarg = splat<vd>(out.margin_max);
        vd thr = brel * shrink;
        for (size_t j = i; j < i + len; j += L) {
            V ta, tb;
            std::memcpy(&ta, a + j, sizeof ta);
            std::memcpy(&tb, b + j, sizeof tb);
            const FullLanes e = full_lanes<T>(ta, tb, vatol, vrtol);
            const vd ad = e.ad, mx = e.mx, bnd = e.bnd;
            const vi eq = e.eq, anyn = e.anyn, both = e.both, infm = e.infm, nm = anyn & ~both;
            vi inside = e.inside;
            vu ud = splat<vu>(uint64_t{0});
            if constexpr (WantUlp) {
                ud = __builtin_convertvector(ulp_lanes<T>(ta, tb), vu) & ~(vu)anyn;
                if (check_ulp) inside &= (vi)(ud <= vulp);
                v_ulp = ud > v_ulp ? ud : v_ulp;
            }
            inside |= eq | both;
            const vd s = anyn ? vneg : ad;
            vd m;
            if (elem_margin) {
                m = ad / bnd;
                m = m == m ? m : vzero;
            } else {
                // step_margin: max(0, fl(d / atol)), so inf / inf (NaN) counts 0
                const vd q = ad / vatol;
                m = q > vzero ? q : vzero;
            }
            if (ulp_term) {
                const vd u = u64_to_double(ud) / vulpm;
                m = (ud > 0) & (u > m) ? u : m;
            }
            m = (nm | infm) ? vinf : m;
            // max_rel: a lane divides only where it may beat the running maximum (the
            // threshold rule of run_float_vec: thr = max_rel (1 - 2^-50))
            const vd lim = thr * mx;
            if (any_true(((ad > lim) | (lim < vtiny) | infm) & ~anyn)) {
                vd rel = mx > vzero ? ad / mx : vzero;
                rel = infm ? vinf : rel;
                rel = anyn ? vneg : rel;
                brel = rel > brel ? rel : brel;
                thr = brel * shrink;
            }
            std::memcpy(out.series + j, &s, sizeof s);
            const vi ov = -(~inside);
            std::memcpy(out.over + j, &ov, sizeof ov);
            std::memcpy(out.margin + j, &m, sizeof m);
            c_over += ov;
            c_nm = count_in(c_nm, nm);
            c_nb = count_in(c_nb, both);
            c_inf = count_in(c_inf, infm);
            vmarg = m > vmarg ? m : vmarg;
            vrun = s > vrun ? s : vrun;
            vmax = s > vmax ? s : vmax;
        }
        rs.count_over += hsum(c_over);
        rs.nan_mismatch += hsum(c_nm);
        rs.nan_both += hsum(c_nb);
        rs.inf_mismatch += hsum(c_inf);
        if (WantUlp) rs.max_ulp = std::max(rs.max_ulp, hmax(v_ulp, uint64_t{0}));
        out.margin_max = hmax(vmarg, out.margin_max);
        rs.run_max = hmax(vrun, rs.run_max);
        const double mabs = hmax(vmax, -1.0);
        if (mabs > rs.best_abs) {
            for (size_t k = i; k < i + len; ++k) {
                if (out.series[k] == mabs) {
                    rs.best_abs = mabs;
                    rs.arg_abs = base + static_cast<int64_t>(k);
                    break;
                }
            }
        }
        record_rel(a, b, i, len, hmax(brel, -1.0), rs, base);
        i += len;
    }
    if (i < n) {
        SeriesOut tail{out.series + i, out.over + i, out.margin + i, out.margin_max};
        series_scalar<T, run_float_scalar<T, WantUlp>>(a + i, b + i, n - i, p, tail, rs,
                                                      base + static_cast<int64_t>(i));
        out.margin_max = tail.margin_max;
    }
}

// ---- int64 / uint64 -------------------------------------------------------------------
// Exact like int_element: |a-b| as a u64 (max - min), max(|a|,|b|) as a u64. A block runs
// in lanes when every magnitude and difference is below 2^52: then |a-b| and max(|a|,|b|)
// are exact in float64 (a ULP-free conversion: OR into 2^52's bits, subtract 2^52), so
// max_abs, its exact tie-break, max_rel and the margin terms are the scalar rule's
// operations on the same doubles. The bound test is exact: with rtol == 0 it is the
// integer test |a-b| <= floor(atol); with rtol > 0 the float64 bound fl(atol + fl(rtol*M))
// is within 3 * 2^-53 of the real one, so an element further than 2^-49 (relative) from
// it is decided by the float64 test, and a block holding one closer falls back to the
// exact scalar path (int_inside_exact). Any other block (a value >= 2^52) does too.
template <class T>
struct IntLanes;
template <> struct IntLanes<std::int64_t> { using V = vi; };
template <> struct IntLanes<std::uint64_t> { using V = vu; };

inline vd small_u64_to_double(vu x) {  // exact for x < 2^52
    return (vd)(x | splat<vu>(uint64_t{0x4330000000000000})) - splat<vd>(0x1p52);
}

// |a-b| and max(|a|,|b|) of L pairs, as u64 lanes: exact, as int_element computes them
// (max - min; a negative value's magnitude by unsigned negation, so MIN has 2^63).
struct IntPair {
    vu mag, mm;
};
template <class T>
inline IntPair int_pair_lanes(const T* a, const T* b) {
    using V = typename IntLanes<T>::V;
    V x, y;
    std::memcpy(&x, a, sizeof x);
    std::memcpy(&y, b, sizeof y);
    const V hi = x > y ? x : y, lo = x > y ? y : x;
    vu ax = (vu)x, ay = (vu)y;
    if constexpr (std::is_signed_v<T>) {
        ax = x < 0 ? -(vu)x : (vu)x;
        ay = y < 0 ? -(vu)y : (vu)y;
    }
    return {(vu)hi - (vu)lo, ax > ay ? ax : ay};
}

template <class T>
inline uint64_t int_mag(T x, T y) {
    return x >= y ? static_cast<uint64_t>(x) - static_cast<uint64_t>(y)
                  : static_cast<uint64_t>(y) - static_cast<uint64_t>(x);
}

// A lane block [i, i+len) whose largest |a-b| is mu (exact, < 2^52): its first index, where
// it beats the running maximum (int_element's rule: the first element of all, or a strictly
// larger exact magnitude).
template <class T>
inline void record_int_abs(const T* a, const T* b, size_t i, size_t len, uint64_t mu,
                           RunStats& rs, int64_t base) {
    if (!(rs.best_abs < 0.0 || static_cast<u128>(mu) > rs.best_mag)) return;
    for (size_t k = i; k < i + len; ++k) {
        if (int_mag(a[k], b[k]) == mu) {
            rs.best_abs = static_cast<double>(mu);
            rs.best_mag = mu;
            rs.arg_abs = base + static_cast<int64_t>(k);
            return;
        }
    }
}

// The same for the block's largest max_rel r (the lanes' rel_diff of the same doubles).
template <class T>
inline void record_int_rel(const T* a, const T* b, size_t i, size_t len, double r,
                           RunStats& rs, int64_t base) {
    if (!(r > rs.best_rel)) return;
    for (size_t k = i; k < i + len; ++k) {
        const double dk = static_cast<double>(int_mag(a[k], b[k]));
        const double mk = static_cast<double>(std::max(rules::int_magnitude<T, uint64_t>(a[k]),
                                                       rules::int_magnitude<T, uint64_t>(b[k])));
        if (rel_diff(dk, mk, false) == r) {
            rs.best_rel = r;
            rs.arg_rel = base + static_cast<int64_t>(k);
            return;
        }
    }
}

// The lanes of one block of run_int64_vec, the mode (Rel: rtol > 0, the float64 bound with
// its ambiguity test and the element margin; else the integer test |a-b| <= floor(atol))
// fixed at compile time so that the loop holds no mode test. False: the block must go
// through the exact scalar rule (a value >= 2^52, or a bound test too close to call).
// The int64 lanes' constants, for the run and the series loops: the bound in float64 lanes,
// the integer test's floor(atol) (all ones from 2^64 on), the lane test's 2^52 (the bits a
// lane value must not have), the ambiguity window 1 -+ 2^-49 and the thresholds' shrink.
struct IntBoundLanes {
    vd vatol, vrtol, vzero = splat<vd>(0.0), vtiny = splat<vd>(0x1p-1000),
       vmtiny = splat<vd>(0x1p-900), wlo = splat<vd>(1.0 - 0x1p-49), whi = splat<vd>(1.0 + 0x1p-49);
    vu vatol_floor, high = splat<vu>(~((uint64_t{1} << 52) - 1));
    static constexpr double shrink = 1.0 - 0x1p-50;

    explicit IntBoundLanes(const Params& p)
        : vatol(splat<vd>(p.atol)), vrtol(splat<vd>(p.rtol)),
          vatol_floor(splat<vu>(!(p.atol < 0x1p64) ? ~uint64_t{0} : static_cast<uint64_t>(p.atol))) {}
};

template <class T, bool Rel>
struct Int64Lanes : IntBoundLanes {
    using IntBoundLanes::IntBoundLanes;

    // The margin's lane threshold: a lane with d <= bnd * cut can neither raise the margin
    // (d / bnd < vmarg, by the shrink of the float rules) nor be near its bound (cut <=
    // 1 - 2^-49); 0 while the margin is below 2^-900, so that vmarg * shrink stays exact.
    vd lane_cut(vd vmarg) const {
        const vd c = vmarg >= vmtiny ? vmarg * shrink : vzero;
        return c < wlo ? c : wlo;
    }

    bool block(const T* a, const T* b, size_t vlen, RunStats& rs, int64_t base,
               uint64_t& mag_max) const {
        vu big = splat<vu>(uint64_t{0}), vmag = big;
        vi amb = splat<vi>(int64_t{0}), c_over = amb;
        vd brel = splat<vd>(rs.best_rel), thr = brel * shrink;
        vd vmarg = splat<vd>(rs.margin);
        vd cut = lane_cut(vmarg);
        // the first element of all sets max_rel whatever it is (0 included): the first
        // register takes the exact branch then
        bool first = rs.best_rel < 0.0;
        for (size_t j = 0; j < vlen; j += L) {
            const IntPair e = int_pair_lanes(a + j, b + j);
            const vu mag = e.mag, mm = e.mm;
            big |= mm | mag;
            vmag = mag > vmag ? mag : vmag;
            const vd d = small_u64_to_double(mag & ~high), mx = small_u64_to_double(mm & ~high);
            // A lane needs the exact branch only where it may raise max_rel (d > thr*mx:
            // d and mx are integers, so thr > 0 has thr*mx >= 2^-53 where d > 0) or, with
            // rtol > 0, come near its bound or raise the margin (d > bnd*cut, cut <= 1 -
            // 2^-49): every other lane is inside, beyond doubt, and changes no maximum.
            vi slow = (vi)(d > thr * mx);
            vd bnd;
            if constexpr (!Rel) {
                c_over = count_in(c_over, (vi)(mag > vatol_floor));
            } else {
                bnd = vatol + vrtol * mx;
                slow |= (vi)(d > bnd * cut);
            }
            if (first || any_true(slow)) {
                first = false;
                if constexpr (Rel) {
                    c_over = count_in(c_over, (vi)(d > bnd));
                    amb |= (vi)((d > bnd * wlo) & (d < bnd * whi));
                    vd q = d / bnd;
                    q = q == q ? q : vzero;  // 0/0, inf/inf: 0 (margin_of)
                    vmarg = q > vmarg ? q : vmarg;
                    cut = lane_cut(vmarg);
                }
                const vd rel = mx > vzero ? d / mx : vzero;
                brel = rel > brel ? rel : brel;
                thr = brel * shrink;
            }
        }
        if (any_true((vi)((big & high) != 0)) || any_true(amb)) return false;
        rs.count_over += hsum(c_over);
        if constexpr (Rel) rs.margin = std::max(rs.margin, hmax(vmarg, 0.0));
        mag_max = hmax(vmag, uint64_t{0});
        rs.run_max = std::max(rs.run_max, static_cast<double>(mag_max));
        record_int_rel(a, b, 0, vlen, hmax(brel, -1.0), rs, base);
        return true;
    }
};

template <class T, bool Rel>
void run_int64_mode(const T* a, const T* b, size_t n, const Params& p, RunStats& rs, int64_t base) {
    constexpr size_t BLOCK = 1024;
    const Int64Lanes<T, Rel> lanes(p);
    size_t i = 0;
    while (i < n) {
        const size_t len = std::min(BLOCK, n - i);
        const size_t vlen = len / L * L;
        const int64_t at = base + static_cast<int64_t>(i);
        uint64_t mu = 0;
        if (vlen == 0 || !lanes.block(a + i, b + i, vlen, rs, at, mu)) {  // exact scalar rule
            run_int<T, false>(a + i, b + i, len, p, rs, at);
            i += len;
            continue;
        }
        record_int_abs(a, b, i, vlen, mu, rs, base);
        if (vlen < len) run_int<T, false>(a + i + vlen, b + i + vlen, len - vlen, p, rs, at + static_cast<int64_t>(vlen));
        i += len;
    }
}

// Exact like int_element, see above; the mode chosen once per call.
template <class T>
void run_int64_vec(const void* av, const void* bv, size_t n, const Params& p, RunStats& rs,
                   int64_t base) {
    const T* a = static_cast<const T*>(av);
    const T* b = static_cast<const T*>(bv);
    if (p.rtol > 0.0) run_int64_mode<T, true>(a, b, n, p, rs, base);
    else run_int64_mode<T, false>(a, b, n, p, rs, base);
}

// One int64 / uint64 element a step: the lanes of run_int64_vec (the same exactness rule: a
// block runs in lanes when every magnitude and difference is below 2^52 and no bound test is
// within 2^-49 of its bound, else it goes through the exact scalar rule), each element's
// figures stored as its step's: series = fl(|a-b|), over = outside, margin = step_margin of
// the one element (rtol > 0: fl(d / bound), 0/0 as 0; rtol == 0: fl(d / atol), 0 for d == 0).
template <class T>
void series_int64_vec(const void* av, const void* bv, size_t n, const Params& p, SeriesOut& out,
                      RunStats& rs, int64_t base) {
    constexpr size_t BLOCK = 512;
    const T* a = static_cast<const T*>(av);
    const T* b = static_cast<const T*>(bv);
    const IntBoundLanes k(p);
    const vd vzero = k.vzero, vatol = k.vatol, vrtol = k.vrtol, vtiny = k.vtiny, wlo = k.wlo,
             whi = k.whi;
    const vu vatol_floor = k.vatol_floor, high = k.high;
    constexpr double shrink = IntBoundLanes::shrink;
    const bool exact_int = p.rtol == 0.0;
    size_t i = 0;
    while (n - i >= static_cast<size_t>(L)) {
        const size_t len = std::min(BLOCK, (n - i) / L * L);
        vu big = splat<vu>(uint64_t{0}), vmag = big;
        vi amb = splat<vi>(int64_t{0}), c_over = amb;
        vd vmarg = splat<vd>(out.margin_max);
        vd brel = splat<vd>(rs.best_rel), thr = brel * shrink;
        for (size_t j = i; j < i + len; j += L) {
            const IntPair e = int_pair_lanes(a + j, b + j);
            const vu mag = e.mag, mm = e.mm;
            big |= mm | mag;
            const vd d = small_u64_to_double(mag & ~high), mx = small_u64_to_double(mm & ~high);
            vi ov;
            vd m;
            if (exact_int) {
                ov = (vi)(mag > vatol_floor);
                const vd q = d / vatol;
                m = q > vzero ? q : vzero;
            } else {
                const vd bnd = vatol + vrtol * mx;
                ov = (vi)(d > bnd);
                amb |= (vi)((d > bnd * wlo) & (d < bnd * whi));
                m = d / bnd;
                m = m == m ? m : vzero;
            }
            std::memcpy(out.series + j, &d, sizeof d);
            const vi one = -ov;
            std::memcpy(out.over + j, &one, sizeof one);
            std::memcpy(out.margin + j, &m, sizeof m);
            c_over += one;
            vmarg = m > vmarg ? m : vmarg;
            vmag = mag > vmag ? mag : vmag;
            const vd lim = thr * mx;
            if (any_true((d > lim) | (lim < vtiny))) {
                const vd rel = mx > vzero ? d / mx : vzero;
                brel = rel > brel ? rel : brel;
                thr = brel * shrink;
            }
        }
        if (any_true((vi)((big & high) != 0)) || any_true(amb)) {  // exact scalar rule
            SeriesOut o{out.series + i, out.over + i, out.margin + i, out.margin_max};
            series_scalar<T, run_int<T, false>>(a + i, b + i, len, p, o, rs,
                                                base + static_cast<int64_t>(i));
            out.margin_max = o.margin_max;
            i += len;
            continue;
        }
        rs.count_over += hsum(c_over);
        out.margin_max = hmax(vmarg, out.margin_max);
        const uint64_t mu = hmax(vmag, uint64_t{0});
        rs.run_max = std::max(rs.run_max, static_cast<double>(mu));
        record_int_abs(a, b, i, len, mu, rs, base);
        record_int_rel(a, b, i, len, hmax(brel, -1.0), rs, base);
        i += len;
    }
    if (i < n) {
        SeriesOut tail{out.series + i, out.over + i, out.margin + i, out.margin_max};
        series_scalar<T, run_int<T, false>>(a + i, b + i, n - i, p, tail, rs,
                                            base + static_cast<int64_t>(i));
        out.margin_max = tail.margin_max;
    }
}

// ---- float16 ----------------------------------------------------------------------------
// A block of float16 pairs is converted exactly to float32 (lane by lane: the bit layout is
// moved, a subnormal is renormalized by one exact float32 subtraction) and folded by the
// float32 vector loop without its ULP rule: float32 holds every float16 value, so |a-b|,
// max(|a|,|b|), the bound, max_rel and the margin are the same float64 operations on the
// same values. The ULP figures are float16's: distances of the 16-bit ordered images (lanes),
// max_ulp over non-NaN pairs, and an element beyond the ULP bound that the loop counted
// inside (it met the |a-b| bound) is counted outside here.
// 2L lanes of 32 bits: the lane layer's wu / wi / wf (kernels_isa.hpp); 2L float16 in one
// half register
typedef std::uint16_t vh16 __attribute__((vector_size(4 * L)));
constexpr int HL = lanes_of<wu>();

inline wu load_half(const std::uint16_t* h) {
    vh16 x;
    std::memcpy(&x, h, sizeof x);
    return __builtin_convertvector(x, wu);
}


// The parameters of the float32 loops that float16 runs through: the same bounds without a
// ULP rule (float16 applies its own, on its own bit patterns).
inline Params without_ulp(const Params& p) {
    Params pf = p;
    pf.ulp = std::numeric_limits<uint64_t>::max();
    pf.ulp_margin = -1.0;
    return pf;
}

inline void half_block_to_float(const std::uint16_t* h, float* out, size_t m) {
    const wu sexp = splat<wu>(0x7c00u << 13);
    const wf magic = splat<wf>(0x1p-14f);
    size_t k = 0;
    for (; k + HL <= m; k += HL) {
        const wu x = load_half(h + k);
        wu o = (x & 0x7fffu) << 13;
        const wu e = o & sexp;
        o += (127u - 15u) << 23;
        o = e == sexp ? o + ((128u - 16u) << 23) : o;             // inf / NaN
        const wf sub = (wf)(o + (1u << 23)) - magic;           // zero / subnormal, exact
        o = e == 0 ? (wu)sub : o;
        o |= (x & 0x8000u) << 16;
        std::memcpy(out + k, &o, sizeof o);
    }
    for (; k < m; ++k) out[k] = static_cast<float>(half_to_double(h[k]));  // exact
}

// float16 ULP distances of the pairs (0 for a NaN pair), 2L at a time; `over` gets the
// lanes beyond `lim`.
inline wu half_ulp_lanes(const std::uint16_t* a, const std::uint16_t* b) {
    const wu x = load_half(a), y = load_half(b);
    const wu mx = x & 0x7fffu, my = y & 0x7fffu;
    const wi ox = (x & 0x8000u) != 0 ? -(wi)mx : (wi)mx;
    const wi oy = (y & 0x8000u) != 0 ? -(wi)my : (wi)my;
    const wu nan = (wu)((mx > 0x7c00u) | (my > 0x7c00u));
    return (ox >= oy ? (wu)(ox - oy) : (wu)(oy - ox)) & ~nan;
}

// max_ulp of m float16 pairs (NaN pairs have none)
inline uint64_t half_max_ulp(const std::uint16_t* a, const std::uint16_t* b, size_t m) {
    wu um = splat<wu>(0u);
    size_t k = 0;
    for (; k + HL <= m; k += HL) {
        const wu ud = half_ulp_lanes(a + k, b + k);
        um = ud > um ? ud : um;
    }
    uint64_t mu = 0;
    for (int l = 0; l < HL; ++l) mu = std::max<uint64_t>(mu, um[l]);
    for (; k < m; ++k) {
        if (is_nan(half_to_double(a[k])) || is_nan(half_to_double(b[k]))) continue;
        mu = std::max(mu, ulp_distance(ordered_f16(a[k]), ordered_f16(b[k])));
    }
    return mu;
}

template <bool WantUlp>
void run_half_vec(const void* av, const void* bv, size_t n, const Params& p, RunStats& rs,
                  int64_t base) {
    constexpr size_t BLOCK = 1024;
    const auto* a = static_cast<const std::uint16_t*>(av);
    const auto* b = static_cast<const std::uint16_t*>(bv);
    const Params pf = without_ulp(p);  // the float32 loop; the ULP rule is float16's own
    const bool check_ulp = WantUlp && p.ulp != std::numeric_limits<uint64_t>::max();
    const wu vlim = splat<wu>(static_cast<std::uint32_t>(std::min<uint64_t>(p.ulp, 0xffffffffu)));
    alignas(64) float fa[BLOCK];
    alignas(64) float fb[BLOCK];
    for (size_t i = 0; i < n;) {
        const size_t m = std::min(BLOCK, n - i);
        half_block_to_float(a + i, fa, m);
        half_block_to_float(b + i, fb, m);
        run_float_vec<float, false>(fa, fb, m, pf, rs, base + static_cast<int64_t>(i));
        if constexpr (WantUlp) {
            wu um = splat<wu>(0u), flag = um;
            size_t k = 0;
            for (; k + HL <= m; k += HL) {
                const wu ud = half_ulp_lanes(a + i + k, b + i + k);
                um = ud > um ? ud : um;
                flag |= (wu)(ud > vlim);
            }
            uint64_t mu = 0;
            bool any = false;
            for (int l = 0; l < HL; ++l) {
                mu = std::max<uint64_t>(mu, um[l]);
                any = any || flag[l] != 0;
            }
            for (size_t t = k; t < m; ++t) {  // the tail, scalar
                const double x = half_to_double(a[i + t]), y = half_to_double(b[i + t]);
                if (is_nan(x) || is_nan(y)) continue;
                const uint64_t u = ulp_distance(ordered_f16(a[i + t]), ordered_f16(b[i + t]));
                mu = std::max(mu, u);
                any = any || u > p.ulp;
            }
            rs.max_ulp = std::max(rs.max_ulp, mu);
            if (check_ulp && any) {  // beyond the ULP bound, but inside the |a-b| bound
                for (size_t t = 0; t < m; ++t) {
                    const double x = half_to_double(a[i + t]), y = half_to_double(b[i + t]);
                    if (is_nan(x) || is_nan(y)) continue;
                    if (ulp_distance(ordered_f16(a[i + t]), ordered_f16(b[i + t])) <= p.ulp) continue;
                    if (float_inside(is_equal(x, y), is_inf_mismatch(x, y), abs_diff(x, y),
                                     mag_max(x, y), 0, pf))
                        ++rs.count_over;
                }
            }
        }
        i += m;
    }
}

// One float16 element a step: the float32 series kernel on the converted block, then the
// float16 ULP rule per element (an element beyond the ULP bound that met the |a-b| bound is
// outside; the margin's ULP term), as run_half_vec does for runs.
template <bool WantUlp>
void series_half_vec(const void* av, const void* bv, size_t n, const Params& p, SeriesOut& out,
                     RunStats& rs, int64_t base) {
    constexpr size_t BLOCK = 1024;
    const auto* a = static_cast<const std::uint16_t*>(av);
    const auto* b = static_cast<const std::uint16_t*>(bv);
    const Params pf = without_ulp(p);
    const bool check_ulp = WantUlp && p.ulp != std::numeric_limits<uint64_t>::max();
    const bool ulp_term = WantUlp && p.ulp_margin >= 0.0;
    alignas(64) float fa[BLOCK];
    alignas(64) float fb[BLOCK];
    for (size_t i = 0; i < n;) {
        const size_t m = std::min(BLOCK, n - i);
        half_block_to_float(a + i, fa, m);
        half_block_to_float(b + i, fb, m);
        SeriesOut o{out.series + i, out.over + i, out.margin + i, out.margin_max};
        series_float_vec<float, false>(fa, fb, m, pf, o, rs, base + static_cast<int64_t>(i));
        out.margin_max = o.margin_max;
        if constexpr (WantUlp) {
            rs.max_ulp = std::max(rs.max_ulp, half_max_ulp(a + i, b + i, m));
            for (size_t k = 0; (check_ulp || ulp_term) && k < m; ++k) {
                if (fa[k] != fa[k] || fb[k] != fb[k]) continue;  // NaN: no ULP distance
                const uint64_t u = ulp_distance(ordered_f16(a[i + k]), ordered_f16(b[i + k]));
                if (u == 0) continue;
                if (check_ulp && u > p.ulp && o.over[k] == 0) {
                    o.over[k] = 1;
                    ++rs.count_over;
                }
                if (ulp_term) {
                    const double q = static_cast<double>(u) / p.ulp_margin;
                    if (q > o.margin[k]) o.margin[k] = q;
                    if (q > out.margin_max) out.margin_max = q;
                }
            }
        }
        i += m;
    }
}

// ---- the table entries of this file ---------------------------------------------------
template <bool Vec, bool W>
void set_entries_w(KernelTable& t) {
    const int w = W ? 1 : 0;
    t.series[K_F16][w] = series_scalar<std::uint16_t, run_half<W>>;
    if constexpr (Vec) {
        t.series[K_F32][w] = series_float_vec<float, W>;
        t.series[K_F64][w] = series_float_vec<double, W>;
    } else {
        t.series[K_F32][w] = series_scalar<float, run_float_scalar<float, W>>;
        t.series[K_F64][w] = series_scalar<double, run_float_scalar<double, W>>;
    }
    t.series[K_I8][w] = series_scalar<std::int8_t, run_int<std::int8_t, false>>;
    t.series[K_I16][w] = series_scalar<std::int16_t, run_int<std::int16_t, false>>;
    t.series[K_I32][w] = series_scalar<std::int32_t, run_int<std::int32_t, false>>;
    t.series[K_I64][w] = series_scalar<std::int64_t, run_int<std::int64_t, false>>;
    t.series[K_U8][w] = series_scalar<std::uint8_t, run_int<std::uint8_t, false>>;
    t.series[K_U16][w] = series_scalar<std::uint16_t, run_int<std::uint16_t, false>>;
    t.series[K_U32][w] = series_scalar<std::uint32_t, run_int<std::uint32_t, false>>;
    t.series[K_U64][w] = series_scalar<std::uint64_t, run_int<std::uint64_t, false>>;
    t.series[K_I128][w] = series_scalar<i128, run_int<i128, false>>;
    if constexpr (Vec) {
        t.fn[K_F16][w] = run_half_vec<W>;
        t.series[K_F16][w] = series_half_vec<W>;
        t.fn[K_I64][w] = run_int64_vec<std::int64_t>;
        t.fn[K_U64][w] = run_int64_vec<std::uint64_t>;
        t.series[K_I64][w] = series_int64_vec<std::int64_t>;
        t.series[K_U64][w] = series_int64_vec<std::uint64_t>;
    }
}

template <bool Vec>
void set_entries(KernelTable& t) {
    set_entries_w<Vec, false>(t);
    set_entries_w<Vec, true>(t);
    if constexpr (Vec) t.entry[K_F16] = t.entry[K_I64] = t.entry[K_U64] = "vector";
}

}  // namespace dtypes
}  // namespace
}  // namespace TOLERANCE_ISA_NS
}  // namespace tolerance
