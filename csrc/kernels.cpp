// Whole-array driver: walks any strides and byte orders, converts what the contiguous
// kernels cannot read directly in small buffers, splits large inputs across threads and
// merges the partial statistics in index order. Compiled for the baseline ISA.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <thread>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "kernels.hpp"

namespace tolerance {

// ---- floating-point state -------------------------------------------------------------
// docs/numbers.md: the kernels run with flush-to-zero / denormals-are-zero off and rounding to
// nearest, whatever the process set (a library built with -ffast-math sets FTZ/DAZ when it
// is loaded). Every thread the kernels use holds one of these while it works.
class FpStateGuard {
public:
    FpStateGuard() {
#if defined(__x86_64__) || defined(__i386__)
        saved_ = _mm_getcsr();
        // MXCSR bit 15 = FTZ, bit 6 = DAZ, bits 13-14 = rounding control (00: nearest)
        _mm_setcsr(saved_ & ~0xE040u);
#elif defined(__aarch64__)
        __asm__ __volatile__("mrs %0, fpcr" : "=r"(saved_));
        // FPCR bit 24 = FZ, bit 19 = FZ16, bits 22-23 = RMode (00: nearest)
        const std::uint64_t want = saved_ & ~((std::uint64_t{1} << 24) | (std::uint64_t{1} << 19) |
                                              (std::uint64_t{3} << 22));
        __asm__ __volatile__("msr fpcr, %0" : : "r"(want));
#endif
    }
    ~FpStateGuard() {
#if defined(__x86_64__) || defined(__i386__)
        _mm_setcsr(saved_);
#elif defined(__aarch64__)
        __asm__ __volatile__("msr fpcr, %0" : : "r"(saved_));
#endif
    }
    FpStateGuard(const FpStateGuard&) = delete;
    FpStateGuard& operator=(const FpStateGuard&) = delete;

private:
#if defined(__x86_64__) || defined(__i386__)
    unsigned int saved_ = 0;
#else
    std::uint64_t saved_ = 0;
#endif
};

double step_margin(const RunStats& rs, const Params& p) {
    const double inf = std::numeric_limits<double>::infinity();
    if (rs.nan_mismatch > 0 || rs.inf_mismatch > 0) return inf;  // fails whatever the bound
    double m = rs.margin;  // rtol > 0: the kernels' element maximum
    // rtol == 0: every element's term is fl(d / atol), monotone in d, so the maximum is
    // fl(run_max / atol) (atol = 0: inf for any d > 0; atol = +inf, ulp only: 0)
    if (p.rtol == 0.0 && rs.run_max > 0.0) m = std::max(m, rs.run_max / p.atol);
    // ULP term: fl(ulp distance / ulp), monotone in the distance (ulp = 0: inf for any d > 0)
    if (p.ulp_margin >= 0.0 && rs.max_ulp > 0)
        m = std::max(m, static_cast<double>(rs.max_ulp) / p.ulp_margin);
    return m;
}

// ---- Stats ----------------------------------------------------------------------------
void Stats::fold_run(std::int64_t step, const RunStats& rs, std::int64_t n, const Params& p) {
    if (series.empty()) step0 = step;
    while (step0 + static_cast<std::int64_t>(series.size()) <= step) {
        series.push_back(-1.0);
        series_over.push_back(0);
        series_margin.push_back(0.0);
    }
    const std::size_t k = static_cast<std::size_t>(step - step0);
    if (rs.run_max > series[k]) series[k] = rs.run_max;
    series_over[k] += rs.count_over;
    const double m = step_margin(rs, p);
    if (m > series_margin[k]) series_margin[k] = m;
    if (m > margin) margin = m;
    // rs was seeded with max_abs / max_rel (and the exact integer magnitude): an index
    // means a strictly greater value
    if (rs.arg_abs >= 0 && (rs.best_abs > max_abs || rs.best_mag > mag())) {
        max_abs = rs.best_abs;
        arg_step = step;
        arg_inner = rs.arg_abs;
        mag_hi = static_cast<std::uint64_t>(rs.best_mag >> 64);
        mag_lo = static_cast<std::uint64_t>(rs.best_mag);
    }
    if (rs.arg_rel >= 0 && rs.best_rel > max_rel) { max_rel = rs.best_rel; rel_step = step; rel_inner = rs.arg_rel; }
    if (rs.max_ulp > max_ulp) max_ulp = rs.max_ulp;
    count_over += rs.count_over;
    nan_mismatch += rs.nan_mismatch;
    nan_both += rs.nan_both;
    inf_mismatch += rs.inf_mismatch;
    size += n;
}

void Stats::merge(const Stats& o, std::int64_t step_shift, std::int64_t inner_shift) {
    const std::int64_t ostep0 = o.step0 + step_shift;
    auto shift_inner = [&](std::int64_t step, std::int64_t inner) {
        return step == ostep0 ? inner + inner_shift : inner;
    };
    if (o.max_abs > max_abs || (o.max_abs == max_abs && o.mag() > mag())) {
        max_abs = o.max_abs;
        mag_hi = o.mag_hi;
        mag_lo = o.mag_lo;
        arg_step = o.arg_step + step_shift;
        arg_inner = shift_inner(arg_step, o.arg_inner);
    }
    if (o.max_rel > max_rel) {
        max_rel = o.max_rel;
        rel_step = o.rel_step + step_shift;
        rel_inner = shift_inner(rel_step, o.rel_inner);
    }
    if (o.max_ulp > max_ulp) max_ulp = o.max_ulp;
    if (o.margin > margin) margin = o.margin;
    count_over += o.count_over;
    nan_mismatch += o.nan_mismatch;
    nan_both += o.nan_both;
    inf_mismatch += o.inf_mismatch;
    size += o.size;
    if (o.series.empty()) return;
    if (series.empty()) {
        step0 = ostep0;
        series = o.series;
        series_over = o.series_over;
        series_margin = o.series_margin;
        return;
    }
    const std::int64_t end = step0 + static_cast<std::int64_t>(series.size());
    std::size_t from = 0;
    if (ostep0 == end - 1) {  // shared boundary step
        if (o.series[0] > series.back()) series.back() = o.series[0];
        series_over.back() += o.series_over[0];
        if (o.series_margin[0] > series_margin.back()) series_margin.back() = o.series_margin[0];
        from = 1;
    } else if (ostep0 != end) {
        throw std::invalid_argument("merge: the other statistics do not start where these end");
    }
    series.insert(series.end(), o.series.begin() + static_cast<std::ptrdiff_t>(from), o.series.end());
    series_over.insert(series_over.end(), o.series_over.begin() + static_cast<std::ptrdiff_t>(from),
                       o.series_over.end());
    series_margin.insert(series_margin.end(),
                         o.series_margin.begin() + static_cast<std::ptrdiff_t>(from),
                         o.series_margin.end());
}

// ---- the wire layout ------------------------------------------------------------------
// Little-endian, in this order: max_abs f64, mag_hi u64, mag_lo u64, arg_step, arg_inner i64,
// max_rel f64, rel_step, rel_inner i64, max_ulp u64, count_over, nan_mismatch, nan_both,
// inf_mismatch, size, step0 i64, margin f64, n i64; then series f64[n], series_over i64[n],
// series_margin f64[n].
namespace {
constexpr std::size_t WIRE_FIELDS = 17;  // the fixed fields above, 8 bytes each
constexpr std::size_t WIRE_HEAD = WIRE_FIELDS * 8;

void put64_at(char* p, std::uint64_t v) {
    for (int k = 0; k < 8; ++k) p[k] = static_cast<char>((v >> (8 * k)) & 0xffu);
}
void put64(std::string& out, std::uint64_t v) {
    char b[8];
    put64_at(b, v);
    out.append(b, 8);
}
std::uint64_t get64(const char* p) {
    std::uint64_t v = 0;
    for (int k = 0; k < 8; ++k) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(p[k])) << (8 * k);
    return v;
}
std::uint64_t bits_of(double x) {
    std::uint64_t u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}
double double_of(std::uint64_t u) {
    double x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}
[[noreturn]] void bad(const std::string& field, const std::string& why) {
    throw std::invalid_argument("statistics field '" + field + "': " + why);
}
}  // namespace

