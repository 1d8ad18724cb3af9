// Private machinery behind Local: the per-thread slot table and the process-wide registry of slots
// and threads. Nothing here is part of the public API.
//
// Design
// - Every Local takes a slot id (a small integer) on first use. Each thread owns a ThreadTable: an
//   array of slots, indexed by id, holding that thread's value for each Local (or null).
// - The calling thread's table is reached through one thread-local pointer, `current_table`, which
//   starts at a shared empty table of capacity 0. The read path is therefore: load the pointer, compare
//   the id with the capacity, load the slot. No lock, no read-modify-write; an id that is not in the
//   table (no slot yet, table too small, Local destroyed) fails the bounds check.
// - Storing or removing the calling thread's own value, when its table is already big enough, takes no
//   lock either: only the owning thread stores into its table, and removals by other threads (a Local
//   being destroyed, fork) use an atomic exchange, so exactly one side gets a value. A removed or
//   replaced value may still be read by a for_each visit in progress on another thread: the remover
//   checks `visitors_` after its exchange (and every visit increments it before reading a slot, all
//   sequentially consistent), and when a visit may be running it takes the lock, which the visit holds,
//   before it destroys the value. So the common per-request operations (first value of a thread, replace,
//   reset) never touch shared memory except to read `visitors_`, and scale across threads.
// - Everything else (making or growing a table, taking a slot id, visiting all threads, thread exit,
//   fork) takes the registry lock. Values are destroyed outside the lock, except when the caller already
//   holds it (inside for_each).
// - A pthread key destructor tears a thread's table down at thread exit. glibc runs key destructors
//   after the C++ thread_local destructors, so a thread_local object's destructor can still use Locals.
#pragma once

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "../config.hpp"
#include "../errors.hpp"
#include "marks.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {

/// Destroys a value stored in a slot.
using Deleter = void (*)(void*) noexcept;

/// Sentinel id of a Local that has been destroyed: it fails every bounds check.
inline constexpr std::uint32_t dead_id = 0xFFFFFFFFu;

/// One thread's values. slots[i] is the value for the Local with id i; slot 0 is never used, so that the
/// id 0 ("no slot yet") always reads as empty.
struct ThreadTable {
    std::uint32_t capacity = 0;
    std::atomic<void*>* slots = nullptr;
    ThreadTable* prev = nullptr;
    ThreadTable* next = nullptr;
    bool closed = false;  // thread exit has gone on too long: no new values
};

/// The table every thread starts with. Capacity 0; never written.
CTXLOCAL_EXPORT inline ThreadTable empty_table{};
/// The calling thread's table. Constant-initialised, so reading it is a plain thread-local load.
CTXLOCAL_EXPORT inline thread_local ThreadTable* current_table = &empty_table;
/// How many times the calling thread holds the registry lock (the lock is re-entrant per thread).
CTXLOCAL_EXPORT inline thread_local unsigned lock_depth = 0;
/// True once the calling thread's table was torn down at exit; later values are refused.
CTXLOCAL_EXPORT inline thread_local bool thread_finished = false;

/// Set when the process starts exiting (exit() or return from main): from then on destroying a Local
/// destroys only the calling thread's value, since other threads may still be running and using theirs.
CTXLOCAL_EXPORT inline std::atomic<bool> process_exiting{false};

class Registry;
CTXLOCAL_EXPORT inline std::atomic<Registry*> registry_instance{nullptr};

/// A value taken out of a slot by thread exit, waiting to be destroyed.
struct Doomed {
    void* value;  // null once destroyed, or taken over by release_id
    Deleter deleter;
    std::uint32_t id;
};
/// While the calling thread runs its exit teardown: the values of the current round.
CTXLOCAL_EXPORT inline thread_local std::vector<Doomed>* exiting_doomed = nullptr;
/// While the calling thread's exit teardown runs a value's destructor: that value's slot id (else 0).
CTXLOCAL_EXPORT inline thread_local std::uint32_t exiting_current_id = 0;

