// Private machinery behind Local: the process-wide registry of slot ids and per-thread records. Nothing
// here is part of the public API.
//
// Design
// - Every Local takes a slot id (a small integer) on first use. Each thread's values are a Table (see
//   record.hpp) indexed by id, reached through the thread-local `current_table`. The read path is: load
//   the pointer, compare the id with the capacity, load the slot. No lock, no read-modify-write; an id that
//   is not in the table (no slot yet, table too small, Local destroyed) fails the bounds check.
// - Storing or removing the calling thread's own value, when its table is big enough, takes no lock either:
//   only the thread running on a table stores into it, and removals by other threads (a Local being
//   destroyed, fork) use an atomic exchange, so exactly one side gets a value. A removed or replaced value
//   may still be read by a for_each visit on another thread: the remover checks `visitors_` after its
//   exchange (every visit increments it before reading a slot, all sequentially consistent), and when a
//   visit may be running it takes the lock, which the visit holds, before it destroys the value.
// - Everything else (making or growing a table, taking a slot id, visiting, thread exit, fork) takes the
//   registry lock, which is re-entrant per thread. Values are destroyed outside the lock, except when the
//   caller already holds it (inside for_each).
// - Thread exit destroys a thread's values through the platform's thread-exit hook (teardown.hpp).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "../config.hpp"
#include "../errors.hpp"
#include "platform.hpp"
#include "record.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {

/// How many times the calling thread holds the registry lock (the lock is re-entrant per thread).
CTXLOCAL_EXPORT inline thread_local unsigned lock_depth = 0;
/// The calling thread's own record (null until it stores a value or enters a Storage, and again after its
/// exit teardown).
CTXLOCAL_EXPORT inline thread_local ThreadRecord* thread_record CTXLOCAL_TLS_MODEL = nullptr;
/// The index the next thread record gets (ThreadRecord::index).
CTXLOCAL_EXPORT inline std::atomic<std::uint32_t> last_thread_index{0};
/// Its address identifies the calling thread (the same in every shared library).
CTXLOCAL_EXPORT inline thread_local char thread_tag = 0;

/// Set when the process starts exiting (exit() or return from main): from then on destroying a Local
/// destroys only the calling thread's value, since other threads may still be running and using theirs.
CTXLOCAL_EXPORT inline std::atomic<bool> process_exiting{false};

/// A record's values being destroyed (thread exit, a released Storage), on the thread `thread`. Lives on
/// that thread's stack and is linked into the registry while it runs, so that a Local destroyed meanwhile
/// knows which of its values have a destructor running, and where.
struct Teardown {
    Record* record;
    const void* thread;
    std::uint32_t destroying;  // id of the value whose destructor runs now, or 0
    Teardown* next;
};
/// A thread waiting in release_id for values of `id` whose destructors run on other threads.
struct Waiter {
    const void* thread;
    std::uint32_t id;
    Waiter* next;
};

class Registry;
CTXLOCAL_EXPORT inline std::atomic<Registry*> registry_instance{nullptr};

/// The process-wide registry: slot ids, their deleters, and the list of live records.
/// Created on first use and never destroyed, so it outlives every static Local.
class Registry {
public:
    static Registry& instance() {
        Registry* r = registry_instance.load(std::memory_order_acquire);
        return r != nullptr ? *r : create();
    }

    /// Takes a free slot id for a Local whose values are destroyed by `deleter`.
    std::uint32_t acquire_id(Deleter deleter) {
        Lock lock(*this);
        if (!free_ids_.empty()) {
            const std::uint32_t id = free_ids_.back();
            free_ids_.pop_back();
            deleters_[id] = deleter;
            return id;
        }
        if (deleters_.size() >= dead_id - 1) throw error("ctxlocal: too many live Local objects");
        const auto id = static_cast<std::uint32_t>(deleters_.size());
        // Reserved ahead so that freeing an id (in noexcept paths) never allocates.
        free_ids_.reserve(deleters_.size() + 1);
        pending_.reserve(deleters_.size() + 1);
        deleters_.push_back(deleter);  // the reserve above makes the push below non-throwing
        pending_.push_back(0);
        return id;
    }

    /// Destroys every record's value for `id` on the calling thread, waits for values whose destructors
    /// run on exiting threads at this moment, and frees the id for reuse. Never allocates.
    void release_id(std::uint32_t id) noexcept;

