// Private machinery behind Local: destroying values. A thread's values at its exit (round after round
// while their destructors make new ones), every record's value of a Local that is destroyed (also while
// exiting threads destroy theirs), and the registry's bookkeeping in a child after fork().
//
// The rules that keep this free of hangs:
// - A teardown takes a record's values out of their slots in one step under the lock (they become
//   "pending" for their id), then destroys them one at a time, claiming each under the lock.
// - A Local destroyed meanwhile (release_id) takes over the pending values of its id that no teardown has
//   started yet, on any thread, and destroys them itself. It waits only for values whose destructor is
//   running right now on another thread, and not even for those when waiting would close a cycle (two
//   exiting threads whose value destructors destroy each other's Local): then the id is retired, and the
//   thread that finishes the last of those values frees it.
// - Inside for_each (the lock is held further up the caller's stack) release_id never waits.
// - Nothing here allocates: a record's buffer for its doomed values grows with its table, and the list of
//   free ids has room for every id.
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

/// The platform's thread-exit hook: destroys the exiting thread's values on that thread, then frees its
/// record. The thread runs on its own values for this, whatever it ran on last.
inline void Registry::on_thread_exit(void* arg) noexcept {
    auto* record = static_cast<Record*>(arg);
    Registry& r = instance();
    current_table = record->table;
    r.destroy_values(*record);
    Table* table;
    {
        Lock lock(r);
        r.unlink(record);
        table = record->table;
        current_table = &finished_table;
        thread_record = nullptr;
    }
    Table::free(table);
    delete record;
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
        std::size_t queued = 0;
        {
            Lock lock(*this);
            Table& t = *record.table;  // destructors of the last round may have grown it
            if (round >= CTXLOCAL_MAX_EXIT_ROUNDS) t.state = TableState::closed;
            record.doomed.clear();
            for (std::uint32_t id = 1; id < t.capacity; ++id) {
                if (void* p = t.slots()[id].exchange(nullptr, std::memory_order_acq_rel)) {
                    record.doomed.push_back({p, deleters_[id], id});  // reserved with the table
                    ++pending_[id];
                }
            }
            queued = record.doomed.size();
        }
        if (queued == 0) break;
        // One at a time, finishing each before the next: a later destructor may destroy the Local of an
        // earlier value, and must find that value finished or not started (then it takes it over).
        for (std::size_t i = 0; i < queued; ++i) {
            Doomed d{};
            {
                Lock lock(*this);
                d = record.doomed[i];
                if (d.value == nullptr) continue;  // taken over by release_id
                record.doomed[i].value = nullptr;
                self.destroying = d.id;
            }
            d.deleter(d.value);
            Lock lock(*this);
            self.destroying = 0;
            finish_pending(d.id);
        }
    }
    Lock lock(*this);
    record.doomed.clear();
    for (Teardown** p = &teardowns_; *p != nullptr; p = &(*p)->next) {
        if (*p == &self) {
            *p = self.next;
            break;
        }
    }
}

/// Moves up to `max` values of `id` into `out`: first those that teardowns took out of their slots and
/// have not started to destroy, then those still in a slot. Under the lock.
inline std::size_t Registry::collect(std::uint32_t id, void** out, std::size_t max) noexcept {
    std::size_t n = 0;
    for (Teardown* td = teardowns_; td != nullptr && n < max; td = td->next) {
        for (Doomed& d : td->record->doomed) {
            if (n == max) break;
            if (d.id != id || d.value == nullptr) continue;
            out[n++] = d.value;
            d.value = nullptr;
            --pending_[id];
        }
    }
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
    for (Record* rec = r.head_; rec != nullptr;) {
        Record* next = rec->next;
        if (rec != thread_record) {
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
    // Recount: a retired id (pending values, null deleter) is flagged, the counts rebuilt, and a retired id
    // left with nothing pending is freed.
    constexpr unsigned retired = 1u << 31;
    for (std::uint32_t id = 1; id < r.pending_.size(); ++id) {
        r.pending_[id] = r.pending_[id] != 0 && r.deleters_[id] == nullptr ? retired : 0;
    }
    for (const Teardown* td = r.teardowns_; td != nullptr; td = td->next) {
        for (const Doomed& d : td->record->doomed) {
            if (d.value != nullptr) ++r.pending_[d.id];
        }
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
