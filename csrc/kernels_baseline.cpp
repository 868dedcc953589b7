// The portable kernels: x86-64 baseline (SSE2) or aarch64 (NEON, always there), 128-bit
// registers, plus the scalar path. Same source as the AVX2 and AVX-512 tables.
#define TOLERANCE_ISA_NS isa_baseline
#define TOLERANCE_LANES 2
#include "kernels_isa.hpp"

namespace tolerance {
const KernelTable* table_baseline() {
    static const KernelTable t = isa_baseline::make_table<true>("baseline");
    return &t;
}
const KernelTable* table_scalar() {
    static const KernelTable t = isa_baseline::make_table<false>("scalar");
    return &t;
}
}  // namespace tolerance
