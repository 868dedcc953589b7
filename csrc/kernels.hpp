// Divergence kernels: the scalar rules, the per-run and per-array statistics, and the
// entry points used by the bindings. Knows nothing of Python.
//
// Every rule of docs/numbers.md is one named function below; the vector paths
// (kernels_isa.hpp) compute the same IEEE operations lane by lane, so every path gives
// bit-identical figures. Every figure is order-independent (max, first index, counts).
//
// The rule functions are `static inline`: this header is included by translation units
// compiled with different ISA flags, and internal linkage keeps each TU's copy its own
// (an inline function with external linkage could be merged with an AVX2 copy by the
// linker and then run on a CPU without AVX2).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <string>
#include <vector>

namespace tolerance {

// ---- element types --------------------------------------------------------------------
// Input dtype codes (shared with Python: tolerance/compare/kernel.py _CODES).
enum DType : int {
    DT_BOOL = 0, DT_I8, DT_I16, DT_I32, DT_I64, DT_U8, DT_U16, DT_U32, DT_U64,
    DT_F16, DT_F32, DT_F64, DT_COUNT
};
// Compute types: what the contiguous kernels run on.
enum KType : int {
    K_F16 = 0, K_F32, K_F64, K_I8, K_I16, K_I32, K_I64, K_U8, K_U16, K_U32, K_U64, K_I128,
    K_COUNT
};

__extension__ typedef __int128 i128;
__extension__ typedef unsigned __int128 u128;
template <class W> struct is_signed_int { static constexpr bool value = std::numeric_limits<W>::is_signed; };
template <> struct is_signed_int<i128> { static constexpr bool value = true; };

// ---- parameters and per-run statistics ------------------------------------------------
// The bound as the kernels see it (docs/numbers.md "The bound": an unset bound is not a zero bound; the
// caller maps "unset" onto these values): atol/rtol unset while ulp is set -> atol = +inf
// (the |a-b| test passes everything and adds 0 to the margin); nothing set -> atol = rtol
// = 0 (inside means equal).
struct Params {
    double atol = 0.0;
    double rtol = 0.0;
    std::uint64_t ulp = std::numeric_limits<std::uint64_t>::max();  // max() = no ULP bound
    // the ULP bound as float64 for the margin's ULP term (it may exceed 2^64); < 0: unset
    double ulp_margin = -1.0;
};

// Statistics of consecutive element runs (one step, or part of one). Plain data: the ISA
// translation units fill it and nothing else. Indices are the caller's (base + offset).
// best_abs / best_rel may be seeded with the running maxima of earlier steps: a kernel only
// records an index (arg_abs / arg_rel) when it finds a strictly greater value, so the
// seed spares it the search for maxima that cannot win.
struct RunStats {
    double run_max = -1.0;         // max |a-b| over this run's compared pairs; -1: none
    double best_abs = -1.0;        // running max |a-b| (seed, then updated)
    std::int64_t arg_abs = -1;     // index of the first value that raised best_abs, or -1
    double best_rel = -1.0;        // running max relative difference (seed, then updated)
    std::int64_t arg_rel = -1;
    std::uint64_t max_ulp = 0;
    std::int64_t count_over = 0;
    std::int64_t nan_mismatch = 0;
    std::int64_t nan_both = 0;
    std::int64_t inf_mismatch = 0;
    // max over compared pairs of |a-b| / (atol + rtol*max(|a|,|b|)), kept only when rtol > 0
    // (with rtol == 0 the step's margin follows from run_max: see step_margin)
    double margin = 0.0;
    // integer inputs: exact running max magnitude (seed, then updated with best_abs), so an
    // argmax tie on the float64-rounded magnitude goes to the larger exact one
    u128 best_mag = 0;
};

// A contiguous kernel: folds a[0..n), b[0..n) (already of the compute type, contiguous,
// native byte order) into rs; element k has index base + k.
using RunFn = void (*)(const void* a, const void* b, std::size_t n, const Params& p,
                       RunStats& rs, std::int64_t base);

// One element per step (inner size 1): per-step figures straight into the series arrays,
// no per-step bookkeeping. Element k is step base + k; it fills series[k] (|a-b|, -1 for a
// NaN pair), over[k] (0/1) and margin[k] (step_margin of that one element), raises
// margin_max, and folds the whole-range figures into rs (arg_abs / arg_rel are step indices,
// the same first-index rule as RunFn; run_max, counts, max_ulp; rs.margin is not used).
struct SeriesOut {
    double* series;
    std::int64_t* over;
    double* margin;
    double margin_max = 0.0;
};
using SeriesFn = void (*)(const void* a, const void* b, std::size_t n, const Params& p,
                          SeriesOut& out, RunStats& rs, std::int64_t base);

struct KernelTable {
    const char* name;
    RunFn fn[K_COUNT][2];  // [compute type][want_ulp]
    SeriesFn series[K_COUNT][2];  // inner size 1 (kernels_dtypes.hpp)
    // what each entry runs: "vector" (the lane loop), "vector+blocks" (with the quick
    // blocks and the float32 pre-filter, kernels_isa.hpp) or "scalar"; checked by the tests
    const char* entry[K_COUNT];
    std::uint64_t (*read_pass)(const void* a, std::size_t abytes, const void* b,
                               std::size_t bbytes);
};

// ---- the scalar rules -----------------------------------------------------------------
namespace rules {

static inline bool is_nan(double x) { return x != x; }
static inline bool is_equal(double a, double b) { return a == b; }  // +0 == -0, inf == inf
// |a-b| in float64; equal values (also +inf == +inf) are 0 apart.
static inline double abs_diff(double a, double b) { return is_equal(a, b) ? 0.0 : std::fabs(a - b); }
static inline double mag_max(double a, double b) {
    const double x = std::fabs(a), y = std::fabs(b);
    return x > y ? x : y;
}
// inf against anything unequal (NaN pairs are handled before this rule applies).
static inline bool is_inf_mismatch(double a, double b) {
    const double inf = std::numeric_limits<double>::infinity();
    return !is_equal(a, b) && (std::fabs(a) == inf || std::fabs(b) == inf);
}
// |a-b| / max(|a|,|b|); 0/0 = 0; an inf mismatch is infinitely far.
static inline double rel_diff(double d, double mx, bool inf_mismatch) {
    if (inf_mismatch) return std::numeric_limits<double>::infinity();
    return mx > 0.0 ? d / mx : 0.0;
}
static inline double bound_of(double mx, const Params& p) { return p.atol + p.rtol * mx; }
// Inside: equal, or |a-b| <= atol + rtol*max(|a|,|b|) and ULP <= ulp; never an inf mismatch.
// One element's term of the margin (rtol > 0 only): d / bound, where a 0/0 or inf/inf
// (d == 0, or an overflowing difference against an overflowing bound) counts as 0.
static inline double margin_of(double d, double bound) {
    const double q = d / bound;
    return q == q ? q : 0.0;
}
static inline bool float_inside(bool eq, bool inf_mismatch, double d, double mx,
                                std::uint64_t ulpd, const Params& p) {
    return eq || (!inf_mismatch && d <= bound_of(mx, p) && ulpd <= p.ulp);
}

// Ordered-integer images: monotone in the float value, +0 and -0 both map to 0.
static inline std::int64_t ordered_f64(double x) {
    std::uint64_t u;
    std::memcpy(&u, &x, sizeof u);
    const std::uint64_t sign = std::uint64_t{1} << 63;
    return (u & sign) ? -static_cast<std::int64_t>(u & ~sign) : static_cast<std::int64_t>(u);
}
static inline std::int64_t ordered_f32(float x) {
    std::uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    const std::uint32_t sign = 0x80000000u;
    return (u & sign) ? -static_cast<std::int64_t>(u & ~sign) : static_cast<std::int64_t>(u);
}
static inline std::int64_t ordered_f16(std::uint16_t h) {
    return (h & 0x8000u) ? -static_cast<std::int64_t>(h & 0x7fffu) : static_cast<std::int64_t>(h);
}
static inline std::uint64_t ulp_distance(std::int64_t oa, std::int64_t ob) {
    return oa >= ob ? static_cast<std::uint64_t>(oa) - static_cast<std::uint64_t>(ob)
                    : static_cast<std::uint64_t>(ob) - static_cast<std::uint64_t>(oa);
}

// IEEE binary16 -> binary64, exact (subnormals included), no F16C needed.
static inline double half_to_double(std::uint16_t h) {
    const std::uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    double v;
    if (exp == 0) {
        v = static_cast<double>(man) * 0x1p-24;
    } else if (exp == 31) {
        v = man ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
    } else {
        const std::uint64_t bits = (static_cast<std::uint64_t>(exp + 1008u) << 52) |
                                   (static_cast<std::uint64_t>(man) << 42);
        std::memcpy(&v, &bits, sizeof v);
    }
    return (h & 0x8000u) ? -v : v;
}

// Folds one float pair (values in float64, ULP distance precomputed) into rs.
static inline void float_element(double a, double b, std::uint64_t ulpd, bool want_ulp,
                                 const Params& p, RunStats& rs, std::int64_t idx) {
    const bool na = is_nan(a), nb = is_nan(b);
    if (na || nb) {
        if (na && nb) {
            ++rs.nan_both;
        } else {
            ++rs.nan_mismatch;
            ++rs.count_over;
        }
        return;
    }
    const bool eq = is_equal(a, b);
    const bool infm = is_inf_mismatch(a, b);
    const double d = abs_diff(a, b);
    const double mx = mag_max(a, b);
    const double rel = rel_diff(d, mx, infm);
    if (infm) ++rs.inf_mismatch;
    if (!float_inside(eq, infm, d, mx, ulpd, p)) ++rs.count_over;
    if (p.rtol > 0.0 && !eq && !infm) {
        const double q = margin_of(d, bound_of(mx, p));
        if (q > rs.margin) rs.margin = q;
    }
    if (d > rs.run_max) rs.run_max = d;
    if (d > rs.best_abs) { rs.best_abs = d; rs.arg_abs = idx; }
    if (rel > rs.best_rel) { rs.best_rel = rel; rs.arg_rel = idx; }
    if (want_ulp && ulpd > rs.max_ulp) rs.max_ulp = ulpd;
}

// Integers: exact unsigned magnitude, and an exact bound test: X <= atol + rtol*M in real
// arithmetic (X = |a-b| < 2^66, M = max(|a|,|b|) < 2^65), no float64 rounding of M.
// A finite double v >= 0 is n * 2^e with an integer n < 2^53 (dyadic split below).
struct Dyadic {
    std::uint64_t n;
    int e;
};
static inline Dyadic dyadic_of(double v) {
    std::uint64_t u;
    std::memcpy(&u, &v, sizeof u);
    const int be = static_cast<int>((u >> 52) & 0x7ffu);  // biased exponent
    const std::uint64_t frac = u & ((std::uint64_t{1} << 52) - 1);
    if (be == 0) return {frac, -1074};                    // subnormal: frac * 2^-1074
    return {frac | (std::uint64_t{1} << 52), be - 1075};  // 1.frac * 2^(be-1023)
}
// floor(n * 2^e) and the fractional part as a numerator over 2^-e (e < 0), for n*2^e < 2^66.
static inline u128 int_part(u128 n, int e) {
    if (e >= 0) return n << e;
    return -e >= 128 ? u128{0} : n >> -e;
}
static inline u128 frac_part(u128 n, int e) {  // n mod 2^-e (0 when e >= 0)
    if (e >= 0 || -e >= 128) return e >= 0 ? u128{0} : n;
    return n & ((u128{1} << -e) - 1);
}
// Does n1*2^e1 + n2*2^e2 reach 1, for fractions (each < 1, numerators < 2^117)?
static inline bool fractions_carry(u128 n1, int e1, u128 n2, int e2) {
    if (n1 == 0 || n2 == 0) return false;
    if (e1 > e2) { std::swap(n1, n2); std::swap(e1, e2); }
    // now e1 <= e2 < 0; with s = e2 - e1: n1 + n2*2^s >= 2^-e1  <=>  n2 + floor(n1/2^s) >= 2^-e2
    // (2^-e1 is a multiple of 2^s). Both terms are < 2^117 * 2^e2: below 2^-10 when e2 < -127.
    if (e2 < -127) return false;
    const int s = e2 - e1;
    const u128 q = s >= 128 ? u128{0} : n1 >> s;
    return n2 + q >= (u128{1} << -e2);
}
static inline bool int_inside_exact(u128 X, u128 M, const Params& p) {
    if (!(p.atol < 0x1p66) || (M > 0 && !(p.rtol < 0x1p66))) return true;  // >= 2^66 > X (also inf)
    const Dyadic A = dyadic_of(p.atol), R = dyadic_of(p.rtol);
    const u128 T = static_cast<u128>(R.n) * M;  // rtol*M = T * 2^R.e, T < 2^53 * 2^65
    // a term >= 2^67 exceeds X: T's bit length + R.e > 67
    int tbits = 0;
    for (u128 t = T; t; t >>= 1) ++tbits;
    if (T != 0 && tbits + R.e > 67) return true;
    const u128 ia = int_part(A.n, A.e), it = T == 0 ? u128{0} : int_part(T, R.e);
    const bool carry = fractions_carry(frac_part(A.n, A.e), A.e, T == 0 ? u128{0} : frac_part(T, R.e), R.e);
    return X <= ia + it + (carry ? 1 : 0);  // X integer: X <= S <=> X <= floor(S)
}
template <class W, class M>
static inline M int_magnitude(W x) {
    if constexpr (is_signed_int<W>::value) {
        if (x < 0) return static_cast<M>(M{0} - static_cast<M>(x));
    }
    return static_cast<M>(x);
}
template <class W, class M>
static inline void int_element(W a, W b, const Params& p, RunStats& rs, std::int64_t idx) {
    const M mag = a >= b ? static_cast<M>(static_cast<M>(a) - static_cast<M>(b))
                         : static_cast<M>(static_cast<M>(b) - static_cast<M>(a));
    const M ma = int_magnitude<W, M>(a), mb = int_magnitude<W, M>(b);
    const M mm = ma > mb ? ma : mb;
    const double d = static_cast<double>(mag);
    const double mx = static_cast<double>(mm);
    const double rel = rel_diff(d, mx, false);
    if (!(a == b || int_inside_exact(static_cast<u128>(mag), static_cast<u128>(mm), p))) ++rs.count_over;
    if (p.rtol > 0.0 && a != b) {
        const double q = margin_of(d, bound_of(mx, p));
        if (q > rs.margin) rs.margin = q;
    }
    if (d > rs.run_max) rs.run_max = d;
    // exact tie-break: a larger exact magnitude wins even where the float64 values tie
    if (rs.best_abs < 0.0 || static_cast<u128>(mag) > rs.best_mag) {
        rs.best_abs = d;
        rs.best_mag = static_cast<u128>(mag);
        rs.arg_abs = idx;
    }
    if (rel > rs.best_rel) { rs.best_rel = rel; rs.arg_rel = idx; }
}

}  // namespace rules

// ---- whole-array statistics -----------------------------------------------------------
// The per-step arrays' allocator: resize() leaves the new elements uninitialised, so a
// one-element-a-step run (walk_series: its series kernels write every element they are
// given) does not first memset 24 bytes a step that it overwrites at once; every call that
// takes a value (assign, push_back, insert, the copy) still sets them.
template <class T>
struct NoInit : std::allocator<T> {
    template <class U>
    struct rebind {
        using other = NoInit<U>;
    };
    NoInit() = default;
    template <class U>
    NoInit(const NoInit<U>&) noexcept {}
    template <class U>
    void construct(U* q) noexcept(std::is_nothrow_default_constructible_v<U>) {
        ::new (static_cast<void*>(q)) U;
    }
    template <class U, class... A>
    void construct(U* q, A&&... a) {
        ::new (static_cast<void*>(q)) U(std::forward<A>(a)...);
    }
};
template <class T>
using SeriesVec = std::vector<T, NoInit<T>>;

// Covers steps [step0, step0 + series.size()); the first and last step may be partial
// (a range inside a step), so merge() combines a shared boundary step.
struct Stats {
    double max_abs = -1.0;  // -1: no compared pair
    std::uint64_t mag_hi = 0, mag_lo = 0;  // integers: the exact max |a-b| (u128 in two halves)
    std::int64_t arg_step = -1, arg_inner = -1;
    double max_rel = -1.0;
    std::int64_t rel_step = -1, rel_inner = -1;
    std::uint64_t max_ulp = 0;
    std::int64_t count_over = 0, nan_mismatch = 0, nan_both = 0, inf_mismatch = 0, size = 0;
    std::int64_t step0 = 0;
    SeriesVec<double> series;           // per-step max |a-b|; -1: no compared pair
    SeriesVec<std::int64_t> series_over;
    // how much of its bound the worst element uses (docs/numbers.md): max over elements
    // of |a-b| / (atol + rtol*max(|a|,|b|)) and ULP distance / ulp; inf for a NaN or inf
    // mismatch; 0 with nothing compared. Whole arrays and per step.
    double margin = 0.0;
    SeriesVec<double> series_margin;

