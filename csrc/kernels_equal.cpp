// The equal-block entry (kernels_equal.hpp): an array against itself in one pass.
//
// compute(x, x) compares every element with itself: a NaN is NaN against NaN (nan_both,
// not compared), every other element is equal (|a-b| = 0, relative 0, ULP 0, inside any
// bound, no margin). So the statistics follow from the NaN count of every step and the
// index of the first element that is not NaN (the argmax of a maximum 0: ties go to the
// lowest index). This file counts exactly that (a NaN test no FTZ/DAZ state can change)
// and builds the Stats compute() would.
#include <algorithm>
#include <stdexcept>

#include "kernels_equal.hpp"

namespace tolerance {
namespace {

// ---- NaN on the raw bits --------------------------------------------------------------
template <class U> struct FloatBits;
template <> struct FloatBits<std::uint16_t> {  // binary16
    static constexpr std::uint16_t ABS = 0x7fffu, INF = 0x7c00u;
    static std::uint16_t swap(std::uint16_t u) { return __builtin_bswap16(u); }
};
template <> struct FloatBits<std::uint32_t> {  // binary32
    static constexpr std::uint32_t ABS = 0x7fffffffu, INF = 0x7f800000u;
    static std::uint32_t swap(std::uint32_t u) { return __builtin_bswap32(u); }
};
template <> struct FloatBits<std::uint64_t> {  // binary64
    static constexpr std::uint64_t ABS = 0x7fffffffffffffffull, INF = 0x7ff0000000000000ull;
    static std::uint64_t swap(std::uint64_t u) { return __builtin_bswap64(u); }
};

template <class U>
inline bool nan_bits(U u) { return static_cast<U>(u & FloatBits<U>::ABS) > FloatBits<U>::INF; }
template <class U>
inline U load_bits(const char* p, bool swap) {
    U u;
    std::memcpy(&u, p, sizeof u);
    return swap ? FloatBits<U>::swap(u) : u;
}

// The hot loops: NaNs among elements [k, n) of a contiguous, native-order row, counted in
// signed lanes as wide as the element (0 - mask per NaN) and summed every 2^14 elements
// (no lane overflows); written so that the compiler vectorizes them. On x86-64 Linux each
// is also compiled for AVX-512 (x86-64-v4: 64-byte lanes, about 1.5x the AVX2 clone's speed
// on an in-cache piece) and AVX2, the best one the CPU has picked at load time (a count:
// every path gives the same).
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define TOLERANCE_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define TOLERANCE_CLONES
#endif
#define TOLERANCE_HOT_NANS(NAME, S, ABS, INF)                                           \
    TOLERANCE_CLONES std::int64_t NAME(const char* p, std::int64_t k, std::int64_t n) { \
        std::int64_t c = 0;                                                             \
        for (std::int64_t i = k; i < n;) {                                              \
            const std::int64_t e = std::min(n, i + (std::int64_t{1} << 14));            \
            S lanes = 0;                                                                \
            for (; i < e; ++i) {                                                        \
                S v;                                                                    \
                std::memcpy(&v, p + i * static_cast<std::int64_t>(sizeof(S)), sizeof v);  \
                lanes = static_cast<S>(lanes + ((v & (ABS)) > (INF) ? 1 : 0));          \
            }                                                                           \
            c += static_cast<std::int64_t>(lanes);                                      \
        }                                                                               \
        return c;                                                                       \
    }
TOLERANCE_HOT_NANS(hot_nans16, std::int16_t, 0x7fff, 0x7c00)
TOLERANCE_HOT_NANS(hot_nans32, std::int32_t, 0x7fffffff, 0x7f800000)
TOLERANCE_HOT_NANS(hot_nans64, std::int64_t, 0x7fffffffffffffffll, 0x7ff0000000000000ll)
#undef TOLERANCE_HOT_NANS

template <class U> std::int64_t hot_nans(const char* p, std::int64_t k, std::int64_t n);
template <> std::int64_t hot_nans<std::uint16_t>(const char* p, std::int64_t k, std::int64_t n) { return hot_nans16(p, k, n); }
template <> std::int64_t hot_nans<std::uint32_t>(const char* p, std::int64_t k, std::int64_t n) { return hot_nans32(p, k, n); }
template <> std::int64_t hot_nans<std::uint64_t>(const char* p, std::int64_t k, std::int64_t n) { return hot_nans64(p, k, n); }

// NaNs among the n elements at p (byte stride `stride`). When `first` is < 0 on entry it
// is set to the offset of the first element that is not NaN, if there is one.
template <class U>
std::int64_t row_nans(const char* p, std::int64_t stride, std::int64_t n, bool swap,
                      std::int64_t& first) {
    std::int64_t k = 0, nans = 0;
    if (first < 0) {  // usually the very first element
        for (; k < n; ++k) {
            if (!nan_bits(load_bits<U>(p + k * stride, swap))) {
                first = k++;
                break;
            }
            ++nans;
        }
    }
    if (!swap && stride == static_cast<std::int64_t>(sizeof(U))) {
        // the hot loop: contiguous, native order (vectorized by the compiler)
        return nans + hot_nans<U>(p, k, n);
    }
    for (std::int64_t i = k; i < n; ++i) nans += nan_bits(load_bits<U>(p + i * stride, swap)) ? 1 : 0;
    return nans;
}

using RowFn = std::int64_t (*)(const char*, std::int64_t, std::int64_t, bool, std::int64_t&);

// The array as steps x (coalesced inner dims, C order).
struct Layout {
    const char* data;
    bool swap;
    RowFn row;  // null: an integer or bool array (never NaN: not read)
    std::int64_t steps, inner, s0;
    std::vector<std::int64_t> dims, strides;  // >= 1 dim
};

// The NaNs of every step, and the flat index of the first element that is not NaN (-1:
// none), of the array's `total` elements.
struct Scan {
    std::vector<std::int64_t> nans;
    std::int64_t first = -1;
};

Scan scan(const Layout& L, std::int64_t total) {
    Scan out;
    out.nans.reserve(static_cast<std::size_t>(L.steps));
    const std::int64_t last = L.dims.back();
    const std::size_t nd = L.dims.size();
    for (std::int64_t s = 0; s * L.inner < total; ++s) {
        std::int64_t nans = 0;
        if (L.row == nullptr) {
            if (out.first < 0) out.first = s * L.inner;
        } else {
            const char* ps = L.data + s * L.s0;
            for (std::int64_t i = 0; i < L.inner;) {
                const std::int64_t row = i / last, col = i % last;
                const std::int64_t cnt = std::min(last - col, L.inner - i);
                std::int64_t off = col * L.strides.back();
                std::int64_t r = row;
                for (std::size_t d = nd - 1; d-- > 0;) {
                    off += (r % L.dims[d]) * L.strides[d];
                    r /= L.dims[d];
                }
                std::int64_t f = out.first < 0 ? -1 : 0;
                nans += L.row(ps + off, L.strides.back(), cnt, L.swap, f);
                if (out.first < 0 && f >= 0) out.first = s * L.inner + i + f;
                i += cnt;
            }
        }
        out.nans.push_back(nans);
    }
    return out;
}

}  // namespace

Stats compute_equal(const ArrayView& x, const std::vector<std::int64_t>& shape, const Request& req) {
    if (shape.empty() || x.strides.size() != shape.size())
        throw std::invalid_argument("compute_equal: shape and strides disagree");
    if (x.code < 0 || x.code >= DT_COUNT) throw std::invalid_argument("unknown dtype code");
    Layout L;
    L.data = x.data;
    L.swap = x.swap;
    std::int64_t isz = 1;
    switch (x.code) {
        case DT_F16: L.row = &row_nans<std::uint16_t>; isz = 2; break;
        case DT_F32: L.row = &row_nans<std::uint32_t>; isz = 4; break;
        case DT_F64: L.row = &row_nans<std::uint64_t>; isz = 8; break;
        default: L.row = nullptr;  // integers and bool: no NaN
    }
    L.steps = shape[0];
    L.s0 = x.strides[0];
    L.inner = 1;
    for (std::size_t d = 1; d < shape.size(); ++d) {
        L.inner *= shape[d];
        if (shape[d] == 1) continue;
        if (!L.dims.empty() && L.strides.back() == x.strides[d] * shape[d]) {
            L.dims.back() *= shape[d];
            L.strides.back() = x.strides[d];
        } else {
            L.dims.push_back(shape[d]);
            L.strides.push_back(x.strides[d]);
        }
    }
    if (L.dims.empty()) {
        L.dims.push_back(1);
        L.strides.push_back(isz);
    }

    Stats st;
    if (L.steps <= 0) return st;
    const auto steps = static_cast<std::size_t>(L.steps);
    st.step0 = req.step_offset;
    st.series.assign(steps, -1.0);
    st.series_over.assign(steps, 0);
    st.series_margin.assign(steps, 0.0);
    if (L.inner == 0) return st;  // steps without elements: a series entry each, nothing else
    const std::int64_t total = L.steps * L.inner;

    // one thread: the pass runs at memory speed (and beside the digest, which has one)
    const Scan sc = scan(L, total);
    for (std::size_t s = 0; s < steps; ++s) {
        st.nan_both += sc.nans[s];
        if (sc.nans[s] < L.inner) st.series[s] = 0.0;  // a compared pair, 0 apart
    }
    const std::int64_t first = sc.first;
    st.size = total;
    if (first >= 0) {  // the maxima (0) are first reached at the first compared element
        const std::int64_t s = first / L.inner, i = first % L.inner;
        st.max_abs = 0.0;
        st.max_rel = 0.0;
        st.arg_step = st.rel_step = s + req.step_offset;
        st.arg_inner = st.rel_inner = i + (s == 0 ? req.inner_offset : 0);
    }
    return st;
}

}  // namespace tolerance
