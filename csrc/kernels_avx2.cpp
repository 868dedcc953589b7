// The kernels compiled for AVX2 + FMA (flags set for this file in CMakeLists.txt; built
// only where the compiler targets x86-64 and accepts them). Same source as the baseline.
#include "kernels.hpp"

#if defined(TOLERANCE_BUILD_AVX2)
#define TOLERANCE_ISA_NS isa_avx2
#define TOLERANCE_LANES 4
#include "kernels_isa.hpp"

namespace tolerance {
const KernelTable* table_avx2() {
    static const KernelTable t = isa_avx2::make_table<true>("avx2");
    return &t;
}
}  // namespace tolerance
#else
namespace tolerance {
const KernelTable* table_avx2() { return nullptr; }
}  // namespace tolerance
#endif
