// The kernels compiled for AVX-512 (F, BW, DQ, VL) (flags set for this file in CMakeLists.txt; built
// only where the compiler targets x86-64 and accepts them). Same source as the baseline.
#include "kernels.hpp"

#if defined(TOLERANCE_BUILD_AVX512)
#define TOLERANCE_ISA_NS isa_avx512
#define TOLERANCE_LANES 8  // 512-bit registers
#include "kernels_isa.hpp"

namespace tolerance {
const KernelTable* table_avx512() {
    static const KernelTable t = isa_avx512::make_table<true>("avx512");
    return &t;
}
}  // namespace tolerance
#else
namespace tolerance {
const KernelTable* table_avx512() { return nullptr; }
}  // namespace tolerance
#endif
