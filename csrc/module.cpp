#include "bindings.hpp"

PYBIND11_MODULE(_native, m) {
    m.doc() = "tolerance private native core: divergence kernels, bootstrap mailbox, chip bring-up";
    tolerance::bind_kernels(m);
    tolerance::bind_bootstrap(m);
}
