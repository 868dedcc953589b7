// The bootstrap mailbox (see mailbox.hpp) and the many-mailbox wait.
//
// How the parent waits (Linux). It must wake on two kinds of events with one deadline:
//   * a state change in any of N mailboxes (a shared futex word in each), and
//   * the death of any child that has not published yet (so a crash is seen at once, not at
//     the deadline).
// A futex cannot wait on a file descriptor and poll() cannot wait on a futex, so:
//   * the waiting thread sleeps in futex_waitv(2) (Linux >= 5.16) on every pending state word
//     plus one process-private "death generation" word, with the absolute CLOCK_MONOTONIC
//     deadline. The values passed are the ones just observed, so a change between the check
//     and the sleep makes the call return at once (no lost wake-up).
//   * a watcher thread, with every signal blocked, sleeps in poll(2) on one pidfd per child
//     (pidfd_open, Linux >= 5.3; a pidfd turns readable when the child exits, without reaping
//     it) plus an eventfd used to stop it. When a child dies it bumps the death generation and
//     FUTEX_WAKEs it (and every state word, for the fallback below).
// No child is ever reaped here (waitid with WNOWAIT), so subprocess.Popen keeps its status.
// Fallbacks, each chosen at run time: without futex_waitv the waiter sleeps on the first
// pending state word with FUTEX_WAIT_BITSET (absolute monotonic deadline) in slices of at most
// 10 ms (the awaited chip and every death still wake it at once; an ERROR of another chip is
// seen within a slice); without pidfds the watcher polls waitid(WNOWAIT) with a backoff from
// 1 to 10 ms. On other systems the waiter polls states and waitid with a bounded exponential
// backoff (50 us doubling to 5 ms). Signals: the waiting thread's sleep returns EINTR, and
// wait_all returns Interrupted so that the caller can run its signal handlers.
#include "mailbox.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <thread>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#endif

namespace tolerance::boot {

namespace {

std::string errno_text(int err) { return std::string(std::strerror(err)); }

std::string hex32(uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%08x", v);
    return buf;
}

// A string from a (possibly corrupted) mailbox, safe to quote in a message: printable ASCII
// kept, every other byte as \xNN.
std::string printable(const std::string& s) {
    std::string out;
    for (char c : s) {
        const auto ch = static_cast<unsigned char>(c);
        if (ch >= 0x20 && ch < 0x7f && ch != '\\') {
            out += static_cast<char>(ch);
        } else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(ch));
            out += buf;
        }
    }
    return out;
}

// Length of a NUL-terminated string within `cap` bytes, or cap if there is no NUL.
std::size_t bounded_len(const char* p, std::size_t cap) {
    const void* z = std::memchr(p, 0, cap);
    return z ? static_cast<std::size_t>(static_cast<const char*>(z) - p) : cap;
}

std::string field_string(const char* p, std::size_t cap, const char* what) {
    std::size_t n = bounded_len(p, cap);
    if (n == cap) throw MailboxError(std::string("mailbox corrupted: ") + what + " is not terminated");
    return std::string(p, n);
}

void copy_field(char* dst, std::size_t cap, const std::string& s, const char* what) {
    if (s.size() >= cap || s.find('\0') != std::string::npos)
        throw MailboxError(std::string(what) + " '" + s + "' does not fit (at most " +
                           std::to_string(cap - 1) + " bytes, no NUL)");
    std::memset(dst, 0, cap);
    std::memcpy(dst, s.data(), s.size());
}

#ifdef __linux__
#ifdef SYS_futex_waitv
constexpr long kSysFutexWaitv = SYS_futex_waitv;
#else
constexpr long kSysFutexWaitv = 449;  // same number on every architecture
#endif
#ifdef SYS_pidfd_open
constexpr long kSysPidfdOpen = SYS_pidfd_open;
#else
constexpr long kSysPidfdOpen = 434;
#endif
struct FutexWaitv {  // struct futex_waitv (older headers lack it)
    uint64_t val;
    uint64_t uaddr;
    uint32_t flags;
    uint32_t reserved;
};
constexpr uint32_t kFutex2Size32 = 0x02;
constexpr uint32_t kFutex2Private = 128;  // FUTEX_PRIVATE_FLAG
constexpr std::size_t kWaitvMax = 128;

