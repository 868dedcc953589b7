// Registers the divergence kernels in `tolerance._native`. Only conversions happen here;
// the interpreter lock is released (scoped) around all native work.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <stdexcept>

#include "bindings.hpp"
#include "kernels.hpp"
#include "kernels_equal.hpp"

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

template <class T, class A>
py::array_t<T> to_numpy(const std::vector<T, A>& v) {
    py::array_t<T> out(static_cast<py::ssize_t>(v.size()));
    if (!v.empty()) std::memcpy(out.mutable_data(), v.data(), v.size() * sizeof(T));
    return out;
}

// Moves v into a NumPy array that owns it (no copy; v is left empty).
template <class T, class A>
py::array_t<T> take_numpy(std::vector<T, A>& v) {
    if (v.empty()) return py::array_t<T>(0);
    auto* h = new std::vector<T, A>(std::move(v));
    v.clear();
    py::capsule owner(h, [](void* q) { delete static_cast<std::vector<T, A>*>(q); });
    return py::array_t<T>(static_cast<py::ssize_t>(h->size()), h->data(), owner);
}

template <class T>
SeriesVec<T> from_numpy(const py::array_t<T, py::array::c_style | py::array::forcecast>& a) {
    if (a.ndim() != 1) throw std::invalid_argument("series must be one-dimensional");
    return SeriesVec<T>(a.data(), a.data() + a.size());
}

