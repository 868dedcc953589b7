// Kernel test vectors without Python: builds deterministic cases (every dtype pair class,
// specials: +-0, subnormals, inf, NaN, integer extremes; bounds unset/zero/set, per-step
// atol), runs them on every kernel path this CPU has, checks that the paths agree bit for
// bit, and prints one line per case: the statistics' wire bytes in hex. The CI runs it
// natively (x86-64) and cross-built for aarch64 under qemu-user and requires the two
// outputs to be identical. With FTZ/DAZ (MXCSR) or FZ (FPCR) set by the caller, the
// figures must not change either: every case also runs with that state set.
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "kernels.hpp"

using namespace tolerance;

namespace {

std::uint64_t rng_state = 0x9e3779b97f4a7c15ull;  // fixed seed (golden-ratio constant)
std::uint64_t next_u64() {  // splitmix64: a well-mixed, portable generator
    std::uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

std::size_t size_of(int code) {
    switch (code) {
        case DT_BOOL: case DT_I8: case DT_U8: return 1;
        case DT_I16: case DT_U16: case DT_F16: return 2;
        case DT_I32: case DT_U32: case DT_F32: return 4;
        default: return 8;
    }
}

// One element's bytes: a special value a quarter of the time, else random bits near `base`.
void fill(int code, std::vector<char>& out, std::size_t n, const std::vector<char>* like) {
    const std::size_t w = size_of(code);
    out.assign(n * w, 0);
    for (std::size_t k = 0; k < n; ++k) {
        char* p = out.data() + k * w;
        const std::uint64_t r = next_u64();
        if (like && (r & 3u) != 0) {  // mostly a copy of `like`, nudged in the low bits
            std::memcpy(p, like->data() + k * w, w);
            if ((r & 12u) == 4u) p[0] = static_cast<char>(p[0] ^ 1);
            continue;
        }
        if (code == DT_F64) {
            static const double sp[] = {0.0, -0.0, 5e-324, -5e-324, 1.0, -3.0,
                                        std::numeric_limits<double>::infinity(),
                                        -std::numeric_limits<double>::infinity(),
                                        std::numeric_limits<double>::quiet_NaN(), 1.7976931348623157e308};
            double v = (r >> 8) % 3 == 0 ? sp[(r >> 16) % 10]
                                          : static_cast<double>(static_cast<std::int64_t>(r >> 20)) * 0x1p-30;
            std::memcpy(p, &v, w);
        } else if (code == DT_F32) {
            static const float sp[] = {0.0f, -0.0f, 1e-45f, -1e-45f, 1.0f, -3.0f,
                                       std::numeric_limits<float>::infinity(),
                                       std::numeric_limits<float>::quiet_NaN(), 3.4028235e38f, 2e-38f};
            float v = (r >> 8) % 3 == 0 ? sp[(r >> 16) % 10]
                                         : static_cast<float>(static_cast<std::int32_t>(r >> 40)) * 0x1p-12f;
            std::memcpy(p, &v, w);
        } else if (code == DT_F16) {
            static const std::uint16_t sp[] = {0x0000, 0x8000, 0x0001, 0x8001, 0x3c00, 0xc200,
                                               0x7c00, 0x7e00, 0x7bff, 0x0400};
            std::uint16_t v = (r >> 8) % 3 == 0 ? sp[(r >> 16) % 10]
                                                 : static_cast<std::uint16_t>((r >> 24) & 0x3fffu);
            std::memcpy(p, &v, w);
        } else {
            std::uint64_t v = r;
            if ((r >> 8) % 4 == 0) v = (r >> 16) % 2 ? ~std::uint64_t{0} >> 1 : std::uint64_t{1} << 63;
            if (code == DT_BOOL) v &= 1u;
            std::memcpy(p, &v, w);  // little-endian low bytes on both targets
        }
    }
}

// int64 / uint64 pairs of small magnitude (the vector blocks of kernels_dtypes.hpp): values
// below 2^40, b = a + 0..3 mostly; one block in three also holds an extreme value (the exact
// scalar path).
void fill_small_int(int code, std::vector<char>& a, std::vector<char>& b, std::size_t n) {
    a.assign(n * 8, 0);
    b.assign(n * 8, 0);
    for (std::size_t k = 0; k < n; ++k) {
        const std::uint64_t r = next_u64();
        std::uint64_t x = r >> 24;
        if (code == DT_I64 && (r & 1u)) x = static_cast<std::uint64_t>(-static_cast<std::int64_t>(x));
        std::uint64_t y = x + ((r >> 8) & 3u);
        if ((r >> 12) % 16 == 0) y = x + (x >> 2);  // far apart
        if ((k / 1024) % 3 == 2 && (r >> 20) % 512 == 0) y = std::uint64_t{1} << 63;
        std::memcpy(a.data() + 8 * k, &x, 8);
        std::memcpy(b.data() + 8 * k, &y, 8);
    }
}

std::string hex(const std::string& s) {
    static const char* d = "0123456789abcdef";
    std::string out;
    for (char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        out.push_back(d[c >> 4]);
        out.push_back(d[c & 15]);
    }
    return out;
}

void set_flush(bool on) {
#if defined(__x86_64__)
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(on ? (csr | 0x8040u) : (csr & ~0x8040u));  // FTZ (bit 15) | DAZ (bit 6)
#elif defined(__aarch64__)
    std::uint64_t fpcr;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
    const std::uint64_t fz = std::uint64_t{1} << 24;  // FPCR.FZ
    fpcr = on ? (fpcr | fz) : (fpcr & ~fz);
    __asm__ __volatile__("msr fpcr, %0" : : "r"(fpcr));
#else
    (void)on;
#endif
}

}  // namespace

int main() {
    const std::vector<std::pair<int, int>> pairs = {
        {DT_F64, DT_F64}, {DT_F32, DT_F32}, {DT_F16, DT_F16}, {DT_F32, DT_F64}, {DT_I64, DT_I64},
        {DT_U64, DT_U64}, {DT_I64, DT_U64}, {DT_I32, DT_I32}, {DT_I8, DT_U16}, {DT_BOOL, DT_BOOL},
        {-DT_I64, -DT_I64}, {-DT_U64, -DT_U64}};  // negative: small magnitudes (fill_small_int)
    const double inf = std::numeric_limits<double>::infinity();
    const std::uint64_t none = std::numeric_limits<std::uint64_t>::max();
    struct B { double atol, rtol; std::uint64_t ulp; bool steps; };
    const std::vector<B> bounds = {{0.0, 0.0, none, false}, {1e-3, 0.0, none, false},
                                   {0.0, 1e-3, none, false}, {1e-6, 0.5, 4, false},
                                   {inf, 0.0, 1, false}, {0.0, 0.0, 0, true}, {0.25, 1e-9, none, true}};
    const std::vector<std::pair<std::int64_t, std::int64_t>> shapes = {{1, 3}, {5, 17}, {3, 1031}, {40, 64}, {1, 5000},
                                                                       {2100, 1}};  // one element a step
    std::vector<std::string> paths;
    for (const std::string& isa : available_isas()) paths.push_back(isa);
    int bad = 0, cases = 0;
    for (auto pr : pairs) {
        const bool small = pr.first < 0;
        pr = {std::abs(pr.first), std::abs(pr.second)};
        for (const auto& sh : shapes) {
            const std::size_t n = static_cast<std::size_t>(sh.first * sh.second);
            std::vector<char> a, b;
            if (small) {
                fill_small_int(pr.first, a, b, n);
            } else {
                fill(pr.first, a, n, nullptr);
                fill(pr.second, b, n, pr.first == pr.second ? &a : nullptr);
            }
            for (const B& bd : bounds) {
                const bool is_float = pr.first >= DT_F16;
                if (bd.ulp != none && !(is_float && pr.first == pr.second)) continue;
                std::vector<double> at(static_cast<std::size_t>(sh.first));
                for (std::size_t s = 0; s < at.size(); ++s) at[s] = bd.atol + 1e-4 * static_cast<double>(s);
                Request req;
                req.p.atol = bd.atol;
                req.p.rtol = bd.rtol;
                req.p.ulp = bd.ulp;
                req.p.ulp_margin = bd.ulp == none ? -1.0 : static_cast<double>(bd.ulp);
                req.want_ulp = is_float && pr.first == pr.second;
                req.atol_steps = bd.steps ? at.data() : nullptr;
                const std::vector<std::int64_t> shape = {sh.first, sh.second};
                ArrayView va{a.data(), {sh.second * static_cast<std::int64_t>(size_of(pr.first)),
                                        static_cast<std::int64_t>(size_of(pr.first))}, pr.first, false};
                ArrayView vb{b.data(), {sh.second * static_cast<std::int64_t>(size_of(pr.second)),
                                        static_cast<std::int64_t>(size_of(pr.second))}, pr.second, false};
                std::string first;
                for (const std::string& isa : paths) {
                    set_kernel_isa(isa);
                    for (int threads : {1, 2}) {
                        for (bool flush : {false, true}) {
                            req.threads = threads;
                            set_flush(flush);
                            const std::string got = compute(va, vb, shape, req).to_bytes();
                            set_flush(false);
                            if (first.empty()) first = got;
                            if (got != first) {
                                std::fprintf(stderr, "case %d: path %s threads %d flush %d differs\n",
                                             cases, isa.c_str(), threads, flush ? 1 : 0);
                                ++bad;
                            }
                        }
                    }
                }
                std::printf("%d %d %lldx%lld %g %g %llu %d %s\n", pr.first, pr.second,
                            static_cast<long long>(sh.first), static_cast<long long>(sh.second),
                            bd.atol, bd.rtol, static_cast<unsigned long long>(bd.ulp),
                            bd.steps ? 1 : 0, hex(first).c_str());
                ++cases;
            }
        }
    }
    std::fprintf(stderr, "%d cases on paths", cases);
    for (const std::string& isa : paths) std::fprintf(stderr, " %s", isa.c_str());
    std::fprintf(stderr, ": %d disagreements\n", bad);
    return bad == 0 ? 0 : 1;
}