uint32_t* word_ptr(std::atomic<uint32_t>* w) { return reinterpret_cast<uint32_t*>(w); }

void futex_wake_shared(std::atomic<uint32_t>* w) {
    // Shared (no FUTEX_PRIVATE_FLAG): the waiter is another process mapping the same page.
    syscall(SYS_futex, word_ptr(w), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}
void futex_wake_private(std::atomic<uint32_t>* w) {
    syscall(SYS_futex, word_ptr(w), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

std::atomic<int> g_waitv_state{-1};  // -1 unknown, 0 unsupported, 1 supported

bool waitv_enabled() {
    int s = g_waitv_state.load(std::memory_order_relaxed);
    if (s < 0) {
        const char* off = std::getenv("TOLERANCE_NO_FUTEX_WAITV");  // test-only: force fallback
        s = (off && *off && std::strcmp(off, "0") != 0) ? 0 : 1;
        g_waitv_state.store(s, std::memory_order_relaxed);
    }
    return s == 1;
}
bool pidfd_enabled() {
    const char* off = std::getenv("TOLERANCE_NO_PIDFD");  // test-only: force waitid polling
    return !(off && *off && std::strcmp(off, "0") != 0);
}
#endif

timespec to_timespec(int64_t ns) {
    if (ns < 0) ns = 0;
    timespec ts;
    ts.tv_sec = static_cast<time_t>(ns / 1000000000);
    ts.tv_nsec = static_cast<long>(ns % 1000000000);
    return ts;
}

// True if the child has exited (zombie or already reaped). Never reaps.
bool child_exited(int pid) {
    siginfo_t info;
    std::memset(&info, 0, sizeof info);
    for (;;) {
        int r = waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT);
        if (r == 0) return info.si_pid == pid;
        if (errno == EINTR) continue;
        return errno == ECHILD;  // reaped already (or not ours): it is gone either way
    }
}

#ifdef __linux__
// Watches the children's deaths from a thread with every signal blocked.
class DeathWatcher {
   public:
    DeathWatcher(const std::vector<int>& pids, std::vector<std::atomic<uint32_t>*> words)
        : words_(std::move(words)) {
        stopfd_ = eventfd(0, EFD_CLOEXEC);
        bool use_pidfd = pidfd_enabled();
        for (int pid : pids) {
            if (pid <= 0) continue;
            int fd = -1;
            if (use_pidfd) fd = static_cast<int>(syscall(kSysPidfdOpen, pid, 0));
            if (fd >= 0) {
                fcntl(fd, F_SETFD, FD_CLOEXEC);
                pidfds_.push_back(fd);
            } else if (use_pidfd && errno == ESRCH) {
                gen_.fetch_add(1, std::memory_order_release);  // already gone
            } else {
                polled_.push_back(pid);  // no pidfd: waitid polling
            }
        }
        if (stopfd_ < 0 || (pidfds_.empty() && polled_.empty())) return;
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        try {
            thread_ = std::thread([this] { run(); });
        } catch (...) {
            pthread_sigmask(SIG_SETMASK, &old, nullptr);
            throw;
        }
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
    }
    ~DeathWatcher() {
        if (thread_.joinable()) {
            uint64_t one = 1;
            while (write(stopfd_, &one, sizeof one) < 0 && errno == EINTR) {
            }
            thread_.join();
        }
        for (int fd : pidfds_) ::close(fd);
        if (stopfd_ >= 0) ::close(stopfd_);
    }
    DeathWatcher(const DeathWatcher&) = delete;
    DeathWatcher& operator=(const DeathWatcher&) = delete;

    std::atomic<uint32_t>* gen_word() { return &gen_; }
    uint32_t generation() const { return gen_.load(std::memory_order_acquire); }

   private:
    void run() {
        std::vector<pollfd> fds;
        fds.push_back(pollfd{stopfd_, POLLIN, 0});
        for (int fd : pidfds_) fds.push_back(pollfd{fd, POLLIN, 0});
        std::vector<int> polled = polled_;
        int backoff_ms = 1;
        for (;;) {
            int timeout = polled.empty() ? -1 : backoff_ms;
            int r = poll(fds.data(), static_cast<nfds_t>(fds.size()), timeout);
            if (r < 0 && errno != EINTR) return;
            if (fds[0].revents) return;
            bool died = false;
            for (std::size_t k = 1; k < fds.size(); ++k) {
                if (fds[k].fd >= 0 && fds[k].revents) {
                    died = true;
                    fds[k].fd = -1;  // poll ignores negative descriptors
                }
                fds[k].revents = 0;
            }
            if (!polled.empty()) {
                for (auto it = polled.begin(); it != polled.end();) {
                    if (child_exited(*it)) {
                        died = true;
                        it = polled.erase(it);
                    } else {
                        ++it;
                    }
                }
                backoff_ms = std::min(backoff_ms * 2, 10);
            }
            if (died) {
                gen_.fetch_add(1, std::memory_order_release);
                futex_wake_private(&gen_);
                for (auto* w : words_) futex_wake_shared(w);
            }
        }
    }

    std::vector<std::atomic<uint32_t>*> words_;
    std::vector<int> pidfds_;
    std::vector<int> polled_;
    int stopfd_ = -1;
    std::atomic<uint32_t> gen_{0};
    std::thread thread_;
};
#endif

}  // namespace

const char* state_name(uint32_t s) noexcept {
    switch (s) {
        case 0: return "IDLE";
        case 1: return "BOOTING";
        case 2: return "SUCCESS";
        case 3: return "ERROR";
        default: return "INVALID";
    }
}

int64_t monotonic_ns() noexcept {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// ---------------------------------------------------------------- names

std::string make_segment_name(char kind, const std::string& tag) {
    check_segment_tag(tag);
    static std::atomic<uint32_t> counter{0};
    static const uint32_t salt = [] {
        std::random_device rd;
        return static_cast<uint32_t>(rd());
    }();
    thread_local std::mt19937 rng(salt ^ static_cast<uint32_t>(monotonic_ns()));
    uint32_t n = counter.fetch_add(1, std::memory_order_relaxed);
    uint32_t r = static_cast<uint32_t>(rng()) & 0xffffffu;
    char buf[64];
    if (tag.empty()) {
        std::snprintf(buf, sizeof buf, "/tol-%x-%x%c-%06x", static_cast<unsigned>(getpid()), n, kind, r);
    } else {
        // Room for the tag: the counter wraps at 0x1000 (the random part and O_EXCL keep
        // names unique among the segments that exist at once).
        std::snprintf(buf, sizeof buf, "/tol-%x-%x%c-%06x.%s", static_cast<unsigned>(getpid()),
                      n & 0xfffu, kind, r, tag.c_str());
    }
    std::string name(buf);
    check_segment_name(name);
    return name;
}

void check_segment_tag(const std::string& tag) {
    bool ok = tag.size() <= kTagCap;
    for (char c : tag) ok = ok && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z'));
    if (!ok)
        throw MailboxError("invalid shared-memory segment tag '" + printable(tag) + "' (at most " +
                           std::to_string(kTagCap) + " characters of 0-9a-z)");
}

void check_segment_name(const std::string& name) {
    if (name.size() < 2 || name.size() > 30 || name[0] != '/' ||
        name.find('/', 1) != std::string::npos || name.find('\0') != std::string::npos)
        throw MailboxError("invalid shared-memory segment name '" + name +
                           "' (expected '/name', at most 30 characters)");
}

bool unlink_segment(const std::string& name) {
    check_segment_name(name);
    if (shm_unlink(name.c_str()) == 0) return true;
    if (errno == ENOENT) return false;
    throw MailboxError("cannot unlink shared memory " + name + ": " + errno_text(errno));
}

// ---------------------------------------------------------------- parse

MailboxReport parse_mailbox(const void* bytes, std::size_t size) {
    if (size != kMailboxSize)
        throw MailboxError("mailbox corrupted: image has " + std::to_string(size) +
                           " bytes, expected " + std::to_string(kMailboxSize));
    MailboxImage img;
    std::memcpy(&img, bytes, kMailboxSize);
    if (img.magic != kMailboxMagic) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(img.magic));
        throw MailboxError(std::string("mailbox corrupted: bad magic ") + buf);
    }
    if (img.version != kLayoutVersion)
        throw MailboxError("mailbox corrupted: layout version " + std::to_string(img.version) +
                           ", expected " + std::to_string(kLayoutVersion));
    if (img.state > static_cast<uint32_t>(State::Error))
        throw MailboxError("mailbox corrupted: invalid state " + hex32(img.state));
    MailboxReport rep;
    rep.state = static_cast<State>(img.state);
    rep.child_pid = img.child_pid;
    rep.error_code = img.error_code;
    if (rep.state != State::Idle && img.child_pid <= 0)
        throw MailboxError("mailbox corrupted: child pid " + std::to_string(img.child_pid) +
                           " in state " + state_name(img.state));
    if (img.error_len >= kErrorCap)
        throw MailboxError("mailbox corrupted: error length " + std::to_string(img.error_len) +
                           " exceeds " + std::to_string(kErrorCap - 1));
    if (bounded_len(img.error, kErrorCap) != img.error_len)
        throw MailboxError("mailbox corrupted: error message is not terminated at its length " +
                           std::to_string(img.error_len));
    if (rep.state == State::Error) {
        rep.error.assign(img.error, img.error_len);
        return rep;
    }
    if (rep.state != State::Success) return rep;

    const ContextSlot& c = img.context;
    ChipContextData& ctx = rep.context;
    ctx.device = field_string(c.device, kDeviceCap, "device");
    if (ctx.device != "cpu" && ctx.device != "cuda" && ctx.device != "rocm")
        throw MailboxError("mailbox corrupted: unknown device '" + printable(ctx.device) + "'");
    if ((ctx.device == "cpu") != (c.device_id == -1) || c.device_id < -1)
        throw MailboxError("mailbox corrupted: device id " + std::to_string(c.device_id) +
                           " for device " + ctx.device);
    if (c.nranks < 1 || c.rank < 0 || c.rank >= c.nranks)
        throw MailboxError("mailbox corrupted: rank " + std::to_string(c.rank) + " of " +
                           std::to_string(c.nranks));
    ctx.device_id = c.device_id;
    ctx.rank = c.rank;
    ctx.nranks = c.nranks;
    if (c.affinity_applied > 1)
        throw MailboxError("mailbox corrupted: affinity flag " + std::to_string(c.affinity_applied));
    ctx.affinity_applied = c.affinity_applied == 1;
    ctx.threads = c.threads;
    ctx.cpus = field_string(c.cpus, kCpusCap, "cpu list");
    return rep;
}