    u128 mag() const { return (static_cast<u128>(mag_hi) << 64) | mag_lo; }
    void fold_run(std::int64_t step, const RunStats& rs, std::int64_t n, const Params& p);
    // `o` covers what comes right after this (same or next step once shifted): its steps
    // move by step_shift; the inner indices of its first step move by inner_shift.
    void merge(const Stats& o, std::int64_t step_shift, std::int64_t inner_shift);

    // The one wire layout of these statistics (little-endian, fixed order; see kernels.cpp).
    std::string to_bytes() const;
    // Rebuilds and checks every field against the others; std::invalid_argument naming the
    // field otherwise. Allocates nothing before the length is known to match.
    static Stats from_bytes(const char* data, std::size_t len);
};

// The margin of one step's run statistics (see Stats::margin).
double step_margin(const RunStats& rs, const Params& p);

struct ArrayView {
    const char* data;
    std::vector<std::int64_t> strides;  // bytes, one per dim of the common shape
    int code;                           // DType
    bool swap;                          // non-native byte order
};

// shape[0] is the steps axis (moved to the front by the caller). Releases nothing: the
// caller holds no interpreter lock when it calls this.
// What compute() is asked for, in one struct (the bindings fill it).
struct Request {
    Params p;
    bool want_ulp = false;
    std::int64_t step_offset = 0;   // index of shape[0]'s first step in the whole array
    std::int64_t inner_offset = 0;  // index of the first inner element (steps_axis=None pieces)
    int threads = 1;
    const double* atol_steps = nullptr;  // per-step atol (one per step of shape[0]) or null
};

Stats compute(const ArrayView& a, const ArrayView& b, const std::vector<std::int64_t>& shape,
              const Request& req);

std::uint64_t read_pass(const void* a, std::size_t abytes, const void* b, std::size_t bbytes,
                        int threads);

// Kernel selection: "scalar", "baseline", "avx2", "avx512". Returns the name in force
// (a path this CPU lacks falls back to the best one it has).
std::string kernel_isa();
std::string set_kernel_isa(const std::string& name);
std::vector<std::string> available_isas();
// What each compute type runs on path `isa` (KernelTable::entry), by type name.
std::vector<std::pair<std::string, std::string>> kernel_entries(const std::string& isa);

// The per-ISA tables (kernels_<isa>.cpp); null where not compiled in.
const KernelTable* table_scalar();
const KernelTable* table_baseline();
const KernelTable* table_avx2();
const KernelTable* table_avx512();

}  // namespace tolerance