    /// The calling thread's record, made on first use. Throws unbound_error when the thread is past its
    /// exit; std::bad_alloc or ctxlocal::error (nothing made) when it cannot be made.
    Record& ensure_record() {
        if (Record* r = current_record()) return *r;
        return ensure_thread_record();
    }

    /// The calling thread's own record, made on first use. Throws as ensure_record().
    ThreadRecord& ensure_thread_record() {
        if (ThreadRecord* r = thread_record) return *r;
        Lock lock(*this);
        attach_thread(1);
        return *thread_record;
    }

    /// Registers `hook` to run at every Storage release, with the Storage entered, before its values are
    /// destroyed (Contexts pops the contexts left pushed there, with teardown). Registering twice is a no-op.
    void add_release_hook(void (*hook)() noexcept) {
        Lock lock(*this);
        for (auto* h : release_hooks_) {
            if (h == hook) return;
        }
        release_hooks_.push_back(hook);
    }

    /// Destroys the values of a Storage whose last reference was just dropped, with it entered on the
    /// calling thread, then frees it, unless a value destructor took a new handle to it (then the last
    /// of those releases it again). Never allocates.
    void release_storage(Record& r) noexcept;

    /// Throws unbound_error when the calling thread may not store new values in the table W (it is past its
    /// exit, or the table's teardown has run for CTXLOCAL_MAX_EXIT_ROUNDS rounds). Called before a value is
    /// made, so that a destructor that keeps re-creating values in a teardown stops instead of recursing.
    template <Where W>
    static void check_can_store() {
        const Table* t = table_of<W>();
        if (CTXLOCAL_LIKELY(t->state == TableState::open)) return;
        throw unbound_error(t->state == TableState::finished ? finished_message : closed_message);
    }

    /// Stores `value` as the value for `id` in the table W and returns the value it displaced (null if
    /// none). Throws unbound_error, storing nothing, when the table refuses new values.
    template <Where W>
    void* exchange(std::uint32_t id, void* value) {
        Table* t = table_of<W>();
        if (CTXLOCAL_LIKELY(id < t->capacity && t->state == TableState::open)) {  // no lock: see above
            void* old = t->slots()[id].exchange(value, std::memory_order_seq_cst);
            if (old != nullptr) wait_for_visitors();
            return old;
        }
        return exchange_slow<W>(id, value);
    }

    /// Removes the value for `id` from the table W and returns it (null if none). Takes no lock unless a
    /// for_each visit may be reading the value.
    template <Where W>
    void* take(std::uint32_t id) noexcept {
        Table* t = table_of<W>();
        if (id >= t->capacity) return nullptr;
        // Only this thread stores into its own slots: an empty slot stays empty.
        if (t->slots()[id].load(std::memory_order_acquire) == nullptr) return nullptr;
        void* old = t->slots()[id].exchange(nullptr, std::memory_order_seq_cst);
        if (old != nullptr) wait_for_visitors();
        return old;
    }

    /// Calls f(void*) for every record's value for `id`, holding the lock, so that no visited value is
    /// destroyed by its thread exiting meanwhile.
    template <class F>
    void visit(std::uint32_t id, F&& f) {
        Lock lock(*this);
        // Announced before any slot is read (see take()); withdrawn on every way out, exceptions included.
        struct Visiting {
            std::atomic<unsigned>& visitors;
            explicit Visiting(std::atomic<unsigned>& v) : visitors(v) {
                visitors.fetch_add(1, std::memory_order_seq_cst);
            }
            ~Visiting() { visitors.fetch_sub(1, std::memory_order_seq_cst); }
            Visiting(const Visiting&) = delete;
            Visiting& operator=(const Visiting&) = delete;
        } visiting(visitors_);
        const unsigned generation = fork_generation_;
        for (Record* r = head_; r != nullptr; r = r->next) {
            const Table* t = r->table;  // re-read per record: f may grow the calling thread's table
            if (id >= t->capacity) continue;
            if (void* p = t->slots()[id].load(std::memory_order_seq_cst)) {
                f(p);
                // f forked and we are the child: the other records are gone.
                if (generation != fork_generation_) return;
            }
        }
    }

    /// How many records hold a value for `id`.
    std::size_t count(std::uint32_t id) {
        Lock lock(*this);
        std::size_t n = 0;
        for (const Record* r = head_; r != nullptr; r = r->next) {
            const Table* t = r->table;
            if (id < t->capacity && t->slots()[id].load(std::memory_order_relaxed) != nullptr) ++n;
        }
        return n;
    }

