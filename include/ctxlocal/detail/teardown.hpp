// Private machinery behind Local: destroying values. A thread's values at its exit and a released
// Storage's values (round after round while their destructors make new ones), every record's value of a
// Local that is destroyed (also while teardowns run), and the registry's bookkeeping in a child after
// fork().
//
// The rules that keep this free of hangs:
// - A teardown takes one value at a time out of its slot, under the lock, and destroys it outside the
//   lock; the values not reached yet stay in their slots, visible to the destructors that run first.
//   While a destructor runs, its value is "pending" for its id.
// - A Local destroyed meanwhile (release_id) takes every value of its id still in a slot and destroys it
//   itself. It waits only for values whose destructor is running right now on another thread, and not
//   even for those when waiting would close a cycle (two exiting threads whose value destructors destroy
//   each other's Local): then the id is retired, and the thread that finishes the last of those values
//   frees it.
// - Inside for_each (the lock is held further up the caller's stack) release_id never waits.
// - Nothing here allocates: the list of free ids has room for every id, and the rest is on the stack.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>

#include "registry.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {

/// Leaves every Storage the thread still has entered (see storage_entry.hpp).
void leave_all_entries(ThreadRecord& thread) noexcept;

/// The table to return to when leaving a Storage entered over `prev` (null or a thread record: the
/// thread's own values, whatever table they are in now; a Storage's record: its table now).
inline Table* table_to_restore(const Record* prev) noexcept {
    return prev != nullptr && prev->kind == RecordKind::storage ? prev->table : thread_table;
}

/// The platform's thread-exit hook: destroys the exiting thread's values on that thread, then frees its
/// record. A Storage still entered (a Scope that was never destroyed) is left first; the thread runs on
/// its own values for the teardown.
inline void Registry::on_thread_exit(void* arg) noexcept {
    auto* record = static_cast<ThreadRecord*>(arg);
    Registry& r = instance();
    leave_all_entries(*record);
    current_table = record->table;
    r.destroy_values(*record);
    Table* table;
    {
        Lock lock(r);
        r.unlink(record);
        table = record->table;
        current_table = &finished_table;
        thread_table = &finished_table;
        thread_record = nullptr;
    }
    if (table != &record->none) Table::free(table);
    delete record;
    platform::mark_thread_exited();
}

inline void Registry::release_storage(Record& r) noexcept {
    // A Storage that never stored a value (a fresh one from wrap(), say) is linked nowhere and holds
    // nothing: no hook can find anything in it, no other thread knows the record. `linked` is written
    // under the lock by a thread that had the Storage entered, and so held a reference; that thread's
    // release of its reference happens before the acq_rel decrement that made this the last one.
    if (!r.linked) {
        if (r.table != &r.none) Table::free(r.table);
        delete &r;
        return;
    }
    // Held by this release alone; `releasing` in the thread bits refuses entry on any thread meanwhile.
    r.storage_state.store(storage_one_ref | storage_releasing, std::memory_order_relaxed);
    const Record* prev = current_table->record;
    current_table = r.table;
    for (std::size_t i = 0;; ++i) {  // by index: a hook may register another
        void (*hook)() noexcept;
        {
            Lock lock(*this);
            if (i >= release_hooks_.size()) break;
            hook = release_hooks_[i];
        }
        hook();
    }
    destroy_values(r);
    current_table = table_to_restore(prev);
    const std::uint64_t before =
        r.storage_state.fetch_sub(storage_one_ref | storage_releasing, std::memory_order_acq_rel);
    if ((before >> 32) != 1) return;  // a value destructor took a new handle: its release frees it
    Table* table;
    {
        Lock lock(*this);
        if (r.linked) unlink(&r);
        table = r.table;
    }
    if (table != &r.none) Table::free(table);
    delete &r;
}

