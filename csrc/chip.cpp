// Chip bring-up (see chip.hpp).
#include "chip.hpp"

#include <dirent.h>
#include <sched.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace tolerance::boot {

namespace {

std::string errno_text(int err) { return std::string(std::strerror(err)); }

}  // namespace

std::string format_cpu_list(const std::vector<int>& cpus) {
    std::string out;
    std::size_t i = 0;
    while (i < cpus.size()) {
        std::size_t j = i;
        while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
        if (!out.empty()) out += ',';
        out += std::to_string(cpus[i]);
        if (j > i) out += '-' + std::to_string(cpus[j]);
        i = j + 1;
    }
    return out;
}

// ---------------------------------------------------------------- bring-up

namespace {

#ifdef __linux__
std::vector<int> allowed_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        throw ChipError("cannot read this process's CPU set: " + errno_text(errno), errno);
    std::vector<int> out;
    for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(static_cast<std::size_t>(c), &set)) out.push_back(c);
    return out;
}

// Applies the set to every thread of this process (an interpreter may already run helper
// threads, e.g. a BLAS pool; sched_setaffinity(0) alone would pin only the calling thread).
void apply_affinity(const std::vector<int>& cpus) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c : cpus) CPU_SET(static_cast<std::size_t>(c), &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        throw ChipError("sched_setaffinity failed: " + errno_text(errno), errno);
    if (DIR* d = opendir("/proc/self/task")) {
        while (dirent* e = readdir(d)) {
            char* end = nullptr;
            long tid = std::strtol(e->d_name, &end, 10);
            if (tid > 0 && end && *end == '\0') sched_setaffinity(static_cast<pid_t>(tid), sizeof set, &set);
        }
        closedir(d);
    }
}
#endif

void bring_up_steps(BringUp& r, const ChipSpec& spec) {
    if (spec.nranks < 1 || spec.rank < 0 || spec.rank >= spec.nranks)
        throw ChipError("rank " + std::to_string(spec.rank) + " of " + std::to_string(spec.nranks) +
                        " is out of range", EINVAL);
    if (spec.device != "cpu" && spec.device != "cuda" && spec.device != "rocm")
        throw ChipError("unknown device '" + spec.device + "' (expected cpu, cuda or rocm)", EINVAL);
    // the cores as a set: sorted, each once, each a core id the CPU set can hold
    std::vector<int> cpus = spec.cpus;
    std::sort(cpus.begin(), cpus.end());
    cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
    for (int c : cpus)
        if (c < 0 || c > kMaxCpu)
            throw ChipError("core " + std::to_string(c) + " exceeds the supported maximum " +
                            std::to_string(kMaxCpu), EINVAL);
    if (spec.device == "cpu" && !spec.all_cpus && cpus.empty())
        throw ChipError("empty core list", EINVAL);
    ChipContextData& ctx = r.context;
    ctx.device = spec.device;
    ctx.device_id = spec.device == "cpu" ? -1 : spec.device_id;
    ctx.rank = spec.rank;
    ctx.nranks = spec.nranks;

    // 1. CPU affinity
    if (spec.device == "cpu") {
#ifdef __linux__
        std::vector<int> allowed = allowed_cpus();
        if (spec.all_cpus) {
            ctx.cpus = format_cpu_list(allowed);
        } else {
            for (int c : cpus)
                if (!std::binary_search(allowed.begin(), allowed.end(), c))
                    throw ChipError("core " + std::to_string(c) +
                                    " is not in the CPU set this process may use (" +
                                    format_cpu_list(allowed) + ")", EINVAL);
            apply_affinity(cpus);
            ctx.affinity_applied = true;
            ctx.cpus = format_cpu_list(cpus);
        }
#else
        // No portable affinity call: recorded, not applied (affinity_applied stays false).
        ctx.cpus = spec.all_cpus ? std::string() : format_cpu_list(cpus);
#endif
        if (ctx.cpus.size() >= kCpusCap) ctx.cpus = ctx.cpus.substr(0, kCpusCap - 4) + "...";
    }

    // 2. device visibility and thread variables are set by the parent before this process
    //    started (tolerance.config.chips.knob_env, the one place they are resolved); the
    //    thread count it resolved is recorded here for the report.
    ctx.threads = spec.threads;
}

}  // namespace

BringUp bring_up(const std::string& mailbox_name, const ChipSpec& spec) {
    Mailbox mb = Mailbox::open(mailbox_name);
    mb.begin(static_cast<int32_t>(getpid()));
    BringUp r;
    try {
        bring_up_steps(r, spec);
        mb.publish_success(r.context);
        r.ok = true;
    } catch (const ChipError& e) {
        r.error = "chip " + spec.chip + ": " + e.what();
        mb.publish_error(e.code(), r.error);
    } catch (const std::exception& e) {
        r.error = "chip " + spec.chip + ": " + e.what();
        mb.publish_error(EIO, r.error);
    }
    return r;
}

void publish_failure(const std::string& mailbox_name, const std::string& message, int code) {
    Mailbox mb = Mailbox::open(mailbox_name);
    mb.begin(static_cast<int32_t>(getpid()));
    mb.publish_error(code, message);
}

}  // namespace tolerance::boot