/// The process-wide registry: slot ids, their deleters, and the list of live thread tables.
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
        std::uint32_t id;
        if (!free_ids_.empty()) {
            id = free_ids_.back();
            free_ids_.pop_back();
            deleters_[id] = deleter;
        } else {
            if (deleters_.size() >= dead_id - 1) throw error("ctxlocal: too many live Local objects");
            id = static_cast<std::uint32_t>(deleters_.size());
            pending_.push_back(0);
            try {
                deleters_.push_back(deleter);
            } catch (...) {
                pending_.pop_back();  // keep both vectors the same length
                throw;
            }
        }
        return id;
    }

    /// Destroys every thread's value for `id` on the calling thread, waits for values that exiting
    /// threads are destroying at this moment, and frees the id for reuse.
    void release_id(std::uint32_t id) noexcept {
        std::vector<void*> doomed;
        Deleter deleter;
        {
            Lock lock(*this);
            deleter = deleters_[id];
            // A value destructor running in this thread's exit teardown is destroying the Local: the
            // values of this id queued by that teardown are destroyed here, not waited for.
            if (exiting_doomed != nullptr) {
                for (Doomed& d : *exiting_doomed) {
                    if (d.id == id && d.value != nullptr) {
                        doomed.push_back(d.value);
                        d.value = nullptr;
                        --pending_[id];
                    }
                }
            }
            for (ThreadTable* t = head_; t != nullptr; t = t->next) {
                if (id < t->capacity) {
                    if (void* p = t->slots[id].exchange(nullptr, std::memory_order_acq_rel))
                        doomed.push_back(p);
                }
            }
            // A value of this id whose destructor is running on this very thread (its exit teardown, where
            // that destructor destroys its own Local) is not waited for: only this thread can finish it.
            const unsigned own = exiting_current_id == id ? 1u : 0u;
            if (lock_depth == 1) {
                std::unique_lock<std::mutex> ul(mutex_, std::adopt_lock);
                cv_.wait(ul, [&] { return pending_[id] == own; });
                ul.release();
            }
            // Freed here when nothing is pending. Otherwise (inside for_each, where the lock is held by an
            // outer frame and we cannot wait) the id is retired, and the exiting thread that finishes its
            // last pending destruction frees it. Exactly one of the two frees it.
            // A retired id has a null deleter and pending values; it is not on the free list yet. (Not a
            // sentinel function: each shared library built with hidden visibility has its own copy of
            // every function here, so function addresses do not compare equal across libraries.)
            deleters_[id] = nullptr;
            if (pending_[id] == 0) free_ids_.push_back(id);
        }
        for (void* p : doomed) deleter(p);
    }

    /// Throws unbound_error when the calling thread may not store new values (it is past its exit, or
    /// its exit teardown has run for CTXLOCAL_MAX_EXIT_ROUNDS rounds). Called before a value is made, so
    /// that a destructor that keeps re-creating values at thread exit stops instead of recursing.
    static void check_can_store() {
        if (CTXLOCAL_LIKELY(!thread_finished && !current_table->closed)) return;
        throw unbound_error(thread_finished ? finished_message : closed_message);
    }

    /// Stores `value` as the calling thread's value for `id` and returns the value it displaced (null if
    /// none). Throws unbound_error, storing nothing, when the calling thread is past its exit.
    void* exchange(std::uint32_t id, void* value) {
        ThreadTable* t = current_table;
        if (CTXLOCAL_LIKELY(id < t->capacity && !t->closed)) {  // no lock: see the design notes above
            void* old = t->slots[id].exchange(value, std::memory_order_seq_cst);
            if (old != nullptr) wait_for_visitors();
            return old;
        }
        return exchange_slow(id, value);
    }

    /// Removes the calling thread's value for `id` and returns it (null if none). Takes no lock unless a
    /// for_each visit may be reading the value.
    void* take(std::uint32_t id) noexcept {
        ThreadTable* t = current_table;
        if (id >= t->capacity) return nullptr;
        // Only this thread stores into its own slots: an empty slot stays empty.
        if (t->slots[id].load(std::memory_order_acquire) == nullptr) return nullptr;
        void* old = t->slots[id].exchange(nullptr, std::memory_order_seq_cst);
        if (old != nullptr) wait_for_visitors();
        return old;
    }

    /// Calls f(void*) for every thread's value for `id`, holding the lock, so that no visited value is
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
        for (ThreadTable* t = head_; t != nullptr; t = t->next) {
            if (id >= t->capacity) continue;
            if (void* p = t->slots[id].load(std::memory_order_seq_cst)) {
                f(p);
                // f forked and we are the child: the other tables are gone.
                if (generation != fork_generation_) return;
            }
        }
    }

    /// How many threads hold a value for `id`.
    std::size_t count(std::uint32_t id) {
        Lock lock(*this);
        std::size_t n = 0;
        for (ThreadTable* t = head_; t != nullptr; t = t->next) {
            if (id < t->capacity && t->slots[id].load(std::memory_order_relaxed) != nullptr) ++n;
        }
        return n;
    }

    Registry(const Registry&) = delete;
    Registry& operator=(const Registry&) = delete;

    static void on_process_exit() noexcept { process_exiting.store(true, std::memory_order_release); }

    static bool is_main_thread() noexcept { return ::getpid() == static_cast<pid_t>(::syscall(SYS_gettid)); }

    /// The main thread's thread_local destructors run first thing in exit(), before static destructors
    /// and atexit handlers: this sentinel marks the start of process exit. Armed during static
    /// initialisation (see exit_sentinel_armed below) and again when the main thread first stores a value.
    static void arm_exit_sentinel() noexcept {
        struct Sentinel {
            ~Sentinel() { on_process_exit(); }
        };
        static thread_local Sentinel sentinel;
        (void)&sentinel;
    }

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
        explicit Lock(Registry& r) : r_(r) {
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

    /// The locked path of exchange(): the thread's first value (it has no table yet), a table too small
    /// for `id`, or a thread whose exit teardown refuses new values.
    CTXLOCAL_NOINLINE void* exchange_slow(std::uint32_t id, void* value) {
        Lock lock(*this);
        ThreadTable* t = current_table;
        if (t == &empty_table) t = attach_thread();
        if (t->closed) throw unbound_error(closed_message);
        if (id >= t->capacity) grow(*t, id);
        // Under the lock: no visit is running, so the old value may be destroyed once it is returned.
        return t->slots[id].exchange(value, std::memory_order_seq_cst);
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
        if (pthread_key_create(&key_, &Registry::on_thread_exit) != 0)
            throw error("ctxlocal: pthread_key_create failed");
    }

    static Registry& create() {
        auto* fresh = new Registry();
        Registry* expected = nullptr;
        if (!registry_instance.compare_exchange_strong(expected, fresh, std::memory_order_acq_rel)) {
            pthread_key_delete(fresh->key_);
            delete fresh;
            return *expected;
        }
        pthread_atfork(&Registry::before_fork, &Registry::after_fork_parent, &Registry::after_fork_child);
        std::atexit(&Registry::on_process_exit);
        return *fresh;
    }

    ThreadTable* attach_thread() {
        if (thread_finished) throw unbound_error(finished_message);
        if (is_main_thread()) arm_exit_sentinel();
        auto* t = new ThreadTable();
        t->next = head_;
        if (head_ != nullptr) head_->prev = t;
        head_ = t;
        pthread_setspecific(key_, t);
        current_table = t;
        return t;
    }

    void unlink(ThreadTable* t) noexcept {
        if (t->prev != nullptr)
            t->prev->next = t->next;
        else
            head_ = t->next;
        if (t->next != nullptr) t->next->prev = t->prev;
    }

    static void free_table(ThreadTable* t) noexcept {
        delete[] t->slots;
        delete t;
    }

    /// Grows the calling thread's table so that `id` fits. Only the owning thread grows its table, and
    /// only under the lock, so readers on other threads (also under the lock) never see a torn table.
    static void grow(ThreadTable& t, std::uint32_t id) {
        std::uint32_t capacity = t.capacity < 8 ? 8 : t.capacity;
        while (capacity <= id) capacity = capacity > dead_id / 2 ? dead_id : capacity * 2;
        auto* slots = new std::atomic<void*>[capacity]();
        for (std::uint32_t i = 0; i < t.capacity; ++i) {
            slots[i].store(t.slots[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
        }
        std::atomic<void*>* old = t.slots;
        t.slots = slots;
        t.capacity = capacity;
        delete[] old;
    }

    /// pthread key destructor: destroys the exiting thread's values on that thread, again and again while
    /// their destructors create new ones, then frees the table.
    static void on_thread_exit(void* arg) noexcept {
        auto* t = static_cast<ThreadTable*>(arg);
        Registry& r = instance();
        std::vector<Doomed> doomed;
        doomed.reserve(t->capacity);
        exiting_doomed = &doomed;
        for (unsigned round = 1;; ++round) {
            doomed.clear();
            {
                Lock lock(r);
                if (round >= CTXLOCAL_MAX_EXIT_ROUNDS) t->closed = true;
                for (std::uint32_t id = 1; id < t->capacity; ++id) {
                    if (void* p = t->slots[id].exchange(nullptr, std::memory_order_acq_rel)) {
                        doomed.push_back({p, r.deleters_[id], id});
                        ++r.pending_[id];
                    }
                }
            }
            if (doomed.empty()) break;
            // One at a time, finishing each before the next: a later destructor may destroy the Local of
            // an earlier value and must not wait for it.
            for (std::size_t i = 0; i < doomed.size(); ++i) {
                void* value = doomed[i].value;
                if (value == nullptr) continue;  // taken over by release_id
                doomed[i].value = nullptr;
                exiting_current_id = doomed[i].id;
                doomed[i].deleter(value);
                exiting_current_id = 0;
                Lock lock(r);
                r.finish_pending(doomed[i].id);
            }
        }
        exiting_doomed = nullptr;
        {
            Lock lock(r);
            r.unlink(t);
        }
        current_table = &empty_table;
        thread_finished = true;
        free_table(t);
    }

    void finish_pending(std::uint32_t id) noexcept {
        if (--pending_[id] != 0) return;
        // Retired: its Local was destroyed while we destroyed the value.
        if (deleters_[id] == nullptr) free_ids_.push_back(id);
        cv_.notify_all();
    }

    static void before_fork() noexcept {
        Registry& r = instance();
        if (lock_depth == 0) r.mutex_.lock();
        ++lock_depth;
    }

    static void after_fork_parent() noexcept {
        Registry& r = instance();
        if (--lock_depth == 0) r.mutex_.unlock();
    }

    /// In the child only the forking thread exists. Its table stays; the other threads' tables are
    /// unlinked without running their values' destructors (those may need locks that threads which no
    /// longer exist were holding). They are kept on the orphan list, neither freed nor reachable by any
    /// thread: the memory goes back to the system when the child exits, and leak checkers see it as
    /// still reachable rather than lost.
    static void after_fork_child() noexcept {
        Registry& r = instance();
        new (&r.cv_) std::condition_variable();  // waiters, if any, were other threads
        ++r.fork_generation_;
        for (ThreadTable* t = r.head_; t != nullptr;) {
            ThreadTable* next = t->next;
            if (t != current_table) {
                r.unlink(t);
                t->prev = nullptr;
                t->next = r.orphans_;
                r.orphans_ = t;
            }
            t = next;
        }
        for (std::uint32_t id = 1; id < r.pending_.size(); ++id) {
            if (r.pending_[id] != 0) {
                r.pending_[id] = 0;
                if (r.deleters_[id] == nullptr) r.free_ids_.push_back(id);  // retired
            }
        }
        if (--lock_depth == 0) r.mutex_.unlock();
    }

    std::mutex mutex_;
    std::condition_variable cv_;
    ThreadTable* head_ = nullptr;
    ThreadTable* orphans_ = nullptr;  // after fork(): the tables of threads that the child lacks
    std::vector<Deleter> deleters_;   // by id; null for a free or retired id
    std::vector<unsigned> pending_;   // by id; values an exiting thread is destroying right now
    std::vector<std::uint32_t> free_ids_;
    unsigned fork_generation_ = 0;
    std::atomic<unsigned> visitors_{0};  // for_each visits running now (each holds the lock)
    pthread_key_t key_{};
};

/// Arms the main thread's exit sentinel during static initialisation of any program that includes
/// ctxlocal, so that process exit is noticed even when the main thread never stores a value (a server
/// whose main thread only starts workers, then returns or calls exit()).
inline const bool exit_sentinel_armed = [] {
    if (Registry::is_main_thread()) Registry::arm_exit_sentinel();
    return true;
}();

}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
