#include "bindings.hpp"

namespace tolerance {
void bind_bootstrap(pybind11::module_& m) { (void)m; }
}  // namespace tolerance
