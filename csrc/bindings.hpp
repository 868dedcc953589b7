// Registration hooks of the private module `tolerance._native`.
// Each bind_*.cpp registers one area; module.cpp only calls them.
#pragma once
#include <pybind11/pybind11.h>

namespace tolerance {
void bind_kernels(pybind11::module_& m);    // bind_kernels.cpp: divergence kernels, accumulator
void bind_bootstrap(pybind11::module_& m);  // bind_bootstrap.cpp: mailbox, chip bring-up
}  // namespace tolerance
