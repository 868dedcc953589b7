// The bootstrap mailbox: one 4096-byte POSIX shared-memory segment per chip.
//
// The parent creates it zero-filled (so the state word starts IDLE) and stamps the magic and
// layout version before the child exists. The child (tolerance.chip) opens it, stores BOOTING,
// brings its chip up, writes its payload (context or error message) and publishes SUCCESS or
// ERROR with a release store followed by a FUTEX_WAKE. The parent loads the state with acquire
// ordering, so everything written before the release store is visible to it.
//
// Reading a mailbox always works on a private snapshot of the 4096 bytes and validates every
// field (magic, version, state, lengths, termination, offsets): a corrupted or hostile
// mailbox is a MailboxError, never a crash or an over-read.
//
// This header knows nothing of Python.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace tolerance::boot {

enum class State : uint32_t { Idle = 0, Booting = 1, Success = 2, Error = 3 };
const char* state_name(uint32_t s) noexcept;

constexpr uint64_t kMailboxMagic = 0x31584f424c4f5421ULL;  // "!TOLBOX1" little-endian
constexpr uint32_t kLayoutVersion = 2;  // 2: no output window fields
constexpr std::size_t kMailboxSize = 4096;
constexpr std::size_t kErrorCap = 512;       // bytes of the error field, NUL included
constexpr std::size_t kDeviceCap = 8;        // "cpu" | "cuda" | "rocm", NUL included
constexpr std::size_t kNameCap = 32;         // segment names, NUL included (macOS: 31 max)
constexpr std::size_t kCpusCap = 256;        // applied CPU list as text ("0-3,8"), NUL included

struct ContextSlot {
    char device[kDeviceCap];     // 544
    int32_t device_id;           // 552: -1 for cpu, the physical index for cuda/rocm
    int32_t rank;                // 556
    int32_t nranks;              // 560
    uint32_t affinity_applied;   // 564: 1 if sched_setaffinity was applied (Linux cpu chips)
    uint32_t threads;            // 568: thread variables set for the workload (0: not set)
    char cpus[kCpusCap];         // 572: the CPU set the chip runs on, as a list ("0-3")
};

// The shared layout. `state` is the only word two processes touch concurrently.
struct MailboxLayout {
    uint64_t magic;               // 0
    uint32_t version;             // 8
    std::atomic<uint32_t> state;  // 12: futex word, IDLE -> BOOTING -> SUCCESS | ERROR
    int32_t child_pid;            // 16
    int32_t error_code;           // 20: errno-like cause, 0 if none
    uint32_t error_len;           // 24: strlen(error) < kErrorCap
    uint32_t reserved;            // 28
    char error[kErrorCap];        // 32
    ContextSlot context;          // 544
    char tail[kMailboxSize - 544 - sizeof(ContextSlot)];
};

// The same bytes with a plain state word: what a snapshot is parsed as.
struct MailboxImage {
    uint64_t magic;
    uint32_t version;
    uint32_t state;
    int32_t child_pid;
    int32_t error_code;
    uint32_t error_len;
    uint32_t reserved;
    char error[kErrorCap];
    ContextSlot context;
    char tail[kMailboxSize - 544 - sizeof(ContextSlot)];
};

// The state word is a process-shared futex: it must be a plain, lock-free 32-bit word with no
// hidden lock or pointer, so that two processes mapping the same page agree on it.
static_assert(std::atomic<uint32_t>::is_always_lock_free, "state word must be lock-free");
static_assert(sizeof(std::atomic<uint32_t>) == 4 && alignof(std::atomic<uint32_t>) == 4,
              "state word must be a bare 32-bit word (futex)");
static_assert(std::is_standard_layout<MailboxLayout>::value, "layout must be standard");
static_assert(std::is_trivially_destructible<MailboxLayout>::value,
              "the mapping is never destroyed as an object");
static_assert(std::is_trivially_copyable<MailboxImage>::value, "snapshot is copied bytewise");
static_assert(sizeof(MailboxLayout) == kMailboxSize, "mailbox must be exactly 4096 bytes");
static_assert(sizeof(MailboxImage) == kMailboxSize, "snapshot must be exactly 4096 bytes");
static_assert(offsetof(MailboxLayout, magic) == 0, "offset");
static_assert(offsetof(MailboxLayout, version) == 8, "offset");
static_assert(offsetof(MailboxLayout, state) == 12, "offset");
static_assert(offsetof(MailboxLayout, child_pid) == 16, "offset");
static_assert(offsetof(MailboxLayout, error_code) == 20, "offset");
static_assert(offsetof(MailboxLayout, error_len) == 24, "offset");
static_assert(offsetof(MailboxLayout, error) == 32, "offset");
static_assert(offsetof(MailboxLayout, context) == 544, "offset");
static_assert(offsetof(ContextSlot, device_id) == 8, "offset");
static_assert(offsetof(ContextSlot, affinity_applied) == 20, "offset");
static_assert(offsetof(ContextSlot, cpus) == 28, "offset");
static_assert(offsetof(MailboxImage, state) == offsetof(MailboxLayout, state), "image");
static_assert(offsetof(MailboxImage, error) == offsetof(MailboxLayout, error), "image");
static_assert(offsetof(MailboxImage, context) == offsetof(MailboxLayout, context), "image");