    Registry(const Registry&) = delete;
    Registry& operator=(const Registry&) = delete;

    static void on_process_exit() noexcept { process_exiting.store(true, std::memory_order_release); }

    /// Marks the start of process exit as early as the platform can tell (platform::on_exit_start: the
    /// main thread's thread_local destructors, first thing in exit(), where they run first). Armed during
    /// static initialisation (see exit_sentinel_armed below) and again when the main thread first stores
    /// a value.
    static void arm_exit_sentinel() noexcept { platform::on_exit_start(&Registry::on_process_exit); }

private:
    static constexpr const char* closed_message =
        "ctxlocal: cannot create a value on this thread: it is exiting and its values' destructors kept "
        "creating new values for more than CTXLOCAL_MAX_EXIT_ROUNDS rounds";
    static constexpr const char* finished_message =
        "ctxlocal: cannot create a value on this thread: its values were already destroyed at thread exit "
        "(a later thread-exit handler tried to use a Local)";

    /// Holds the registry mutex; re-entrant on one thread (for_each callbacks may use Locals).
    class Lock {
    public:
        explicit Lock(Registry& r) noexcept : r_(r) {
            if (lock_depth == 0) r_.mutex_.lock();
            ++lock_depth;
        }
        ~Lock() {
            if (--lock_depth == 0) r_.mutex_.unlock();
        }
        Lock(const Lock&) = delete;
        Lock& operator=(const Lock&) = delete;

    private:
        Registry& r_;
    };

    /// The locked path of exchange(): the thread's first value (it has no record yet), a Storage's first
    /// value (its record is not linked yet), a table too small for `id`, or a table that refuses values.
    template <Where W>
    CTXLOCAL_NOINLINE void* exchange_slow(std::uint32_t id, void* value) {
        Lock lock(*this);
        Table* t = table_of<W>();
        if (t->record == nullptr) t = attach_thread(id);
        if (t->state != TableState::open) throw unbound_error(closed_message);
        if (!t->record->linked) link(t->record);
        if (id >= t->capacity) t = grow(*t->record, id);
        // Under the lock: no visit is running, so the old value may be destroyed once it is returned.
        return t->slots()[id].exchange(value, std::memory_order_seq_cst);
    }

    /// Called after the calling thread took a value out of its slot without the lock: returns once no
    /// for_each visit can still be using it. A visit holds the lock throughout, so taking the lock waits
    /// for the visits that may have read the slot before the exchange; a visit that starts later sees the
    /// new content (both sides are sequentially consistent).
    void wait_for_visitors() noexcept {
        if (CTXLOCAL_LIKELY(visitors_.load(std::memory_order_seq_cst) == 0)) return;
        Lock lock(*this);
    }

    Registry() {
        deleters_.push_back(nullptr);  // id 0 is "no slot yet"
        pending_.push_back(0);
        if (!platform::make_thread_exit_key(key_, &Registry::on_thread_exit))
            throw error("ctxlocal: cannot create the thread-exit hook (pthread_key_create failed)");
    }

    static Registry& create() {
        auto* fresh = new Registry();
        Registry* expected = nullptr;
        if (!registry_instance.compare_exchange_strong(expected, fresh, std::memory_order_acq_rel)) {
            platform::delete_thread_exit_key(fresh->key_);
            delete fresh;
            return *expected;
        }
        platform::on_fork(&Registry::before_fork, &Registry::after_fork_parent, &Registry::after_fork_child);
        platform::on_process_exit(&Registry::on_process_exit);
        return *fresh;
    }

    /// The capacity a table needs for `id`: a power of two, at least 8.
    static std::uint32_t capacity_for(std::uint32_t id, std::uint32_t at_least) noexcept {
        std::uint32_t capacity = at_least < 8 ? 8 : at_least;
        while (capacity <= id) capacity = capacity > dead_id / 2 ? dead_id : capacity * 2;
        return capacity;
    }