/// Destroys the values of `record`, which the calling thread runs on, again and again while their
/// destructors create new ones; after CTXLOCAL_MAX_EXIT_ROUNDS rounds the table refuses new values.
inline void Registry::destroy_values(Record& record) noexcept {
    Teardown self{&record, &thread_tag, 0, nullptr};
    {
        Lock lock(*this);
        self.next = teardowns_;
        teardowns_ = &self;
    }
    for (unsigned round = 1;; ++round) {
        bool found = false;
        if (round >= CTXLOCAL_MAX_EXIT_ROUNDS) {
            Lock lock(*this);
            record.table->state = TableState::closed;
        }
        // One at a time, in id order, each finished before the next is taken; a destructor may create
        // values (destroyed in the next round) and may grow the table, so it is looked up every time.
        for (std::uint32_t id = 1;; ++id) {
            void* value;
            Deleter deleter;
            {
                Lock lock(*this);
                const Table& t = *record.table;
                while (id < t.capacity && t.slots()[id].load(std::memory_order_relaxed) == nullptr) ++id;
                if (id >= t.capacity) break;
                value = t.slots()[id].exchange(nullptr, std::memory_order_acq_rel);
                deleter = deleters_[id];
                ++pending_[id];
                self.destroying = id;
            }
            found = true;
            deleter(value);
            Lock lock(*this);
            self.destroying = 0;
            finish_pending(id);
        }
        if (!found) break;
    }
    Lock lock(*this);
    for (Teardown** p = &teardowns_; *p != nullptr; p = &(*p)->next) {
        if (*p == &self) {
            *p = self.next;
            break;
        }
    }
}

/// Moves up to `max` values of `id` out of their slots into `out`. Under the lock.
inline std::size_t Registry::collect(std::uint32_t id, void** out, std::size_t max) noexcept {
    std::size_t n = 0;
    for (Record* r = head_; r != nullptr && n < max; r = r->next) {
        const Table* t = r->table;
        if (id >= t->capacity) continue;
        if (void* p = t->slots()[id].exchange(nullptr, std::memory_order_acq_rel)) out[n++] = p;
    }
    return n;
}

inline void Registry::release_id(std::uint32_t id) noexcept {
    Deleter deleter;
    {
        Lock lock(*this);
        deleter = deleters_[id];
    }
    for (;;) {
        constexpr std::size_t batch_size = 32;  // destroyed outside the lock, without allocating
        void* batch[batch_size];
        std::size_t n;
        {
            Lock lock(*this);
            n = collect(id, batch, batch_size);
            if (n < batch_size) {
                wait_for_destroyers(id);
                // Freed here when nothing is pending; otherwise retired (a null deleter and pending
                // values, not on the free list), and finish_pending frees it with the last value.
                deleters_[id] = nullptr;
                if (pending_[id] == 0) free_ids_.push_back(id);
            }
        }
        for (std::size_t i = 0; i < n; ++i) deleter(batch[i]);
        if (n < batch_size) return;
    }
}

/// Waits until no other thread is running the destructor of a value of `id`. Under the lock, held once.
inline void Registry::wait_for_destroyers(std::uint32_t id) noexcept {
    if (lock_depth != 1) return;  // inside for_each: the threads we would wait for need the lock
    Waiter self{&thread_tag, id, waiters_};
    waiters_ = &self;
    std::size_t waiters = 0;
    for (const Waiter* w = waiters_; w != nullptr; w = w->next) ++waiters;
    std::unique_lock<std::mutex> held(mutex_, std::adopt_lock);
    // Destructors of `id` running on this thread, further up its stack, are not waited for: only this
    // thread can finish them.
    cv_.wait(held, [&] {
        return pending_[id] == destroying(id, &thread_tag) || waits_on(&thread_tag, id, waiters);
    });
    held.release();  // the caller's Lock still owns the mutex
    for (Waiter** p = &waiters_; *p != nullptr; p = &(*p)->next) {
        if (*p == &self) {
            *p = self.next;
            break;
        }
    }
}