// ---------------------------------------------------------------- Mailbox

namespace {
// Reserve the segment's pages before anything touches them: on a full /dev/shm (a
// container's 64 MiB default) an ftruncate'd segment is sparse, and the first store into
// it is a SIGBUS, not an error. posix_fallocate returns its error (it does not set errno);
// EINTR is retried. A file system that cannot reserve (EOPNOTSUPP/EINVAL) keeps the sparse
// segment, as before.
void reserve_pages(int fd, const std::string& name, std::size_t size) {
#ifdef __linux__
    int err;
    do {
        err = posix_fallocate(fd, 0, static_cast<off_t>(size));
    } while (err == EINTR);
    if (err == 0 || err == EOPNOTSUPP || err == EINVAL) return;
    std::string avail;
    struct statvfs vfs;
    if (fstatvfs(fd, &vfs) == 0)
        avail = ", " + std::to_string(static_cast<unsigned long long>(vfs.f_bavail) *
                                      static_cast<unsigned long long>(vfs.f_frsize)) +
                " bytes available";
    if (err == ENOSPC || err == EFBIG || err == EDQUOT)
        throw MailboxError("/dev/shm is full: cannot reserve " + std::to_string(size) +
                           " bytes for mailbox " + name + avail + " (" + errno_text(err) +
                           "; free /dev/shm or give it more room, e.g. docker --shm-size)");
    throw MailboxError("cannot reserve " + std::to_string(size) + " bytes of /dev/shm for mailbox " +
                       name + avail + ": " + errno_text(err));
#else
    (void)fd;
    (void)name;
    (void)size;
#endif
}

MailboxLayout* map_segment(int fd, const std::string& name) {
    void* p = mmap(nullptr, kMailboxSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) throw MailboxError("cannot map mailbox " + name + ": " + errno_text(errno));
    return static_cast<MailboxLayout*>(p);
}
}  // namespace