    /// Makes the calling thread's record, with room for `id`, and runs the thread on it. Under the lock.
    /// Throws (making nothing) when the thread is past its exit or when memory or the exit hook fail.
    Table* attach_thread(std::uint32_t id) {
        if (current_table->state == TableState::finished || platform::thread_exited())
            throw unbound_error(finished_message);
        std::uint32_t index;  // never 0 (no thread) or storage_releasing, also after it wraps
        do {
            index = last_thread_index.fetch_add(1, std::memory_order_relaxed) + 1;
        } while (index == 0 || index == storage_releasing);
        auto record = std::make_unique<ThreadRecord>(index);
        const std::uint32_t capacity = capacity_for(id, 8);
        Table* t = Table::make(capacity, record.get());
        if (!platform::set_thread_exit_value(key_, record.get())) {
            Table::free(t);
            throw error(
                "ctxlocal: cannot register this thread for thread-exit cleanup (pthread_setspecific failed, "
                "out of memory); nothing was stored");
        }
        record->table = t;
        link(record.get());
        thread_record = record.release();
        if (current_table == thread_table) current_table = t;  // not inside a Storage
        thread_table = t;
        if (platform::is_main_thread()) arm_exit_sentinel();
        return t;
    }

    void link(Record* r) noexcept {
        r->linked = true;
        r->prev = nullptr;
        r->next = head_;
        if (head_ != nullptr) head_->prev = r;
        head_ = r;
    }
    void unlink(Record* r) noexcept {
        r->linked = false;
        if (r->prev != nullptr)
            r->prev->next = r->next;
        else
            head_ = r->next;
        if (r->next != nullptr) r->next->prev = r->prev;
    }

    /// Grows the table of `r`, which the calling thread runs on (or owns), so that `id` fits; returns the new
    /// table.
    /// Only the thread running on a table grows it, and only under the lock, so readers on other threads
    /// (also under the lock) never see a torn table. If it throws, nothing changed.
    static Table* grow(Record& r, std::uint32_t id) {
        Table* old = r.table;
        const std::uint32_t capacity = capacity_for(id, old->capacity);
        Table* fresh = Table::make(capacity, &r);
        for (std::uint32_t i = 0; i < old->capacity; ++i) {
            fresh->slots()[i].store(old->slots()[i].load(std::memory_order_relaxed),
                                    std::memory_order_relaxed);
        }
        fresh->state = old->state;
        r.table = fresh;
        if (current_table == old) current_table = fresh;
        if (thread_table == old) thread_table = fresh;
        if (old != &r.none) Table::free(old);
        return fresh;
    }

    // Teardown: destroying a record's values, and Locals destroyed meanwhile (defined in teardown.hpp).
    static void on_thread_exit(void* record) noexcept;
    void destroy_values(Record& r) noexcept;
    std::size_t collect(std::uint32_t id, void** out, std::size_t max) noexcept;
    void wait_for_destroyers(std::uint32_t id) noexcept;
    unsigned destroying(std::uint32_t id, const void* thread) const noexcept;
    bool waits_on(const void* thread, std::uint32_t id, std::size_t depth) const noexcept;
    void finish_pending(std::uint32_t id) noexcept;

    static void before_fork() noexcept {
        Registry& r = instance();
        if (lock_depth == 0) r.mutex_.lock();
        ++lock_depth;
    }

    static void after_fork_parent() noexcept {
        Registry& r = instance();
        if (--lock_depth == 0) r.mutex_.unlock();
    }

    static void after_fork_child() noexcept;

    std::mutex mutex_;
    std::condition_variable cv_;
    Record* head_ = nullptr;
    Record* orphans_ = nullptr;            // after fork(): the records of threads that the child lacks
    Teardown* teardowns_ = nullptr;        // teardowns running now, on any thread
    Waiter* waiters_ = nullptr;            // threads waiting in release_id
    std::vector<Deleter> deleters_;        // by id; null for a free or retired id
    std::vector<unsigned> pending_;        // by id; values whose destructor a teardown runs right now
    std::vector<std::uint32_t> free_ids_;  // capacity >= deleters_.size(): pushing never allocates
    std::vector<void (*)() noexcept> release_hooks_;
    unsigned fork_generation_ = 0;
    std::atomic<unsigned> visitors_{0};  // for_each visits running now (each holds the lock)
    platform::ThreadExitKey key_{};
};

/// Arms the main thread's exit sentinel during static initialisation of any program that includes
/// ctxlocal, so that process exit is noticed even when the main thread never stores a value (a server
/// whose main thread only starts workers, then returns or calls exit()).
inline const bool exit_sentinel_armed = [] {
    if (platform::is_main_thread()) Registry::arm_exit_sentinel();
    return true;
}();

}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal

#include "teardown.hpp"
