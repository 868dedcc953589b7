// Chip bring-up (see chip.hpp).
#include "chip.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
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

constexpr uint64_t kAlignMask = kBufferAlign - 1;

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

// ---------------------------------------------------------------- Window

Window Window::create(const std::string& name, uint64_t size) {
    check_segment_name(name);
    if (size == 0 || size > kMaxWindowSize)
        throw ChipError("output window of " + std::to_string(size) + " bytes is out of range (1.." +
                        std::to_string(kMaxWindowSize) + ")", EINVAL);
    if (size > static_cast<uint64_t>(SIZE_MAX / 2))
        throw ChipError("output window of " + std::to_string(size) + " bytes is too large for this process", ENOMEM);
    // Refuse what cannot fit before a page is touched (touching pages of a window larger than
    // memory would end in SIGBUS or the OOM killer, not in an error message).
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    if (pages > 0 && psize > 0) {
        uint64_t phys = static_cast<uint64_t>(pages) * static_cast<uint64_t>(psize);
        if (size > phys)
            throw ChipError("output window of " + std::to_string(size) + " bytes exceeds this "
                            "machine's memory (" + std::to_string(phys) + " bytes)", ENOMEM);
    }
#ifdef __linux__
    struct statvfs vfs;
    if (statvfs("/dev/shm", &vfs) == 0 && vfs.f_frsize > 0) {
        uint64_t avail = static_cast<uint64_t>(vfs.f_bavail) * static_cast<uint64_t>(vfs.f_frsize);
        if (size > avail)
            throw ChipError("output window of " + std::to_string(size) + " bytes does not fit in "
                            "shared memory (/dev/shm has " + std::to_string(avail) + " bytes free)", ENOSPC);
    }
#endif
    int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) throw ChipError("cannot create output window " + name + ": " + errno_text(errno), errno);
    void* base = MAP_FAILED;
    try {
        if (ftruncate(fd, static_cast<off_t>(size)) != 0)
            throw ChipError("cannot size output window " + name + " to " + std::to_string(size) +
                            " bytes: " + errno_text(errno), errno);
#ifdef __linux__
        // Reserve the pages now: on a full /dev/shm this fails with ENOSPC instead of the
        // workload dying of SIGBUS on its first write.
        int err = posix_fallocate(fd, 0, static_cast<off_t>(size));
        if (err != 0 && err != EOPNOTSUPP && err != EINVAL)
            throw ChipError("output window of " + std::to_string(size) + " bytes does not fit in "
                            "shared memory: " + errno_text(err), err);
#endif
        base = mmap(nullptr, static_cast<std::size_t>(size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (base == MAP_FAILED)
            throw ChipError("cannot map output window of " + std::to_string(size) + " bytes: " +
                            errno_text(errno), errno);
    } catch (...) {
        ::close(fd);
        shm_unlink(name.c_str());
        throw;
    }
    ::close(fd);
    // Touch every page from this process (first touch places it on this chip's NUMA node).
    long page = sysconf(_SC_PAGESIZE);
    std::size_t step = page > 0 ? static_cast<std::size_t>(page) : 4096;
    volatile unsigned char* p = static_cast<volatile unsigned char*>(base);
    for (std::size_t off = 0; off < static_cast<std::size_t>(size); off += step) p[off] = 0;
    return Window(name, base, size, true);
}

Window Window::open(const std::string& name, uint64_t min_size, bool writable) {
    check_segment_name(name);
    int fd = shm_open(name.c_str(), writable ? O_RDWR : O_RDONLY, 0);
    if (fd < 0) throw MailboxError("cannot open output window " + name + ": " + errno_text(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        ::close(fd);
        throw MailboxError("cannot stat output window " + name + ": " + errno_text(err));
    }
    uint64_t size = static_cast<uint64_t>(st.st_size);
    if (st.st_size <= 0 || size < min_size || size > kMaxWindowSize) {
        ::close(fd);
        throw MailboxError("output window " + name + " has " + std::to_string(st.st_size) +
                           " bytes, expected at least " + std::to_string(min_size));
    }
    void* base = mmap(nullptr, static_cast<std::size_t>(size), writable ? PROT_READ | PROT_WRITE : PROT_READ,
                      MAP_SHARED, fd, 0);
    int err = errno;
    ::close(fd);
    if (base == MAP_FAILED) throw MailboxError("cannot map output window " + name + ": " + errno_text(err));
    return Window(name, base, size, writable);
}

Window::Window(Window&& o) noexcept
    : name_(std::move(o.name_)), base_(o.base_), size_(o.size_), writable_(o.writable_) {
    o.base_ = nullptr;
    o.size_ = 0;
}

Window& Window::operator=(Window&& o) noexcept {
    if (this != &o) {
        close();
        name_ = std::move(o.name_);
        base_ = o.base_;
        size_ = o.size_;
        writable_ = o.writable_;
        o.base_ = nullptr;
        o.size_ = 0;
    }
    return *this;
}

Window::~Window() { close(); }

void Window::close() noexcept {
    if (base_) munmap(base_, static_cast<std::size_t>(size_));
    base_ = nullptr;
    size_ = 0;
}

std::vector<BufferInfo> layout_buffers(const std::vector<std::pair<std::string, uint64_t>>& buffers,
                                       uint64_t* window_size) {
    if (buffers.size() > kMaxBuffers)
        throw ChipError(std::to_string(buffers.size()) + " output buffers exceed the maximum " +
                        std::to_string(kMaxBuffers), EINVAL);
    std::vector<BufferInfo> out;
    uint64_t end = 0;
    for (const auto& b : buffers) {
        if (b.first.empty() || b.first.size() >= kBufferNameCap || b.first.find('\0') != std::string::npos)
            throw ChipError("output buffer name '" + b.first + "' must have 1.." +
                            std::to_string(kBufferNameCap - 1) + " bytes", EINVAL);
        for (const auto& prev : out)
            if (prev.name == b.first) throw ChipError("output buffer '" + b.first + "' is declared twice", EINVAL);
        uint64_t off = (end + kAlignMask) & ~kAlignMask;
        if (off < end || b.second > kMaxWindowSize || off > kMaxWindowSize - b.second)
            throw ChipError("output window too large: buffer '" + b.first + "' of " +
                            std::to_string(b.second) + " bytes ends past " +
                            std::to_string(kMaxWindowSize) + " bytes", EFBIG);
        out.push_back(BufferInfo{b.first, off, b.second});
        end = off + b.second;
    }
    uint64_t size = (end + kAlignMask) & ~kAlignMask;
    if (!buffers.empty() && size == 0) size = kBufferAlign;  // only empty buffers: one line
    *window_size = size;
    return out;
}

// ---------------------------------------------------------------- bring-up

namespace {

void set_env(BringUp& r, const std::string& key, const std::string& value) {
    if (setenv(key.c_str(), value.c_str(), 1) != 0)
        throw ChipError("cannot set " + key + ": " + errno_text(errno), errno);
    r.env.emplace_back(key, value);
}

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

    // 2. device visibility: the workload sees its one device as index 0
    if (p.device == "cuda") set_env(r, "CUDA_VISIBLE_DEVICES", std::to_string(p.device_id));
    if (p.device == "rocm") set_env(r, "HIP_VISIBLE_DEVICES", std::to_string(p.device_id));

    // 3. thread variables
    uint32_t threads = spec.threads;
    if (threads == 0 && p.device == "cpu" && !p.all_cpus) threads = static_cast<uint32_t>(p.cpus.size());
    if (threads > 0) {
        std::string t = std::to_string(threads);
        set_env(r, "OMP_NUM_THREADS", t);
        set_env(r, "OPENBLAS_NUM_THREADS", t);
        set_env(r, "MKL_NUM_THREADS", t);
        ctx.threads = threads;
    }

    // 4. the output window
    uint64_t size = 0;
    ctx.buffers = layout_buffers(spec.buffers, &size);
    if (!spec.buffers.empty()) {
        if (spec.window_name.empty()) throw ChipError("output buffers declared but no window name given", EINVAL);
        r.window.reset(new Window(Window::create(spec.window_name, size)));
        ctx.window_name = spec.window_name;
        ctx.window_size = size;
    }
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
        if (r.window) {
            shm_unlink(spec.window_name.c_str());
            r.window.reset();
        }
        mb.publish_error(e.code(), r.error);
    } catch (const std::exception& e) {
        r.error = "chip " + spec.chip + ": " + e.what();
        if (r.window) {
            shm_unlink(spec.window_name.c_str());
            r.window.reset();
        }
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
