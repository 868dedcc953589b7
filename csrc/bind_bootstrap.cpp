// Registers the bootstrap mailbox and chip bring-up (mailbox.hpp, chip.hpp). Only conversions
// here: every wait runs with the GIL released (after all Python objects were converted).
#include <pybind11/stl.h>

#include <cerrno>
#include <cmath>
#include <memory>
#include <optional>
#include <vector>

#include "bindings.hpp"
#include "chip.hpp"
#include "mailbox.hpp"

namespace py = pybind11;

namespace tolerance {

namespace {

using boot::ChipContextData;
using boot::Mailbox;
using boot::MailboxReport;

// Text from a mailbox may be corrupted: decode it with replacement, never raise.
py::str u8(const std::string& s) {
    PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
    if (!o) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(o);
}

py::dict context_dict(const ChipContextData& c) {
    py::dict d;
    d["device"] = u8(c.device);
    d["device_id"] = c.device_id;
    d["rank"] = c.rank;
    d["nranks"] = c.nranks;
    d["affinity_applied"] = c.affinity_applied;
    d["threads"] = c.threads;
    d["cpus"] = u8(c.cpus);
    return d;
}

py::dict report_dict(const MailboxReport& r) {
    py::dict d;
    d["state"] = boot::state_name(static_cast<uint32_t>(r.state));
    d["child_pid"] = r.child_pid;
    d["error_code"] = r.error_code;
    d["error"] = u8(r.error);
    d["context"] = r.state == boot::State::Success ? py::object(context_dict(r.context)) : py::object(py::none());
    return d;
}

const char* kind_name(boot::WaitKind k) {
    switch (k) {
        case boot::WaitKind::AllReady: return "ready";
        case boot::WaitKind::Error: return "error";
        case boot::WaitKind::Died: return "died";
        case boot::WaitKind::Timeout: return "timeout";
        case boot::WaitKind::Corrupt: return "corrupt";
        case boot::WaitKind::Interrupted: return "interrupted";
    }
    return "?";
}

}  // namespace

void bind_bootstrap(py::module_& m) {
    static py::exception<boot::MailboxError> mailbox_error(m, "MailboxError", PyExc_RuntimeError);
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const boot::MailboxError& e) {
            py::set_error(mailbox_error, u8(e.what()));
        }
    });

    m.attr("MAILBOX_SIZE") = boot::kMailboxSize;
    m.attr("LAYOUT_VERSION") = boot::kLayoutVersion;
    m.attr("MAILBOX_MAGIC") = boot::kMailboxMagic;
    m.attr("ERROR_CAP") = boot::kErrorCap;
    {
        py::dict off;
        off["magic"] = offsetof(boot::MailboxLayout, magic);
        off["version"] = offsetof(boot::MailboxLayout, version);
        off["state"] = offsetof(boot::MailboxLayout, state);
        off["child_pid"] = offsetof(boot::MailboxLayout, child_pid);
        off["error_code"] = offsetof(boot::MailboxLayout, error_code);
        off["error_len"] = offsetof(boot::MailboxLayout, error_len);
        off["error"] = offsetof(boot::MailboxLayout, error);
        const std::size_t c = offsetof(boot::MailboxLayout, context);
        off["context"] = c;
        off["device"] = c + offsetof(boot::ContextSlot, device);
        off["device_id"] = c + offsetof(boot::ContextSlot, device_id);
        off["rank"] = c + offsetof(boot::ContextSlot, rank);
        off["nranks"] = c + offsetof(boot::ContextSlot, nranks);
        off["affinity_applied"] = c + offsetof(boot::ContextSlot, affinity_applied);
        off["threads"] = c + offsetof(boot::ContextSlot, threads);
        off["cpus"] = c + offsetof(boot::ContextSlot, cpus);
        m.attr("MAILBOX_OFFSETS") = off;
    }

    py::class_<Mailbox>(m, "Mailbox", "A mapped bootstrap mailbox (4096-byte POSIX shared memory).")
        .def_static("create", &Mailbox::create, py::arg("name"),
                    "Create a zero-filled mailbox (state IDLE); fails if the name exists.")
        .def_property_readonly("name", &Mailbox::name)
        .def_property_readonly("closed", [](const Mailbox& mb) { return !mb.mapped(); })
        .def("state", [](const Mailbox& mb) { return std::string(boot::state_name(mb.load_state())); })
        .def("raw_state", &Mailbox::load_state)
        .def("read", [](const Mailbox& mb) { return report_dict(mb.read()); },
             "Validated snapshot: dict(state, child_pid, error_code, error, context).")
        .def("close", &Mailbox::close, "Unmap (the segment stays until unlink).")
        .def("unlink", &Mailbox::unlink, "shm_unlink; False if it did not exist.");

    m.def("parse_mailbox", [](const py::bytes& data) {
              std::string s = data;
              return report_dict(boot::parse_mailbox(s.data(), s.size()));
          },
          py::arg("data"), "Validate a 4096-byte mailbox image (raises MailboxError).");

    m.def("make_segment_name", [](const std::string& kind, const std::string& tag) {
              if (kind.size() != 1) throw py::value_error("kind must be one character");
              return boot::make_segment_name(kind[0], tag);
          },
          py::arg("kind"), py::arg("tag") = "");
    m.attr("SEGMENT_TAG_CAP") = boot::kTagCap;
    m.def("unlink_segment", &boot::unlink_segment, py::arg("name"));
    m.def("wait_mechanism", &boot::wait_mechanism);

    m.def("wait_all",
          [](const std::vector<Mailbox*>& boxes, const std::vector<int>& pids, double timeout) {
              if (!(timeout >= 0.0)) throw py::value_error("timeout must be >= 0");
              std::vector<const Mailbox*> cboxes(boxes.begin(), boxes.end());
              double ns = std::min(timeout * 1e9, 1e17);
              const int64_t deadline = boot::monotonic_ns() + static_cast<int64_t>(ns);
              for (;;) {
                  boot::WaitResult r;
                  {
                      py::gil_scoped_release nogil;
                      r = boot::wait_all(cboxes, pids, deadline);
                  }
                  if (r.kind == boot::WaitKind::Interrupted) {
                      // Run the Python signal handlers; one that raises ends the wait.
                      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
                      continue;
                  }
                  return py::make_tuple(kind_name(r.kind), r.index, r.raw_state);
              }
          },
          py::arg("mailboxes"), py::arg("pids"), py::arg("timeout"),
          "Wait for every mailbox to reach SUCCESS with one deadline. Returns (kind, index, state)\n"
          "with kind one of ready, error, died, timeout, corrupt. pids[i] <= 0: not watched.");

    m.def("chip_bring_up",
          [](const std::string& mailbox, const std::string& chip, const std::string& device,
             int32_t device_id, const std::optional<std::vector<int>>& cores, int32_t rank,
             int32_t nranks, uint32_t threads) {
              boot::ChipSpec spec;
              spec.chip = chip;
              spec.device = device;
              spec.device_id = device_id;
              spec.all_cpus = !cores.has_value();
              if (cores) spec.cpus = *cores;
              spec.rank = rank;
              spec.nranks = nranks;
              spec.threads = threads;
              std::shared_ptr<boot::BringUp> r;
              {
                  py::gil_scoped_release nogil;
                  r = std::make_shared<boot::BringUp>(boot::bring_up(mailbox, spec));
              }
              return py::make_tuple(r->ok, r->ok ? py::object(context_dict(r->context)) : py::object(py::str(r->error)));
          },
          py::arg("mailbox"), py::arg("chip"), py::arg("device"), py::arg("device_id"),
          py::arg("cores"), py::arg("rank"), py::arg("nranks"), py::arg("threads"),
          "Child side: bring up the chip the parent parsed (config.chips: device, index, sorted\n"
          "cores or None for every core) and publish. Returns (ok, context|error).");

    m.def("chip_fail",
          [](const std::string& mailbox, const std::string& message) {
              boot::publish_failure(mailbox, message, EINVAL);
          },
          py::arg("mailbox"), py::arg("message"), "Child side: publish ERROR before bring-up.");

    // Bench-only helpers live in a private submodule, not in the module's namespace.
    py::module_ bench = m.def_submodule("_bench_bootstrap", "Benchmark helpers (bench/bootstrap.py).");
    bench.def("wake_latency",
          [](const std::string& mode, int iterations) {
              py::gil_scoped_release nogil;
              return boot::bench_wake_latency(mode, iterations);
          },
          py::arg("mode"), py::arg("iterations"), "Wake latencies in ns (benchmark helper).");
}

}  // namespace tolerance