Mailbox Mailbox::create(const std::string& name) {
    check_segment_name(name);
    int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) throw MailboxError("cannot create mailbox " + name + ": " + errno_text(errno));
    MailboxLayout* map = nullptr;
    try {
        if (ftruncate(fd, static_cast<off_t>(kMailboxSize)) != 0)
            throw MailboxError("cannot size mailbox " + name + ": " + errno_text(errno));
        reserve_pages(fd, name, kMailboxSize);  // before the first store below
        map = map_segment(fd, name);
    } catch (...) {
        ::close(fd);
        shm_unlink(name.c_str());
        throw;
    }
    ::close(fd);
    // The segment is zero-filled: the state word reads IDLE (0) already.
    map->magic = kMailboxMagic;
    map->version = kLayoutVersion;
    return Mailbox(name, map);
}

Mailbox Mailbox::open(const std::string& name) {
    check_segment_name(name);
    int fd = shm_open(name.c_str(), O_RDWR, 0);
    if (fd < 0) throw MailboxError("cannot open mailbox " + name + ": " + errno_text(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size != static_cast<off_t>(kMailboxSize)) {
        long long sz = static_cast<long long>(st.st_size);
        ::close(fd);
        throw MailboxError("mailbox " + name + " has " + std::to_string(sz) + " bytes, expected " +
                           std::to_string(kMailboxSize));
    }
    MailboxLayout* map = nullptr;
    try {
        map = map_segment(fd, name);
    } catch (...) {
        ::close(fd);
        throw;
    }
    ::close(fd);
    Mailbox mb(name, map);
    if (map->magic != kMailboxMagic || map->version != kLayoutVersion)
        throw MailboxError("mailbox " + name + " is not a tolerance mailbox of layout version " +
                           std::to_string(kLayoutVersion));
    uint32_t s = map->state.load(std::memory_order_acquire);
    if (s != static_cast<uint32_t>(State::Idle))
        throw MailboxError("mailbox " + name + " is already in state " + state_name(s));
    return mb;
}

Mailbox::Mailbox(Mailbox&& other) noexcept : name_(std::move(other.name_)), map_(other.map_) {
    other.map_ = nullptr;
}

Mailbox& Mailbox::operator=(Mailbox&& other) noexcept {
    if (this != &other) {
        close();
        name_ = std::move(other.name_);
        map_ = other.map_;
        other.map_ = nullptr;
    }
    return *this;
}

Mailbox::~Mailbox() { close(); }

void Mailbox::close() noexcept {
    if (map_) munmap(static_cast<void*>(map_), kMailboxSize);
    map_ = nullptr;
}

std::atomic<uint32_t>* Mailbox::state_word() const noexcept { return map_ ? &map_->state : nullptr; }

uint32_t Mailbox::load_state() const {
    if (!map_) throw MailboxError("mailbox " + name_ + " is closed");
    return map_->state.load(std::memory_order_acquire);
}

MailboxReport Mailbox::read() const {
    uint32_t s = load_state();  // acquire: the payload written before the release is visible
    MailboxImage img;
    std::memcpy(&img, static_cast<const void*>(map_), kMailboxSize);
    img.state = s;
    return parse_mailbox(&img, kMailboxSize);
}

void Mailbox::begin(int32_t pid) {
    if (!map_) throw MailboxError("mailbox " + name_ + " is closed");
    map_->child_pid = pid;
    map_->state.store(static_cast<uint32_t>(State::Booting), std::memory_order_release);
}

void Mailbox::publish(State s) {
    map_->state.store(static_cast<uint32_t>(s), std::memory_order_release);
#ifdef __linux__
    futex_wake_shared(&map_->state);
#endif
}

void Mailbox::publish_success(const ChipContextData& ctx) {
    if (!map_) throw MailboxError("mailbox " + name_ + " is closed");
    ContextSlot slot;
    std::memset(&slot, 0, sizeof slot);
    copy_field(slot.device, kDeviceCap, ctx.device, "device");
    slot.device_id = ctx.device_id;
    slot.rank = ctx.rank;
    slot.nranks = ctx.nranks;
    slot.affinity_applied = ctx.affinity_applied ? 1u : 0u;
    slot.threads = ctx.threads;
    copy_field(slot.cpus, kCpusCap, ctx.cpus, "cpu list");
    std::memcpy(static_cast<void*>(&map_->context), &slot, sizeof slot);
    map_->error_code = 0;
    map_->error_len = 0;
    std::memset(map_->error, 0, kErrorCap);
    publish(State::Success);
}

void Mailbox::publish_error(int32_t code, const std::string& message) {
    if (!map_) throw MailboxError("mailbox " + name_ + " is closed");
    std::string msg = message.substr(0, message.find('\0'));
    if (msg.empty()) msg = "unknown error";
    if (msg.size() > kErrorCap - 1) {
        std::size_t cut = kErrorCap - 1;
        // do not split a UTF-8 sequence
        while (cut > 0 && (static_cast<unsigned char>(msg[cut]) & 0xC0) == 0x80) --cut;
        msg.resize(cut);
    }
    std::memset(map_->error, 0, kErrorCap);
    std::memcpy(map_->error, msg.data(), msg.size());
    map_->error_len = static_cast<uint32_t>(msg.size());
    map_->error_code = code;
    if (map_->child_pid <= 0) map_->child_pid = static_cast<int32_t>(getpid());
    publish(State::Error);
}

// ---------------------------------------------------------------- wait

std::string wait_mechanism() {
#ifdef __linux__
    std::string s = waitv_enabled() ? "futex_waitv" : "futex";
    s += pidfd_enabled() ? "+pidfd" : "+waitid-poll";
    return s;
#else
    return "backoff-poll";
#endif
}

WaitResult wait_all(const std::vector<const Mailbox*>& boxes, const std::vector<int>& pids,
                    int64_t deadline_ns) {
    const std::size_t n = boxes.size();
    if (pids.size() != n) throw MailboxError("wait_all: one pid per mailbox is required");
    std::vector<std::atomic<uint32_t>*> words(n);
    for (std::size_t i = 0; i < n; ++i) {
        if (!boxes[i] || !boxes[i]->mapped()) throw MailboxError("wait_all: a mailbox is closed");
        words[i] = boxes[i]->state_word();
    }
    std::vector<std::pair<std::size_t, uint32_t>> pending;
    pending.reserve(n);

#ifdef __linux__
    // Start watching deaths only if the first look does not already settle it.
    std::unique_ptr<DeathWatcher> watcher;
    bool first = true;
#else
    int64_t backoff_ns = 50000;
#endif
    for (;;) {
#ifdef __linux__
        uint32_t gen = watcher ? watcher->generation() : 0;  // read before the death checks
#endif
        pending.clear();
        for (std::size_t i = 0; i < n; ++i) {
            uint32_t s = words[i]->load(std::memory_order_acquire);
            if (s == static_cast<uint32_t>(State::Error)) return {WaitKind::Error, i, s};
            if (s > static_cast<uint32_t>(State::Error)) return {WaitKind::Corrupt, i, s};
            if (s != static_cast<uint32_t>(State::Success)) pending.emplace_back(i, s);
        }
        if (pending.empty()) return {WaitKind::AllReady, 0, 0};
        for (auto& ps : pending) {
            std::size_t i = ps.first;
            if (pids[i] <= 0 || !child_exited(pids[i])) continue;
            // It died; its last store happened before its death, so this load is final.
            uint32_t s = words[i]->load(std::memory_order_acquire);
            if (s == static_cast<uint32_t>(State::Success)) continue;
            if (s == static_cast<uint32_t>(State::Error)) return {WaitKind::Error, i, s};
            if (s > static_cast<uint32_t>(State::Error)) return {WaitKind::Corrupt, i, s};
            return {WaitKind::Died, i, s};
        }
        int64_t now = monotonic_ns();
        if (now >= deadline_ns) return {WaitKind::Timeout, pending.front().first, pending.front().second};

#ifdef __linux__
        if (first) {
            first = false;
            watcher.reset(new DeathWatcher(pids, words));
            continue;  // re-check with the watcher in place, then sleep
        }
        if (waitv_enabled()) {
            FutexWaitv v[kWaitvMax];
            std::size_t k = 0;
            for (auto& ps : pending) {
                if (k + 1 >= kWaitvMax) break;
                v[k].val = ps.second;
                v[k].uaddr = reinterpret_cast<uintptr_t>(word_ptr(words[ps.first]));
                v[k].flags = kFutex2Size32;  // shared: the word lives in another process's page
                v[k].reserved = 0;
                ++k;
            }
            v[k].val = gen;
            v[k].uaddr = reinterpret_cast<uintptr_t>(word_ptr(watcher->gen_word()));
            v[k].flags = kFutex2Size32 | kFutex2Private;
            v[k].reserved = 0;
            ++k;
            // With more chips than futex_waitv takes, the others are looked at every 50 ms.
            int64_t until = pending.size() + 1 > kWaitvMax ? std::min(deadline_ns, now + 50000000)
                                                           : deadline_ns;
            timespec ts = to_timespec(until);
            long r = syscall(kSysFutexWaitv, v, static_cast<unsigned>(k), 0u, &ts, CLOCK_MONOTONIC);
            if (r < 0) {
                if (errno == EINTR) return {WaitKind::Interrupted, 0, 0};
                if (errno == ENOSYS || errno == EINVAL || errno == EPERM)
                    g_waitv_state.store(0, std::memory_order_relaxed);
                // EAGAIN (a value changed), ETIMEDOUT: look again
            }
            continue;
        }
        {
            // futex_waitv unavailable: sleep on the first pending word, in slices.
            std::size_t i = pending.front().first;
            timespec ts = to_timespec(std::min(deadline_ns, now + 10000000));
            long r = syscall(SYS_futex, word_ptr(words[i]), FUTEX_WAIT_BITSET,
                             pending.front().second, &ts, nullptr, FUTEX_BITSET_MATCH_ANY);
            if (r < 0 && errno == EINTR) return {WaitKind::Interrupted, 0, 0};
            continue;
        }
#else
        int64_t sleep_ns = std::min(backoff_ns, deadline_ns - now);
        timespec ts = to_timespec(sleep_ns);
        if (nanosleep(&ts, nullptr) != 0 && errno == EINTR) return {WaitKind::Interrupted, 0, 0};
        backoff_ns = std::min<int64_t>(backoff_ns * 2, 5000000);
#endif
    }
}

// ---------------------------------------------------------------- bench

std::vector<int64_t> bench_wake_latency(const std::string& mode, int iterations) {
    if (mode != "futex" && mode != "sleep1ms")
        throw MailboxError("bench mode must be 'futex' or 'sleep1ms'");
    std::string name = make_segment_name('b');
    Mailbox mb = Mailbox::create(name);
    struct Unlink {
        std::string n;
        ~Unlink() { shm_unlink(n.c_str()); }
    } unlink_guard{name};
    std::vector<int64_t> out;
    out.reserve(static_cast<std::size_t>(std::max(iterations, 0)));
    std::atomic<uint32_t>* word = mb.state_word();
    for (int it = 0; it < iterations; ++it) {
        word->store(0, std::memory_order_release);
        std::atomic<int64_t> t0{0};
        std::thread waker([&] {
            timespec d = to_timespec(2000000 + (it % 7) * 137000);  // let the waiter fall asleep
            nanosleep(&d, nullptr);
            t0.store(monotonic_ns(), std::memory_order_relaxed);
            word->store(static_cast<uint32_t>(State::Success), std::memory_order_release);
#ifdef __linux__
            futex_wake_shared(word);
#endif
        });
        if (mode == "futex") {
            std::vector<const Mailbox*> boxes{&mb};
            std::vector<int> pids{-1};
            for (;;) {
                WaitResult r = wait_all(boxes, pids, monotonic_ns() + 5000000000LL);
                if (r.kind != WaitKind::Interrupted) break;
            }
        } else {
            timespec ms = to_timespec(1000000);
            while (word->load(std::memory_order_acquire) == 0) nanosleep(&ms, nullptr);
        }
        int64_t t1 = monotonic_ns();
        waker.join();
        out.push_back(t1 - t0.load(std::memory_order_relaxed));
    }
    return out;
}

}  // namespace tolerance::boot
