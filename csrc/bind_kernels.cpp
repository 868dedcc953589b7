// Registers the divergence kernels in `tolerance._native`. Only conversions happen here;
// the interpreter lock is released (scoped) around all native work.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <stdexcept>

#include "bindings.hpp"
#include "kernels.hpp"

namespace py = pybind11;

namespace tolerance {
namespace {

ArrayView view_of(const py::array& x, int code, bool swap) {
    ArrayView v;
    v.data = static_cast<const char*>(x.data());
    v.code = code;
    v.swap = swap;
    for (py::ssize_t d = 0; d < x.ndim(); ++d) v.strides.push_back(static_cast<std::int64_t>(x.strides(d)));
    return v;
}

template <class T>
py::array_t<T> to_numpy(const std::vector<T>& v) {
    py::array_t<T> out(static_cast<py::ssize_t>(v.size()));
    if (!v.empty()) std::memcpy(out.mutable_data(), v.data(), v.size() * sizeof(T));
    return out;
}

template <class T>
std::vector<T> from_numpy(const py::array_t<T, py::array::c_style | py::array::forcecast>& a) {
    if (a.ndim() != 1) throw std::invalid_argument("series must be one-dimensional");
    return std::vector<T>(a.data(), a.data() + a.size());
}

}  // namespace

void bind_kernels(py::module_& m) {
    py::class_<Stats>(m, "Stats", "Partial divergence statistics (merge is associative).")
        .def(py::init<>())
        .def_readwrite("max_abs", &Stats::max_abs)
        .def_readwrite("arg_step", &Stats::arg_step)
        .def_readwrite("arg_inner", &Stats::arg_inner)
        .def_readwrite("max_rel", &Stats::max_rel)
        .def_readwrite("rel_step", &Stats::rel_step)
        .def_readwrite("rel_inner", &Stats::rel_inner)
        .def_readwrite("max_ulp", &Stats::max_ulp)
        .def_readwrite("count_over", &Stats::count_over)
        .def_readwrite("nan_mismatch", &Stats::nan_mismatch)
        .def_readwrite("nan_both", &Stats::nan_both)
        .def_readwrite("inf_mismatch", &Stats::inf_mismatch)
        .def_readwrite("size", &Stats::size)
        .def_readwrite("step0", &Stats::step0)
        .def_property(
            "series", [](const Stats& s) { return to_numpy(s.series); },
            [](Stats& s, const py::array_t<double, py::array::c_style | py::array::forcecast>& a) {
                s.series = from_numpy<double>(a);
            })
        .def_property(
            "series_over", [](const Stats& s) { return to_numpy(s.series_over); },
            [](Stats& s, const py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>& a) {
                s.series_over = from_numpy<std::int64_t>(a);
            })
        .def("copy", [](const Stats& s) { return Stats(s); })
        .def("merge",
             [](Stats& s, const Stats& o, std::int64_t step_shift, std::int64_t inner_shift) {
                 s.merge(o, step_shift, inner_shift);
             },
             py::arg("other"), py::arg("step_shift") = 0, py::arg("inner_shift") = 0);

    m.def(
        "compute",
        [](const py::array& a, int ca, bool swap_a, const py::array& b, int cb, bool swap_b,
           double atol, double rtol, std::uint64_t ulp, bool want_ulp, std::int64_t step_offset,
           std::int64_t inner_offset, int threads) {
            if (a.ndim() < 1 || a.ndim() != b.ndim())
                throw std::invalid_argument("compute: arrays need the same number (>= 1) of dims");
            std::vector<std::int64_t> shape;
            for (py::ssize_t d = 0; d < a.ndim(); ++d) {
                if (a.shape(d) != b.shape(d)) throw std::invalid_argument("compute: shapes differ");
                shape.push_back(static_cast<std::int64_t>(a.shape(d)));
            }
            const ArrayView va = view_of(a, ca, swap_a), vb = view_of(b, cb, swap_b);
            Params p;
            p.atol = atol;
            p.rtol = rtol;
            p.ulp = ulp;
            Stats st;
            {
                py::gil_scoped_release nogil;
                st = compute(va, vb, shape, p, want_ulp, step_offset, inner_offset, threads);
            }
            return st;
        },
        py::arg("a"), py::arg("a_code"), py::arg("a_swap"), py::arg("b"), py::arg("b_code"),
        py::arg("b_swap"), py::arg("atol"), py::arg("rtol"), py::arg("ulp"), py::arg("want_ulp"),
        py::arg("step_offset"), py::arg("inner_offset"), py::arg("threads"),
        "Divergence statistics of a, b (steps axis first; any strides). ulp=2**64-1: no ULP bound.");

    m.def(
        "_read_bandwidth",
        [](const py::array& a, const py::array& b, int threads) {
            for (const py::array* x : {&a, &b})
                if (!(x->flags() & py::array::c_style))
                    throw std::invalid_argument("_read_bandwidth needs C-contiguous arrays");
            const void* pa = a.data();
            const void* pb = b.data();
            const auto na = static_cast<std::size_t>(a.nbytes()), nb = static_cast<std::size_t>(b.nbytes());
            py::gil_scoped_release nogil;
            return read_pass(pa, na, pb, nb, threads);
        },
        py::arg("a"), py::arg("b"), py::arg("threads") = 1,
        "A read-only pass over the bytes of a and b (the memory ceiling); returns a checksum.");

    m.def("kernel_isa", &kernel_isa, "The kernel path in force: scalar, baseline, avx2 or avx512.");
    m.def("_set_kernel", &set_kernel_isa, py::arg("name"),
          "Force a kernel path ('auto' for the best); returns the path in force (a path this "
          "CPU lacks falls back to the best one it has).");
    m.def("_available_kernels", &available_isas, "The kernel paths this CPU can run.");
}

}  // namespace tolerance