// A mailbox failed validation, or a shared-memory call failed.
class MailboxError : public std::runtime_error {
   public:
    using std::runtime_error::runtime_error;
};

struct ChipContextData {
    std::string device;  // cpu | cuda | rocm
    int32_t device_id = -1;
    int32_t rank = 0;
    int32_t nranks = 1;
    bool affinity_applied = false;
    uint32_t threads = 0;
    std::string cpus;
};

// A validated snapshot of a mailbox.
struct MailboxReport {
    State state = State::Idle;
    int32_t child_pid = 0;
    int32_t error_code = 0;
    std::string error;        // ERROR only
    ChipContextData context;  // SUCCESS only
};

// Validates a 4096-byte image; throws MailboxError naming the first bad field.
MailboxReport parse_mailbox(const void* bytes, std::size_t size);

// "/tol-<pid hex>-<counter hex><kind>-<6 random hex>[.<tag>]", at most 30 characters, unique
// per run. The tag (at most kTagCap characters of 0-9a-z, "" for none) lets a job or a test
// tell its own segments from another's on the same machine.
constexpr std::size_t kTagCap = 4;
std::string make_segment_name(char kind, const std::string& tag = "");
// Throws MailboxError if `tag` is not a valid segment tag ("" is valid: no tag).
void check_segment_tag(const std::string& tag);
// Throws MailboxError if `name` is not a valid segment name for this project.
void check_segment_name(const std::string& name);
// shm_unlink; false if it did not exist. Throws MailboxError on other failures.
bool unlink_segment(const std::string& name);

// RAII owner of one mapped mailbox (unmaps on destruction; unlink is explicit).
class Mailbox {
   public:
    // Parent: create zero-filled (O_EXCL), its pages reserved (posix_fallocate: a full
    // /dev/shm is a MailboxError naming it, never a SIGBUS), stamp magic and version; IDLE.
    static Mailbox create(const std::string& name);
    // Child: open an existing mailbox, check size, magic, version and that it is IDLE.
    static Mailbox open(const std::string& name);

    Mailbox(Mailbox&& other) noexcept;
    Mailbox& operator=(Mailbox&& other) noexcept;
    Mailbox(const Mailbox&) = delete;
    Mailbox& operator=(const Mailbox&) = delete;
    ~Mailbox();

    const std::string& name() const noexcept { return name_; }
    bool mapped() const noexcept { return map_ != nullptr; }
    uint32_t load_state() const;  // acquire
    // The futex word, for waiting; nullptr once closed.
    std::atomic<uint32_t>* state_word() const noexcept;
    MailboxReport read() const;  // snapshot (after an acquire load) + validation
    void close() noexcept;       // unmap now
    bool unlink() const { return unlink_segment(name_); }

    // Child side.
    void begin(int32_t pid);
    void publish_success(const ChipContextData& ctx);
    void publish_error(int32_t code, const std::string& message);

   private:
    Mailbox(std::string name, MailboxLayout* map) : name_(std::move(name)), map_(map) {}
    void publish(State s);
    std::string name_;
    MailboxLayout* map_ = nullptr;
};

// Waiting on many mailboxes with one monotonic deadline.
enum class WaitKind { AllReady, Error, Died, Timeout, Corrupt, Interrupted };
struct WaitResult {
    WaitKind kind = WaitKind::AllReady;
    std::size_t index = 0;    // the chip concerned (Error, Died, Timeout, Corrupt)
    uint32_t raw_state = 0;   // its state word when the wait ended
};

int64_t monotonic_ns() noexcept;

// Returns when every mailbox is SUCCESS, or at the first ERROR, invalid state word, death of
// a child whose mailbox is not yet SUCCESS (pids[i] <= 0: not watched), or at `deadline_ns`
// (CLOCK_MONOTONIC). Returns Interrupted when a signal interrupted the sleep (the caller runs
// its signal handlers and calls again with the same deadline). Never reaps a child.
WaitResult wait_all(const std::vector<const Mailbox*>& boxes, const std::vector<int>& pids,
                    int64_t deadline_ns);

// Which mechanism wait_all uses on this system (for the benchmark and the tests).
std::string wait_mechanism();

// Wake latency (ns) of `iterations` hand-offs between two threads through a shared state word:
// mode "futex" (the mailbox wait) or "sleep1ms" (a 1 ms sleep-poll loop).
std::vector<int64_t> bench_wake_latency(const std::string& mode, int iterations);

}  // namespace tolerance::boot