/// How many destructors of values of `id` run on `thread` now.
inline unsigned Registry::destroying(std::uint32_t id, const void* thread) const noexcept {
    unsigned n = 0;
    for (const Teardown* td = teardowns_; td != nullptr; td = td->next) {
        if (td->thread == thread && td->destroying == id) ++n;
    }
    return n;
}

/// True when some other thread destroying a value of `id` waits, directly or through a chain of at most
/// `depth` waiting threads, for a destructor running on `thread`: waiting for it would never end.
inline bool Registry::waits_on(const void* thread, std::uint32_t id, std::size_t depth) const noexcept {
    if (depth == 0) return false;
    for (const Teardown* td = teardowns_; td != nullptr; td = td->next) {
        if (td->destroying != id || td->thread == thread) continue;
        for (const Waiter* w = waiters_; w != nullptr; w = w->next) {
            if (w->thread != td->thread) continue;
            if (destroying(w->id, thread) != 0 || waits_on(thread, w->id, depth - 1)) return true;
        }
    }
    return false;
}

/// A teardown finished destroying one value of `id`. Frees a retired id with its last value.
inline void Registry::finish_pending(std::uint32_t id) noexcept {
    if (--pending_[id] == 0 && deleters_[id] == nullptr) free_ids_.push_back(id);
    if (waiters_ != nullptr) cv_.notify_all();
}

/// In the child only the forking thread exists. Its record stays; the other threads' records are
/// unlinked without running their values' destructors (those may need locks that threads which no
/// longer exist were holding). They are kept on the orphan list, neither freed nor reachable by any
/// thread: the memory goes back to the system when the child exits, and leak checkers see it as still
/// reachable. Teardowns of other threads end with them; those of the forking thread (a value destructor
/// that forked) go on in the child, so the pending counts are recounted from them.
inline void Registry::after_fork_child() noexcept {
    Registry& r = instance();
    new (&r.cv_) std::condition_variable();  // waiters, if any, were other threads
    ++r.fork_generation_;
    const std::uint64_t me = thread_record != nullptr ? thread_record->index : 0;
    for (Record* rec = r.head_; rec != nullptr;) {
        Record* next = rec->next;
        if (rec->kind == RecordKind::storage) {
            // A Storage entered by a thread the child lacks is not entered in the child (the references
            // those threads' entries held are never dropped: the Storage stays, with its values).
            const std::uint64_t state = rec->storage_state.load(std::memory_order_relaxed);
            if ((state & storage_thread_mask) != me) {
                rec->storage_state.store(state & ~storage_thread_mask, std::memory_order_relaxed);
                rec->depth = 0;
            }
        } else if (rec != thread_record) {
            r.unlink(rec);
            rec->prev = nullptr;
            rec->next = r.orphans_;
            r.orphans_ = rec;
        }
        rec = next;
    }
    for (Teardown** p = &r.teardowns_; *p != nullptr;) {
        if ((*p)->thread != &thread_tag) {
            *p = (*p)->next;
        } else {
            p = &(*p)->next;
        }
    }
    r.waiters_ = nullptr;
    // Recount: a retired id (pending values, null deleter) is flagged, the counts rebuilt from the
    // destructors running on this thread, and a retired id left with nothing pending is freed.
    constexpr unsigned retired = 1u << 31;
    for (std::uint32_t id = 1; id < r.pending_.size(); ++id) {
        r.pending_[id] = r.pending_[id] != 0 && r.deleters_[id] == nullptr ? retired : 0;
    }
    for (const Teardown* td = r.teardowns_; td != nullptr; td = td->next) {
        if (td->destroying != 0) ++r.pending_[td->destroying];
    }
    for (std::uint32_t id = 1; id < r.pending_.size(); ++id) {
        if ((r.pending_[id] & retired) == 0) continue;
        r.pending_[id] &= ~retired;
        if (r.pending_[id] == 0) r.free_ids_.push_back(id);
    }
    if (--lock_depth == 0) r.mutex_.unlock();
}

}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal

#include "storage_entry.hpp"
