// Chip bring-up, run inside the chip's child process (tolerance.chip) before its workload:
// parse the chip, apply CPU affinity (Linux; a recorded no-op elsewhere) and publish the
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

// A chip string that does not parse, or a bring-up step that failed. `code` is errno-like.
class ChipError : public std::runtime_error {
   public:
    explicit ChipError(const std::string& what, int code = 0) : std::runtime_error(what), code_(code) {}
    int code() const noexcept { return code_; }

   private:
    int code_;
};

constexpr int kMaxCpu = 1023;  // highest core id a chip may name

struct ParsedChip {
    std::string device;      // cpu | cuda | rocm
    int32_t device_id = -1;  // cuda/rocm index; -1 for cpu
    bool all_cpus = false;   // cpu:*
    std::vector<int> cpus;   // sorted, unique (cpu chips other than cpu:*)
};

// "cpu:0-3" | "cpu:2" | "cpu:0,2,4-5" | "cpu:*" | "cuda:1" | "rocm:0". Throws ChipError.
ParsedChip parse_chip(const std::string& chip);
// {0,1,2,3,8} -> "0-3,8"
std::string format_cpu_list(const std::vector<int>& cpus);

struct ChipSpec {
    std::string chip;
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