std::string Stats::to_bytes() const {
    std::string out;
    out.reserve(WIRE_HEAD + 24 * series.size());
    put64(out, bits_of(max_abs));
    put64(out, mag_hi);
    put64(out, mag_lo);
    put64(out, static_cast<std::uint64_t>(arg_step));
    put64(out, static_cast<std::uint64_t>(arg_inner));
    put64(out, bits_of(max_rel));
    put64(out, static_cast<std::uint64_t>(rel_step));
    put64(out, static_cast<std::uint64_t>(rel_inner));
    put64(out, max_ulp);
    for (std::int64_t v : {count_over, nan_mismatch, nan_both, inf_mismatch, size, step0})
        put64(out, static_cast<std::uint64_t>(v));
    put64(out, bits_of(margin));
    put64(out, static_cast<std::uint64_t>(series.size()));
    // the series in one write each (a per-byte append costs ~5 ms per 65536 steps)
    const std::size_t head = out.size(), n = series.size();
    out.resize(head + 24 * n);
    char* p = out.data() + head;
    for (std::size_t k = 0; k < n; ++k) put64_at(p + 8 * k, bits_of(series[k]));
    p += 8 * n;
    for (std::size_t k = 0; k < n; ++k) put64_at(p + 8 * k, static_cast<std::uint64_t>(series_over[k]));
    p += 8 * n;
    for (std::size_t k = 0; k < n; ++k) put64_at(p + 8 * k, bits_of(series_margin[k]));
    return out;
}

