// Whole-array driver: walks any strides and byte orders, converts what the contiguous
// kernels cannot read directly in small buffers, splits large inputs across threads and
// merges the partial statistics in index order. Compiled for the baseline ISA.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <thread>

#include "kernels.hpp"

namespace tolerance {

// ---- Stats ----------------------------------------------------------------------------
void Stats::fold_run(std::int64_t step, const RunStats& rs, std::int64_t n) {
    if (series.empty()) step0 = step;
    while (step0 + static_cast<std::int64_t>(series.size()) <= step) {
        series.push_back(-1.0);
        series_over.push_back(0);
    }
    const std::size_t k = static_cast<std::size_t>(step - step0);
    if (rs.run_max > series[k]) series[k] = rs.run_max;
    series_over[k] += rs.count_over;
    // rs was seeded with max_abs / max_rel: an index means a strictly greater value
    if (rs.arg_abs >= 0 && rs.best_abs > max_abs) { max_abs = rs.best_abs; arg_step = step; arg_inner = rs.arg_abs; }
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
    if (o.max_abs > max_abs) {
        max_abs = o.max_abs;
        arg_step = o.arg_step + step_shift;
        arg_inner = shift_inner(arg_step, o.arg_inner);
    }
    if (o.max_rel > max_rel) {
        max_rel = o.max_rel;
        rel_step = o.rel_step + step_shift;
        rel_inner = shift_inner(rel_step, o.rel_inner);
    }
    if (o.max_ulp > max_ulp) max_ulp = o.max_ulp;
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
        return;
    }
    const std::int64_t end = step0 + static_cast<std::int64_t>(series.size());
    std::size_t from = 0;
    if (ostep0 == end - 1) {  // shared boundary step
        if (o.series[0] > series.back()) series.back() = o.series[0];
        series_over.back() += o.series_over[0];
        from = 1;
    } else if (ostep0 != end) {
        throw std::invalid_argument("merge: the other statistics do not start where these end");
    }
    series.insert(series.end(), o.series.begin() + static_cast<std::ptrdiff_t>(from), o.series.end());
    series_over.insert(series_over.end(), o.series_over.begin() + static_cast<std::ptrdiff_t>(from),
                       o.series_over.end());
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
};

constexpr std::size_t CHUNK = 1024;

void run_row(const Plan& pl, const char* pa, const char* pb, std::size_t cnt, std::int64_t base,
             RunStats& rs) {
    const std::int64_t la = pl.sa.back(), lb = pl.sb.back();
    if (pl.direct_a && pl.direct_b) {
        pl.fn(pa, pb, cnt, pl.p, rs, base);
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
        pl.fn(ka, kb, m, pl.p, rs, base + static_cast<std::int64_t>(done));
        done += m;
    }
}

// Folds the flat (step-major) element range [begin, end) into a fresh Stats.
Stats walk(const Plan& pl, std::int64_t begin, std::int64_t end) {
    Stats st;
    if (begin >= end) return st;
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
        rs.best_rel = st.max_rel;
        const char* pa = pl.a + s * pl.sa0;
        const char* pb = pl.b + s * pl.sb0;
        if (nd == 1) {  // one row per step: no index arithmetic
            run_row(pl, pa + i0 * pl.sa[0], pb + i0 * pl.sb[0], static_cast<std::size_t>(i1 - i0),
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
                run_row(pl, pa + oa, pb + ob, static_cast<std::size_t>(cnt), i + ioff, rs);
                i += cnt;
            }
        }
        st.fold_run(s + pl.step_offset, rs, i1 - i0);
        pos += i1 - i0;
    }
    return st;
}

}  // namespace

Stats compute(const ArrayView& a, const ArrayView& b, const std::vector<std::int64_t>& shape,
              const Params& p_in, bool want_ulp, std::int64_t step_offset,
              std::int64_t inner_offset, int threads) {
    if (shape.empty() || a.strides.size() != shape.size() || b.strides.size() != shape.size())
        throw std::invalid_argument("compute: shape and strides disagree");
    Plan pl;
    pl.k = compute_type(a.code, b.code);
    const bool same_float = is_float(a.code) && same_kernel(a.code) == same_kernel(b.code);
    want_ulp = want_ulp && same_float;
    pl.p = p_in;
    if (!want_ulp) pl.p.ulp = std::numeric_limits<std::uint64_t>::max();
    pl.table = active().load();
    pl.fn = pl.table->fn[pl.k][want_ulp ? 1 : 0];
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
        return st;
    }
    const std::int64_t total = pl.steps * pl.inner;
    constexpr std::int64_t MIN_PER_THREAD = std::int64_t{1} << 17;
    std::int64_t nt = std::max(1, threads);
    nt = std::min(nt, std::max<std::int64_t>(1, total / MIN_PER_THREAD));
    if (nt <= 1) return walk(pl, 0, total);

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
                parts[static_cast<std::size_t>(t)] = walk(pl, bound(t), bound(t + 1));
            } catch (...) {
                errs[static_cast<std::size_t>(t)] = std::current_exception();
            }
        });
    }
    try {
        parts[0] = walk(pl, 0, bound(1));
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