// A Request with its own storage for the per-step atol values.
struct OwnedRequest {
    Request r;
    SeriesVec<double> atol_steps;
    bool has_atol_steps = false;
};

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
        .def_readwrite("margin", &Stats::margin)
        .def_property_readonly(
            "mag", [](const Stats& s) {
                // the exact integer max |a-b| (0 for float inputs), as a Python int
                return py::int_(s.mag_hi).attr("__lshift__")(64).attr("__or__")(py::int_(s.mag_lo));
            })
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
        .def_property(
            "series_margin", [](const Stats& s) { return to_numpy(s.series_margin); },
            [](Stats& s, const py::array_t<double, py::array::c_style | py::array::forcecast>& a) {
                s.series_margin = from_numpy<double>(a);
            })
        .def_property_readonly(
            "onset", [](const Stats& s) {
                // the first step (index into series_over) with an element outside, or -1
                for (std::size_t k = 0; k < s.series_over.size(); ++k)
                    if (s.series_over[k] != 0) return static_cast<std::int64_t>(k);
                return std::int64_t{-1};
            })
        .def("_take_series",
             [](Stats& s) {
                 // (series with -1 -> 0, series_over, series_margin), moved out without a
                 // copy: these statistics keep no series afterwards (for a last result only)
                 // -1 marks a step without a compared pair: a NaN pair, or no elements
                 // (every step has the same number of elements, so none when size is 0)
                 if (s.nan_mismatch + s.nan_both > 0 || s.size == 0)
                     for (double& v : s.series)
                         if (v < 0.0) v = 0.0;
                 return py::make_tuple(take_numpy(s.series), take_numpy(s.series_over),
                                       take_numpy(s.series_margin));
             })
        .def("to_bytes", [](const Stats& s) { return py::bytes(s.to_bytes()); },
             "The one wire layout of these statistics (little-endian).")
        .def_static(
            "from_bytes",
            [](const py::buffer& b) {
                // read in place (bytes, or a memoryview slice of a larger message): the
                // series of a long run are megabytes, a copy here costs as much as the rest
                const py::buffer_info info = b.request();
                if (info.ndim != 1 || info.itemsize != 1 || info.strides[0] != 1)
                    throw std::invalid_argument("statistics data: not a contiguous byte buffer");
                return Stats::from_bytes(static_cast<const char*>(info.ptr),
                                         static_cast<std::size_t>(info.size));
            },
            py::arg("data"), "Rebuild from to_bytes(); ValueError naming the first bad field.")
        .def_property_readonly_static("FIXED_BYTES", [](const py::object&) { return 17 * 8; },
                                      "Bytes before the per-step arrays (24 bytes a step).")
        .def("copy", [](const Stats& s) { return Stats(s); })
        .def("merge",
             [](Stats& s, const Stats& o, std::int64_t step_shift, std::int64_t inner_shift) {
                 s.merge(o, step_shift, inner_shift);
             },
             py::arg("other"), py::arg("step_shift") = 0, py::arg("inner_shift") = 0);

    py::class_<OwnedRequest>(m, "Request",
                             "What compute() is asked for: the bound (unset already mapped), "
                             "ulp wanted, offsets, threads, optional per-step atol.")
        .def(py::init([](double atol, double rtol, std::uint64_t ulp, double ulp_margin,
                         bool want_ulp, std::int64_t step_offset, std::int64_t inner_offset,
                         int threads) {
                 OwnedRequest o;
                 o.r.p.atol = atol;
                 o.r.p.rtol = rtol;
                 o.r.p.ulp = ulp;
                 o.r.p.ulp_margin = ulp_margin;
                 o.r.want_ulp = want_ulp;
                 o.r.step_offset = step_offset;
                 o.r.inner_offset = inner_offset;
                 o.r.threads = threads;
                 return o;
             }),
             py::kw_only(), py::arg("atol") = 0.0, py::arg("rtol") = 0.0,
             py::arg("ulp") = std::numeric_limits<std::uint64_t>::max(),
             py::arg("ulp_margin") = -1.0, py::arg("want_ulp") = false,
             py::arg("step_offset") = 0, py::arg("inner_offset") = 0, py::arg("threads") = 1)
        .def_property(
            "atol_steps",
            [](const OwnedRequest& o) -> py::object {
                if (!o.has_atol_steps) return py::none();
                return to_numpy(o.atol_steps);
            },
            [](OwnedRequest& o, const py::object& v) {
                o.has_atol_steps = !v.is_none();
                o.atol_steps.clear();
                if (o.has_atol_steps)
                    o.atol_steps = from_numpy<double>(
                        py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(v));
            });

    m.def(
        "compute",
        [](const py::array& a, int ca, bool swap_a, const py::array& b, int cb, bool swap_b,
           const OwnedRequest& oreq) {
            if (a.ndim() < 1 || a.ndim() != b.ndim())
                throw std::invalid_argument("compute: arrays need the same number (>= 1) of dims");
            std::vector<std::int64_t> shape;
            for (py::ssize_t d = 0; d < a.ndim(); ++d) {
                if (a.shape(d) != b.shape(d)) throw std::invalid_argument("compute: shapes differ");
                shape.push_back(static_cast<std::int64_t>(a.shape(d)));
            }
            const ArrayView va = view_of(a, ca, swap_a), vb = view_of(b, cb, swap_b);
            Request req = oreq.r;
            if (oreq.has_atol_steps) {
                if (static_cast<std::int64_t>(oreq.atol_steps.size()) != shape[0])
                    throw std::invalid_argument("compute: atol_steps needs one value per step");
                req.atol_steps = oreq.atol_steps.data();
            }
            Stats st;
            {
                py::gil_scoped_release nogil;
                st = compute(va, vb, shape, req);
            }
            return st;
        },
        py::arg("a"), py::arg("a_code"), py::arg("a_swap"), py::arg("b"), py::arg("b_code"),
        py::arg("b_swap"), py::arg("request"),
        "Divergence statistics of a, b (steps axis first; any strides). ulp=2**64-1: no ULP bound.");

    m.def(
        "compute_equal",
        [](const py::array& x, int code, bool swap, const OwnedRequest& oreq) {
            if (x.ndim() < 1) throw std::invalid_argument("compute_equal: the array needs >= 1 dims");
            std::vector<std::int64_t> shape;
            for (py::ssize_t d = 0; d < x.ndim(); ++d) shape.push_back(static_cast<std::int64_t>(x.shape(d)));
            const ArrayView v = view_of(x, code, swap);
            Stats st;
            {
                py::gil_scoped_release nogil;
                st = compute_equal(v, shape, oreq.r);
            }
            return st;
        },
        py::arg("x"), py::arg("code"), py::arg("swap"), py::arg("request"),
        "The statistics of compute(x, x) from one pass over x (steps axis first).");

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
    m.def("_kernel_entries", &kernel_entries, py::arg("name"),
          "What each compute type runs on a path: [(type, 'vector+blocks'|'vector'|'scalar')].");
}

}  // namespace tolerance
