// Chip bring-up, run inside the chip's child process (tolerance.bootstrap.child) before its
// workload: take the chip its parent parsed, apply CPU affinity (Linux; a recorded no-op elsewhere) and publish the
// context (SUCCESS) or an error naming the chip (ERROR). Environment knobs (device
// visibility, thread variables) are not set here: the parent resolves them in one place
// (tolerance.config.chips.knob_env) and starts the child with them. A chip's outputs are the files its workload writes (.npz), nothing else.
//
// This header knows nothing of Python.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mailbox.hpp"

namespace tolerance::boot {

// A chip the bring-up cannot take, or a bring-up step that failed. `code` is errno-like.
class ChipError : public std::runtime_error {
   public:
    explicit ChipError(const std::string& what, int code = 0) : std::runtime_error(what), code_(code) {}
    int code() const noexcept { return code_; }

   private:
    int code_;
};

constexpr int kMaxCpu = 1023;  // highest core id a chip may name (config.chips.MAX_CPU)

// {0,1,2,3,8} -> "0-3,8" (sorted cores): the context records the cores a chip runs on
std::string format_cpu_list(const std::vector<int>& cpus);

// A chip as the parent parsed it (tolerance.config.chips, the one chip grammar): nothing is
// parsed here.
struct ChipSpec {
    std::string chip;         // the chip string, for messages ("cpu:0,2")
    std::string device;       // cpu | cuda | rocm
    int32_t device_id = -1;   // cuda/rocm index; -1 for cpu
    bool all_cpus = false;    // cpu:* (every core this process may use)
    std::vector<int> cpus;    // the cores of a cpu chip other than cpu:*
    int32_t rank = 0;
    int32_t nranks = 1;
    uint32_t threads = 0;     // the thread count the parent resolved (recorded; 0: unset)
};

struct BringUp {
    bool ok = false;
    std::string error;  // ERROR: the published message (names the chip)
    ChipContextData context;
};

// Opens the mailbox, stores BOOTING, brings the chip up and publishes SUCCESS or ERROR.
// Throws MailboxError only if the mailbox itself cannot be opened (nothing to publish to).
BringUp bring_up(const std::string& mailbox_name, const ChipSpec& spec);

// Publishes ERROR with `message` (a child that fails before bring-up, e.g. a bad config).
void publish_failure(const std::string& mailbox_name, const std::string& message, int code);

}  // namespace tolerance::boot