Stats Stats::from_bytes(const char* data, std::size_t len) {
    if (len < WIRE_HEAD) bad("length", "truncated: " + std::to_string(len) + " bytes");
    auto i64 = [&](std::size_t k) { return static_cast<std::int64_t>(get64(data + 8 * k)); };
    auto f64 = [&](std::size_t k) { return double_of(get64(data + 8 * k)); };
    const std::int64_t n = i64(16);
    // the length must match before anything is allocated: n entries take 24 bytes each
    if (n < 0 || static_cast<std::uint64_t>(n) > (len - WIRE_HEAD) / 24 ||
        len != WIRE_HEAD + 24 * static_cast<std::size_t>(n))
        bad("series length", std::to_string(n) + " does not match " + std::to_string(len) + " bytes");
    Stats s;
    s.max_abs = f64(0);
    s.mag_hi = get64(data + 8);
    s.mag_lo = get64(data + 16);
    s.arg_step = i64(3);
    s.arg_inner = i64(4);
    s.max_rel = f64(5);
    s.rel_step = i64(6);
    s.rel_inner = i64(7);
    s.max_ulp = get64(data + 64);
    s.count_over = i64(9);
    s.nan_mismatch = i64(10);
    s.nan_both = i64(11);
    s.inf_mismatch = i64(12);
    s.size = i64(13);
    s.step0 = i64(14);
    s.margin = f64(15);
    const auto un = static_cast<std::size_t>(n);
    s.series.resize(un);
    s.series_over.resize(un);
    s.series_margin.resize(un);
    for (std::size_t k = 0; k < un; ++k) {
        s.series[k] = f64(WIRE_FIELDS + k);
        s.series_over[k] = i64(WIRE_FIELDS + un + k);
        s.series_margin[k] = f64(WIRE_FIELDS + 2 * un + k);
    }
    // every field against the others
    for (auto [name, v] : {std::pair<const char*, std::int64_t>{"count_over", s.count_over},
                           {"nan_mismatch", s.nan_mismatch}, {"nan_both", s.nan_both},
                           {"inf_mismatch", s.inf_mismatch}, {"size", s.size}, {"step0", s.step0}})
        if (v < 0) bad(name, "negative");
    if (s.nan_mismatch > s.count_over || s.inf_mismatch > s.count_over - s.nan_mismatch)
        bad("count_over", "smaller than the NaN and inf mismatches it includes");
    if (s.count_over > s.size || s.nan_both > s.size - s.count_over)
        bad("size", "smaller than the counted elements");
    std::int64_t sum = 0;
    double smax = -1.0, mmax = 0.0;
    for (std::size_t k = 0; k < un; ++k) {
        if (s.series_over[k] < 0 || s.series_over[k] > s.count_over - sum)
            bad("series_over", "does not add up to count_over");
        sum += s.series_over[k];
        if (!(s.series[k] == -1.0 || s.series[k] >= 0.0)) bad("series", "holds an invalid value");
        smax = std::max(smax, s.series[k]);
        if (!(s.series_margin[k] >= 0.0)) bad("series_margin", "holds an invalid value");
        mmax = std::max(mmax, s.series_margin[k]);
    }
    if (sum != s.count_over) bad("count_over", "is not the sum of series_over");
    if (!(s.margin >= 0.0) || s.margin != mmax) bad("margin", "is not the maximum of series_margin");
    const std::int64_t end = s.step0 + n;
    if (n == 0 && (s.size != 0 || s.step0 != 0)) bad("size", "elements without steps");
    if (!(s.max_abs == -1.0 || s.max_abs >= 0.0) || s.max_abs != smax)
        bad("max_abs", "is not the maximum of series");
    if (s.max_abs >= 0.0) {
        if (s.arg_step < s.step0 || s.arg_step >= end) bad("arg_step", "outside the steps");
        if (s.arg_inner < 0) bad("arg_inner", "negative");
        if (!(s.max_rel >= 0.0)) bad("max_rel", "invalid with compared elements");
        if (s.rel_step < s.step0 || s.rel_step >= end) bad("rel_step", "outside the steps");
        if (s.rel_inner < 0) bad("rel_inner", "negative");
        if (s.mag() != 0 && static_cast<double>(s.mag()) != s.max_abs)
            bad("mag", "does not round to max_abs");
    } else {
        if (s.arg_step != -1 || s.arg_inner != -1 || s.rel_step != -1 || s.rel_inner != -1 ||
            s.max_rel != -1.0 || s.mag() != 0 || s.max_ulp != 0)
            bad("max_abs", "no compared element, but an argmax or maximum is set");
    }
    return s;
}

