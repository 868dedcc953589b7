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

// Decimal without sign or leading '+', at most `max`.
bool parse_uint(const std::string& s, long max, long* out) {
    if (s.empty() || s.size() > 9) return false;
    long v = 0;
    for (char ch : s) {
        if (ch < '0' || ch > '9') return false;
        v = v * 10 + (ch - '0');
    }
    if (v > max) return false;
    *out = v;
    return true;
}

}  // namespace

ParsedChip parse_chip(const std::string& chip) {
    auto colon = chip.find(':');
    if (colon == std::string::npos)
        throw ChipError("chip '" + chip + "' is not of the form cpu:LIST, cpu:*, cuda:N or rocm:N", EINVAL);
    std::string dev = chip.substr(0, colon), rest = chip.substr(colon + 1);
    ParsedChip p;
    p.device = dev;
    if (dev == "cuda" || dev == "rocm") {
        long id = 0;
        if (!parse_uint(rest, 65535, &id))
            throw ChipError("device index '" + rest + "' is not an integer in 0..65535", EINVAL);
        p.device_id = static_cast<int32_t>(id);
        return p;
    }
    if (dev != "cpu")
        throw ChipError("unknown device '" + dev + "' (expected cpu, cuda or rocm)", EINVAL);
    if (rest == "*") {
        p.all_cpus = true;
        return p;
    }
    if (rest.empty()) throw ChipError("empty core list", EINVAL);
    std::size_t start = 0;
    while (start <= rest.size()) {
        std::size_t comma = rest.find(',', start);
        std::string item = rest.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        long lo = 0, hi = 0;
        auto dash = item.find('-');
        bool ok;
        if (dash == std::string::npos) {
            ok = parse_uint(item, 1L << 30, &lo);
            hi = lo;
        } else {
            ok = parse_uint(item.substr(0, dash), 1L << 30, &lo) &&
                 parse_uint(item.substr(dash + 1), 1L << 30, &hi);
        }
        if (!ok) throw ChipError("bad core list item '" + item + "' (expected N or N-M)", EINVAL);
        if (lo > hi) throw ChipError("bad core range '" + item + "' (start after end)", EINVAL);
        if (hi > kMaxCpu)
            throw ChipError("core " + std::to_string(hi) + " exceeds the supported maximum " +
                            std::to_string(kMaxCpu), EINVAL);
        for (long c = lo; c <= hi; ++c) {
            if (std::find(p.cpus.begin(), p.cpus.end(), static_cast<int>(c)) != p.cpus.end())
                throw ChipError("core " + std::to_string(c) + " is listed twice", EINVAL);
            p.cpus.push_back(static_cast<int>(c));
        }
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    std::sort(p.cpus.begin(), p.cpus.end());
    return p;
}

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
    ParsedChip p = parse_chip(spec.chip);
    ChipContextData& ctx = r.context;
    ctx.device = p.device;
    ctx.device_id = p.device_id;
    ctx.rank = spec.rank;
    ctx.nranks = spec.nranks;

    // 1. CPU affinity
    if (p.device == "cpu") {
#ifdef __linux__
        std::vector<int> allowed = allowed_cpus();
        if (p.all_cpus) {
            ctx.cpus = format_cpu_list(allowed);
        } else {
            for (int c : p.cpus)
                if (!std::binary_search(allowed.begin(), allowed.end(), c))
                    throw ChipError("core " + std::to_string(c) +
                                    " is not in the CPU set this process may use (" +
                                    format_cpu_list(allowed) + ")", EINVAL);
            apply_affinity(p.cpus);
            ctx.affinity_applied = true;
            ctx.cpus = format_cpu_list(p.cpus);
        }
#else
        // No portable affinity call: recorded, not applied (affinity_applied stays false).
        ctx.cpus = p.all_cpus ? std::string() : format_cpu_list(p.cpus);
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