// ---- kernel selection -----------------------------------------------------------------
namespace {

// Never calls into an ISA's translation unit before the CPU is known to run it.
bool cpu_has(const std::string& isa) {
    if (isa == "scalar" || isa == "baseline") return true;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
#if defined(TOLERANCE_BUILD_AVX2)
    if (isa == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
#if defined(TOLERANCE_BUILD_AVX512)
    if (isa == "avx512")
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#endif
#endif
    return false;
}

const KernelTable* table_of(const std::string& isa) {
    if (isa == "scalar") return table_scalar();
    if (isa == "baseline") return table_baseline();
    if (isa == "avx2") return table_avx2();
    if (isa == "avx512") return table_avx512();
    return nullptr;
}

// The best path this CPU has, starting from `want` downwards ("" or unknown: the best).
const KernelTable* best_up_to(const std::string& want) {
    static const char* order[] = {"avx512", "avx2", "baseline", "scalar"};
    std::size_t start = 0;
    for (std::size_t k = 0; k < 4; ++k)
        if (want == order[k]) start = k;
    for (std::size_t k = start; k < 4; ++k)
        if (cpu_has(order[k])) return table_of(order[k]);
    return table_scalar();
}

std::atomic<const KernelTable*>& active() {
    static std::atomic<const KernelTable*> t{[] {
        const char* env = std::getenv("TOLERANCE_KERNEL");
        return best_up_to(env ? std::string(env) : std::string());
    }()};
    return t;
}

}  // namespace

std::string kernel_isa() { return active().load()->name; }

std::string set_kernel_isa(const std::string& name) {
    active().store(best_up_to(name == "auto" ? std::string() : name));
    return kernel_isa();
}

std::vector<std::string> available_isas() {
    std::vector<std::string> out;
    for (const char* isa : {"scalar", "baseline", "avx2", "avx512"})
        if (cpu_has(isa)) out.emplace_back(isa);
    return out;
}

std::vector<std::pair<std::string, std::string>> kernel_entries(const std::string& isa) {
    static const char* names[K_COUNT] = {"float16", "float32", "float64", "int8", "int16", "int32",
                                         "int64", "uint8", "uint16", "uint32", "uint64", "int128"};
    std::vector<std::pair<std::string, std::string>> out;
    if (!cpu_has(isa)) return out;
    const KernelTable* t = table_of(isa);
    if (t == nullptr) return out;
    for (int k = 0; k < K_COUNT; ++k) out.emplace_back(names[k], t->entry[k]);
    return out;
}

// ---- conversion of strided / swapped / mixed inputs -----------------------------------
namespace {

struct Half { std::uint16_t bits; };

std::size_t input_size(int code) {
    switch (code) {
        case DT_BOOL: case DT_I8: case DT_U8: return 1;
        case DT_I16: case DT_U16: case DT_F16: return 2;
        case DT_I32: case DT_U32: case DT_F32: return 4;
        default: return 8;
    }
}
std::size_t kernel_size(int k) {
    switch (k) {
        case K_I8: case K_U8: return 1;
        case K_I16: case K_U16: case K_F16: return 2;
        case K_I32: case K_U32: case K_F32: return 4;
        case K_I128: return 16;
        default: return 8;
    }
}
bool is_float(int code) { return code == DT_F16 || code == DT_F32 || code == DT_F64; }
bool is_unsigned(int code) { return code == DT_BOOL || (code >= DT_U8 && code <= DT_U64); }

bool narrow_int(int code) { return !is_float(code) && code != DT_I64 && code != DT_U64; }

int same_kernel(int code) {
    switch (code) {
        case DT_BOOL: return K_U8;
        case DT_I8: return K_I8;
        case DT_I16: return K_I16;
        case DT_I32: return K_I32;
        case DT_I64: return K_I64;
        case DT_U8: return K_U8;
        case DT_U16: return K_U16;
        case DT_U32: return K_U32;
        case DT_U64: return K_U64;
        case DT_F16: return K_F16;
        case DT_F32: return K_F32;
        default: return K_F64;
    }
}

int compute_type(int ca, int cb) {
    if (ca < 0 || ca >= DT_COUNT || cb < 0 || cb >= DT_COUNT)
        throw std::invalid_argument("unknown dtype code");
    if (is_float(ca) != is_float(cb))
        throw std::invalid_argument("cannot compare a float dtype with an integer dtype");
    // Integers of at most 32 bits are exact in float64, and so are their differences and
    // magnitudes: they run on the (vectorized) float64 kernel with identical figures.
    if (!is_float(ca) && narrow_int(ca) && narrow_int(cb)) return K_F64;
    if (same_kernel(ca) == same_kernel(cb)) return same_kernel(ca);
    if (is_float(ca)) return K_F64;
    if (is_unsigned(ca) && is_unsigned(cb)) return K_U64;
    if (ca == DT_U64 || cb == DT_U64) return K_I128;
    return K_I64;
}

template <class S>
inline S load(const char* p, bool swap) {
    S v;
    if (!swap) {
        std::memcpy(&v, p, sizeof v);
        return v;
    }
    unsigned char raw[sizeof(S)];
    for (std::size_t k = 0; k < sizeof(S); ++k) raw[k] = static_cast<unsigned char>(p[sizeof(S) - 1 - k]);
    std::memcpy(&v, raw, sizeof v);
    return v;
}

template <class D, class S>
inline D convert(S s) {
    if constexpr (std::is_same<S, Half>::value) {
        if constexpr (std::is_same<D, double>::value) return rules::half_to_double(s.bits);
        else if constexpr (std::is_same<D, std::uint16_t>::value) return s.bits;
        else return D{};
    } else if constexpr (std::is_same<S, bool>::value) {
        return static_cast<D>(s ? 1 : 0);
    } else {
        return static_cast<D>(s);
    }
}

template <class D, class S>
void gather_t(const char* p, std::int64_t stride, bool swap, std::size_t m, D* out) {
    for (std::size_t e = 0; e < m; ++e) {
        S s;
        if constexpr (std::is_same<S, Half>::value) s.bits = load<std::uint16_t>(p, swap);
        else if constexpr (std::is_same<S, bool>::value) s = load<std::uint8_t>(p, false) != 0;
        else s = load<S>(p, swap);
        out[e] = convert<D, S>(s);
        p += stride;
    }
}

template <class D>
void gather(const char* p, std::int64_t stride, int code, bool swap, std::size_t m, D* out) {
    switch (code) {
        case DT_BOOL: return gather_t<D, bool>(p, stride, swap, m, out);
        case DT_I8: return gather_t<D, std::int8_t>(p, stride, swap, m, out);
        case DT_I16: return gather_t<D, std::int16_t>(p, stride, swap, m, out);
        case DT_I32: return gather_t<D, std::int32_t>(p, stride, swap, m, out);
        case DT_I64: return gather_t<D, std::int64_t>(p, stride, swap, m, out);
        case DT_U8: return gather_t<D, std::uint8_t>(p, stride, swap, m, out);
        case DT_U16: return gather_t<D, std::uint16_t>(p, stride, swap, m, out);
        case DT_U32: return gather_t<D, std::uint32_t>(p, stride, swap, m, out);
        case DT_U64: return gather_t<D, std::uint64_t>(p, stride, swap, m, out);
        case DT_F16: return gather_t<D, Half>(p, stride, swap, m, out);
        case DT_F32: return gather_t<D, float>(p, stride, swap, m, out);
        default: return gather_t<D, double>(p, stride, swap, m, out);
    }
}

void gather_k(int k, const char* p, std::int64_t stride, int code, bool swap, std::size_t m,
              void* out) {
    switch (k) {
        case K_F16: return gather(p, stride, code, swap, m, static_cast<std::uint16_t*>(out));
        case K_F32: return gather(p, stride, code, swap, m, static_cast<float*>(out));
        case K_F64: return gather(p, stride, code, swap, m, static_cast<double*>(out));
        case K_I8: return gather(p, stride, code, swap, m, static_cast<std::int8_t*>(out));
        case K_I16: return gather(p, stride, code, swap, m, static_cast<std::int16_t*>(out));
        case K_I32: return gather(p, stride, code, swap, m, static_cast<std::int32_t*>(out));
        case K_I64: return gather(p, stride, code, swap, m, static_cast<std::int64_t*>(out));
        case K_U8: return gather(p, stride, code, swap, m, static_cast<std::uint8_t*>(out));
        case K_U16: return gather(p, stride, code, swap, m, static_cast<std::uint16_t*>(out));
        case K_U32: return gather(p, stride, code, swap, m, static_cast<std::uint32_t*>(out));
        case K_U64: return gather(p, stride, code, swap, m, static_cast<std::uint64_t*>(out));
        default: return gather(p, stride, code, swap, m, static_cast<i128*>(out));
    }
}

// ---- the walk -------------------------------------------------------------------------
struct Plan {
    const KernelTable* table;
    RunFn fn;
    SeriesFn series;  // inner size 1
    int k;
    std::size_t ksize;
    Params p;
    const char* a;
    const char* b;
    int ca, cb;
    bool swap_a, swap_b;
    bool direct_a, direct_b;  // inner rows readable in place
    std::int64_t steps, inner;
    std::int64_t sa0, sb0;                      // step strides
    std::vector<std::int64_t> dims, sa, sb;     // coalesced inner dims (C order), >= 1 dim
    std::int64_t inner_offset, step_offset;
    const double* atol_steps;  // per-step atol, or null
};

constexpr std::size_t CHUNK = 1024;

void run_row(const Plan& pl, const Params& p, const char* pa, const char* pb, std::size_t cnt,
             std::int64_t base, RunStats& rs) {
    const std::int64_t la = pl.sa.back(), lb = pl.sb.back();
    if (pl.direct_a && pl.direct_b) {
        pl.fn(pa, pb, cnt, p, rs, base);
        return;
    }
    alignas(64) unsigned char bufa[CHUNK * 16];
    alignas(64) unsigned char bufb[CHUNK * 16];
    for (std::size_t done = 0; done < cnt;) {
        const std::size_t m = std::min(CHUNK, cnt - done);
        const char* xa = pa + la * static_cast<std::int64_t>(done);
        const char* xb = pb + lb * static_cast<std::int64_t>(done);
        const void* ka = xa;
        const void* kb = xb;
        if (!pl.direct_a) { gather_k(pl.k, xa, la, pl.ca, pl.swap_a, m, bufa); ka = bufa; }
        if (!pl.direct_b) { gather_k(pl.k, xb, lb, pl.cb, pl.swap_b, m, bufb); kb = bufb; }
        pl.fn(ka, kb, m, p, rs, base + static_cast<std::int64_t>(done));
        done += m;
    }
}

// Folds the flat (step-major) element range [begin, end) into a fresh Stats.
Stats walk(const Plan& pl, std::int64_t begin, std::int64_t end) {
    Stats st;
    if (begin >= end) return st;
    const FpStateGuard fp;  // on every thread that runs a kernel
    Params p = pl.p;
    const std::int64_t last = pl.dims.back();
    const std::size_t nd = pl.dims.size();
    std::int64_t s = begin / pl.inner, i0 = begin % pl.inner;
    const std::int64_t s_last = (end - 1) / pl.inner;
    st.series.reserve(static_cast<std::size_t>(s_last - s + 1));
    st.series_over.reserve(static_cast<std::size_t>(s_last - s + 1));
    for (std::int64_t pos = begin; pos < end; ++s, i0 = 0) {
        const std::int64_t i1 = std::min(pl.inner, i0 + (end - pos));
        const std::int64_t ioff = s == 0 ? pl.inner_offset : 0;
        RunStats rs;
        rs.best_abs = st.max_abs;  // seeds: only a greater value needs an index
        rs.best_mag = st.mag();
        rs.best_rel = st.max_rel;
        if (pl.atol_steps) p.atol = pl.atol_steps[s];
        const char* pa = pl.a + s * pl.sa0;
        const char* pb = pl.b + s * pl.sb0;
        if (nd == 1) {  // one row per step: no index arithmetic
            run_row(pl, p, pa + i0 * pl.sa[0], pb + i0 * pl.sb[0], static_cast<std::size_t>(i1 - i0),
                    i0 + ioff, rs);
        } else {
            for (std::int64_t i = i0; i < i1;) {
                const std::int64_t row = i / last, col = i % last;
                const std::int64_t cnt = std::min(last - col, i1 - i);
                std::int64_t oa = col * pl.sa.back(), ob = col * pl.sb.back();
                std::int64_t r = row;
                for (std::size_t d = nd - 1; d-- > 0;) {
                    const std::int64_t idx = r % pl.dims[d];
                    r /= pl.dims[d];
                    oa += idx * pl.sa[d];
                    ob += idx * pl.sb[d];
                }
                run_row(pl, p, pa + oa, pb + ob, static_cast<std::size_t>(cnt), i + ioff, rs);
                i += cnt;
            }
        }
        st.fold_run(s + pl.step_offset, rs, i1 - i0, p);
        pos += i1 - i0;
    }
    return st;
}

// Large series arrays are written once, front to back: ask for huge pages (fewer page
// faults on first touch); a no-op where the kernel does not have them.
void advise_huge(void* p, std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const std::uintptr_t h = std::uintptr_t{2} << 20;
    if (bytes < 2 * h) return;
    const auto lo = reinterpret_cast<std::uintptr_t>(p);
    const std::uintptr_t s = (lo + h - 1) & ~(h - 1), e = (lo + bytes) & ~(h - 1);
    if (e > s) (void)madvise(reinterpret_cast<void*>(s), e - s, MADV_HUGEPAGE);
#else
    (void)p;
    (void)bytes;
#endif
}

// Inner size 1 (every element a step, e.g. a 1-D array with the default steps axis): the
// table's series kernel fills the per-step arrays block by block, with none of walk()'s
// per-step bookkeeping. The same figures as walk() (the series kernels apply the same
// rules; tests compare both against the oracle).
// `room`: steps to reserve (>= end - begin; the first of several parts reserves room for
// all, so that merging the others appends without moving it).
Stats walk_series(const Plan& pl, std::int64_t begin, std::int64_t end, std::int64_t room) {
    Stats st;
    if (begin >= end) return st;
    const FpStateGuard fp;  // on every thread that runs a kernel
    const auto n = static_cast<std::size_t>(end - begin);
    const auto r = std::max(n, static_cast<std::size_t>(room));
    st.step0 = begin + pl.step_offset;
    st.series.reserve(r);
    st.series_over.reserve(r);
    st.series_margin.reserve(r);
    advise_huge(st.series.data(), r * sizeof(double));
    advise_huge(st.series_over.data(), r * sizeof(std::int64_t));
    advise_huge(st.series_margin.data(), r * sizeof(double));
    const auto ks = static_cast<std::int64_t>(pl.ksize);
    const bool da = pl.direct_a && pl.sa0 == ks, db = pl.direct_b && pl.sb0 == ks;
    alignas(64) unsigned char bufa[CHUNK * 16];
    alignas(64) unsigned char bufb[CHUNK * 16];
    RunStats rs;
    SeriesOut out{nullptr, nullptr, nullptr, 0.0};
    for (std::int64_t s = begin; s < end;) {
        const std::size_t m = std::min<std::size_t>(CHUNK, static_cast<std::size_t>(end - s));
        const char* xa = pl.a + s * pl.sa0;
        const char* xb = pl.b + s * pl.sb0;
        const void* ka = xa;
        const void* kb = xb;
        if (!da) { gather_k(pl.k, xa, pl.sa0, pl.ca, pl.swap_a, m, bufa); ka = bufa; }
        if (!db) { gather_k(pl.k, xb, pl.sb0, pl.cb, pl.swap_b, m, bufb); kb = bufb; }
        const std::size_t at = st.series.size();
        st.series.resize(at + m);
        st.series_over.resize(at + m);
        st.series_margin.resize(at + m);
        out.series = st.series.data() + at;
        out.over = st.series_over.data() + at;
        out.margin = st.series_margin.data() + at;
        pl.series(ka, kb, m, pl.p, out, rs, s);
        s += static_cast<std::int64_t>(m);
    }
    if (rs.arg_abs >= 0) {
        st.max_abs = rs.best_abs;
        st.arg_step = rs.arg_abs + pl.step_offset;
        st.arg_inner = rs.arg_abs == 0 ? pl.inner_offset : 0;
        st.mag_hi = static_cast<std::uint64_t>(rs.best_mag >> 64);
        st.mag_lo = static_cast<std::uint64_t>(rs.best_mag);
    }
    if (rs.arg_rel >= 0) {
        st.max_rel = rs.best_rel;
        st.rel_step = rs.arg_rel + pl.step_offset;
        st.rel_inner = rs.arg_rel == 0 ? pl.inner_offset : 0;
    }
    st.max_ulp = rs.max_ulp;
    st.count_over = rs.count_over;
    st.nan_mismatch = rs.nan_mismatch;
    st.nan_both = rs.nan_both;
    st.inf_mismatch = rs.inf_mismatch;
    st.size = static_cast<std::int64_t>(n);
    st.margin = out.margin_max;
    return st;
}

}  // namespace

Stats compute(const ArrayView& a, const ArrayView& b, const std::vector<std::int64_t>& shape,
              const Request& req) {
    const Params& p_in = req.p;
    bool want_ulp = req.want_ulp;
    const std::int64_t step_offset = req.step_offset, inner_offset = req.inner_offset;
    const int threads = req.threads;
    if (shape.empty() || a.strides.size() != shape.size() || b.strides.size() != shape.size())
        throw std::invalid_argument("compute: shape and strides disagree");
    Plan pl;
    pl.k = compute_type(a.code, b.code);
    const bool same_float = is_float(a.code) && same_kernel(a.code) == same_kernel(b.code);
    want_ulp = want_ulp && same_float;
    pl.p = p_in;
    if (!want_ulp) {
        pl.p.ulp = std::numeric_limits<std::uint64_t>::max();
        pl.p.ulp_margin = -1.0;
    }
    pl.table = active().load();
    pl.fn = pl.table->fn[pl.k][want_ulp ? 1 : 0];
    pl.series = pl.table->series[pl.k][want_ulp ? 1 : 0];
    pl.ksize = kernel_size(pl.k);
    pl.a = a.data;
    pl.b = b.data;
    pl.ca = a.code;
    pl.cb = b.code;
    pl.swap_a = a.swap && input_size(a.code) > 1;
    pl.swap_b = b.swap && input_size(b.code) > 1;
    pl.steps = shape[0];
    pl.sa0 = a.strides[0];
    pl.sb0 = b.strides[0];
    pl.step_offset = step_offset;
    pl.inner_offset = inner_offset;
    pl.atol_steps = req.atol_steps;
    // Coalesce the inner dims: drop length-1 dims, merge neighbours contiguous on both sides.
    pl.inner = 1;
    for (std::size_t d = 1; d < shape.size(); ++d) {
        pl.inner *= shape[d];
        if (shape[d] == 1) continue;
        if (!pl.dims.empty() && pl.sa.back() == a.strides[d] * shape[d] &&
            pl.sb.back() == b.strides[d] * shape[d]) {
            pl.dims.back() *= shape[d];
            pl.sa.back() = a.strides[d];
            pl.sb.back() = b.strides[d];
        } else {
            pl.dims.push_back(shape[d]);
            pl.sa.push_back(a.strides[d]);
            pl.sb.push_back(b.strides[d]);
        }
    }
    if (pl.dims.empty()) {
        pl.dims.push_back(1);
        pl.sa.push_back(static_cast<std::int64_t>(input_size(a.code)));
        pl.sb.push_back(static_cast<std::int64_t>(input_size(b.code)));
    }
    const auto isz_a = static_cast<std::int64_t>(input_size(a.code));
    const auto isz_b = static_cast<std::int64_t>(input_size(b.code));
    pl.direct_a = a.code != DT_BOOL && same_kernel(a.code) == pl.k && !pl.swap_a && (pl.sa.back() == isz_a || pl.dims.back() == 1);
    pl.direct_b = b.code != DT_BOOL && same_kernel(b.code) == pl.k && !pl.swap_b && (pl.sb.back() == isz_b || pl.dims.back() == 1);

    if (pl.steps <= 0) return Stats{};
    if (pl.inner == 0) {  // steps without elements still have a series entry each
        Stats st;
        st.step0 = step_offset;
        st.series.assign(static_cast<std::size_t>(pl.steps), -1.0);
        st.series_over.assign(static_cast<std::size_t>(pl.steps), 0);
        st.series_margin.assign(static_cast<std::size_t>(pl.steps), 0.0);
        return st;
    }
    const std::int64_t total = pl.steps * pl.inner;
    constexpr std::int64_t MIN_PER_THREAD = std::int64_t{1} << 17;
    std::int64_t nt = std::max(1, threads);
    nt = std::min(nt, std::max<std::int64_t>(1, total / MIN_PER_THREAD));
    const bool one_per_step = pl.inner == 1 && pl.atol_steps == nullptr && pl.series != nullptr;
    auto run = [&pl, one_per_step, total](std::int64_t b0, std::int64_t e0) {
        return one_per_step ? walk_series(pl, b0, e0, b0 == 0 ? total : 0) : walk(pl, b0, e0);
    };
    if (nt <= 1) return run(0, total);

    std::vector<Stats> parts(static_cast<std::size_t>(nt));
    std::vector<std::exception_ptr> errs(static_cast<std::size_t>(nt));
    std::vector<std::thread> pool;
    auto bound = [&](std::int64_t t) {
        // Cut at multiples of 4096 elements so the kernels see whole vectors in each part.
        const std::int64_t cut = (total / nt) * t;
        return t == nt ? total : std::min(total, cut - cut % 4096);
    };
    for (std::int64_t t = 1; t < nt; ++t) {
        pool.emplace_back([&, t] {
            try {
                parts[static_cast<std::size_t>(t)] = run(bound(t), bound(t + 1));
            } catch (...) {
                errs[static_cast<std::size_t>(t)] = std::current_exception();
            }
        });
    }
    try {
        parts[0] = run(0, bound(1));
    } catch (...) {
        errs[0] = std::current_exception();
    }
    for (auto& th : pool) th.join();
    for (auto& e : errs)
        if (e) std::rethrow_exception(e);
    Stats st = std::move(parts[0]);
    for (std::size_t t = 1; t < parts.size(); ++t) st.merge(parts[t], 0, 0);
    return st;
}

std::uint64_t read_pass(const void* a, std::size_t abytes, const void* b, std::size_t bbytes,
                        int threads) {
    const KernelTable* t = active().load();
    const std::size_t nt = static_cast<std::size_t>(std::max(1, threads));
    if (nt == 1) return t->read_pass(a, abytes, b, bbytes);
    std::vector<std::uint64_t> out(nt);
    std::vector<std::thread> pool;
    auto part = [&](std::size_t k, std::size_t n) { return std::make_pair(n / nt * k, k + 1 == nt ? n : n / nt * (k + 1)); };
    for (std::size_t k = 0; k < nt; ++k) {
        pool.emplace_back([&, k] {
            const auto pa = part(k, abytes), pb = part(k, bbytes);
            out[k] = t->read_pass(static_cast<const char*>(a) + pa.first, pa.second - pa.first,
                                  static_cast<const char*>(b) + pb.first, pb.second - pb.first);
        });
    }
    std::uint64_t s = 0;
    for (std::size_t k = 0; k < nt; ++k) {
        pool[k].join();
        s ^= out[k];
    }
    return s;
}

}  // namespace tolerance
