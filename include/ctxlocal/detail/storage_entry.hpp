// Private machinery behind Storage: references to a Storage's record, and entering and leaving it on a
// thread. Nothing here is part of the public API.
//
// A Storage's record has one atomic word, storage_state: its references (handles, and entries on a
// thread's stack) in the high half, and the index of the thread that has it entered in the low half.
// - Entering takes a reference and sets the thread bits in one compare-exchange, which fails when another
//   thread has it entered: one table is never used by two threads at once, and the values and slots the
//   previous thread wrote are visible to the next (acquire on entry, release on leaving).
// - Nested entries of one Storage on one thread only add references; `depth` (touched only by the entering
//   thread) says when the last one is left and the thread bits are cleared.
// - Each thread keeps a stack of its entries (ThreadRecord::entries). Leaving an entry that is not the
//   innermost (Scopes destroyed out of order) first leaves the entries above it; a Scope whose entry was
//   left that way does nothing when it is destroyed. A Scope destroyed on another thread than the one it
//   entered on cannot touch that thread: it is reported and does nothing (the entering thread leaves the
//   entry when an enclosing entry of its own is left, or at its exit).
// - Dropping the last reference (a handle, or the last entry of a Storage whose handles are gone)
//   releases the Storage on that thread (Registry::release_storage).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <thread>

#include "../config.hpp"
#include "../errors.hpp"
#include "record.hpp"
#include "teardown.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {

/// Where an entry is on its thread's stack, as its Scope remembers it.
struct EntryId {
    std::uint32_t thread;  // ThreadRecord::index of the entering thread
    std::uint32_t index;
    std::uint32_t serial;
};

/// Receives the message of a misuse that no exception can report (a Scope destroyed out of order or on
/// another thread). Null: write it to stderr.
CTXLOCAL_EXPORT inline std::atomic<void (*)(const char*)> misuse_handler{nullptr};

inline void report_misuse(const char* message) noexcept {
    if (auto* handler = misuse_handler.load(std::memory_order_acquire)) {
        handler(message);
    } else {
        std::fprintf(stderr, "%s\n", message);
    }
}

/// Takes one more reference to `r`. Relaxed: a reference is only ever taken from another one, which keeps
/// the record alive meanwhile.
inline void add_reference(Record& r) noexcept {
    r.storage_state.fetch_add(storage_one_ref, std::memory_order_relaxed);
}

/// Releases `r`, whose last reference was just dropped (out of line: the slow path of dropping a handle or
/// leaving, which would otherwise inline the registry's creation into every ~Storage and Scope).
CTXLOCAL_NOINLINE inline void release_last(Record& r) noexcept { Registry::instance().release_storage(r); }

/// Drops one reference (not an entry's) to `r`; the last one releases it.
inline void drop_reference(Record& r) noexcept {
    const std::uint64_t before = r.storage_state.fetch_sub(storage_one_ref, std::memory_order_acq_rel);
    if (CTXLOCAL_UNLIKELY((before >> 32) == 1)) release_last(r);
}

[[noreturn]] CTXLOCAL_NOINLINE inline void throw_entered_elsewhere(std::uint64_t state) {
    if ((state & storage_thread_mask) == storage_releasing) {
        throw context_error(
            "ctxlocal::Storage: cannot enter this Storage: it is being released (its values are being "
            "destroyed on another thread or further up this one)");
    }
    throw context_error(
        "ctxlocal::Storage: cannot enter this Storage: it is entered on another thread right now. A "
        "Storage is one task's values: run one task in it at a time, or give concurrent work a Storage "
        "of its own");
}

/// The calling thread's record, made on its first entry (out of line: the slow path of entering).
CTXLOCAL_NOINLINE inline ThreadRecord& make_thread_record() {
    return Registry::instance().ensure_thread_record();
}

[[noreturn]] CTXLOCAL_NOINLINE inline void throw_too_deep() {
    throw context_error(
        "ctxlocal::Storage: cannot enter a Storage: this thread has 64 Storage scopes "
        "entered already, one inside the other");
}

/// Enters `r` on the calling thread, into `id`. Returns false, changing nothing, when another thread has
/// it entered (or it is being released); throws context_error, changing nothing, when the thread's entries
/// are too deep, unbound_error when the thread is past its exit. The slow paths are out of line, so that
/// enter and leave inline into a Scope as a few dozen instructions and two atomic read-modify-writes.
inline bool try_enter(Record& r, EntryId& id) {
    ThreadRecord* const known = thread_record;
    ThreadRecord& me = CTXLOCAL_LIKELY(known != nullptr) ? *known : make_thread_record();
    if (CTXLOCAL_UNLIKELY(me.entries_size == ThreadRecord::max_entries)) throw_too_deep();
    const std::uint64_t mine = me.index;
    std::uint64_t state = r.storage_state.load(std::memory_order_relaxed);
    if ((state & storage_thread_mask) == mine) {
        add_reference(r);  // nested: this thread has it entered, nobody else can change the thread bits
    } else {
        do {
            if ((state & storage_thread_mask) != 0) return false;
        } while (!r.storage_state.compare_exchange_weak(
            state, (state + storage_one_ref) | mine, std::memory_order_acquire, std::memory_order_relaxed));
    }
    ++r.depth;
    const Record* current = current_table->record;
    Entry& e = me.entries[me.entries_size];
    e.record = &r;
    e.prev =
        current != nullptr && current->kind == RecordKind::storage ? const_cast<Record*>(current) : nullptr;
    e.serial = ++me.next_serial;
    current_table = r.table;
    id = EntryId{me.index, me.entries_size++, e.serial};
    return true;
}

/// Enters `r` on the calling thread. Throws context_error, changing nothing, when another thread has it
/// entered or the thread's entries are too deep; unbound_error when the thread is past its exit.
inline EntryId enter(Record& r) {
    EntryId id{};
    if (CTXLOCAL_UNLIKELY(!try_enter(r, id)))
        throw_entered_elsewhere(r.storage_state.load(std::memory_order_relaxed));
    return id;
}

/// Pops the innermost entry of `me`: the thread returns to what it ran on before, the entry's reference
/// is dropped (the last one releases the Storage, after the thread left it).
inline void pop_entry(ThreadRecord& me) noexcept {
    // Read in place, field by field: copying the Entry would load 16 bytes that try_enter wrote as two
    // 8-byte stores moments earlier, a store-forwarding stall (about 8 ns per Scope on the bench machine).
    const Entry& e = me.entries[--me.entries_size];
    Record& r = *e.record;
    current_table = table_to_restore(e.prev);
    const std::uint64_t drop = --r.depth == 0 ? storage_one_ref | me.index : storage_one_ref;
    const std::uint64_t before = r.storage_state.fetch_sub(drop, std::memory_order_acq_rel);
    if (CTXLOCAL_UNLIKELY((before >> 32) == 1)) release_last(r);
}

/// Leaves the entries above `id`, reporting the misuse, then `id` itself.
CTXLOCAL_NOINLINE inline void leave_out_of_order(ThreadRecord& me, EntryId id) noexcept {
    report_misuse(
        "ctxlocal: a Storage::Scope was destroyed while Scopes entered after it were still alive; those "
        "were left first, and each of them does nothing when it is destroyed (destroy Scopes in the "
        "reverse order of their construction)");
    while (me.entries_size > id.index + 1) pop_entry(me);
    pop_entry(me);
}

/// Leaves the entry `id` (made by enter() on the calling thread, see the file comment for misuse).
inline void leave(EntryId id) noexcept {
    ThreadRecord* me = thread_record;
    if (CTXLOCAL_UNLIKELY(me == nullptr || me->index != id.thread)) {
        report_misuse(
            "ctxlocal: a Storage::Scope was destroyed on another thread than the one that entered it; "
            "nothing "
            "was changed on this thread, and the thread that entered it stays inside the Storage until it "
            "leaves an enclosing Scope or exits (keep a Scope on one thread: do not hold one across a "
            "co_await)");
        return;
    }
    if (CTXLOCAL_UNLIKELY(id.index >= me->entries_size || me->entries[id.index].serial != id.serial)) {
        return;  // already left, when a Scope entered before it was destroyed first (reported then)
    }
    if (CTXLOCAL_UNLIKELY(id.index + 1 != me->entries_size)) {
        leave_out_of_order(*me, id);
        return;
    }
    pop_entry(*me);
}

/// A Storage the calling thread has entered, lent while the thread blocks (sync_wait): another thread may
/// enter it meanwhile. The thread's entries stay on its stack; reclaim() takes the Storage back.
struct Loan {
    Record* record;
    std::uint32_t depth;
};

inline Loan lend(Record& r) noexcept {
    const Loan loan{&r, r.depth};
    r.depth = 0;
    r.storage_state.fetch_and(~storage_thread_mask, std::memory_order_release);
    current_table = thread_table;
    return loan;
}

/// Takes a lent Storage back, waiting while another thread still has it entered.
inline void reclaim(const Loan& loan) noexcept {
    Record& r = *loan.record;
    const std::uint64_t mine = thread_record->index;
    std::uint64_t state = r.storage_state.load(std::memory_order_relaxed);
    for (;;) {
        if ((state & storage_thread_mask) == 0 &&
            r.storage_state.compare_exchange_weak(state, state | mine, std::memory_order_acquire,
                                                  std::memory_order_relaxed)) {
            break;
        }
        if ((state & storage_thread_mask) != 0) {
            std::this_thread::yield();
            state = r.storage_state.load(std::memory_order_relaxed);
        }
    }
    r.depth = loan.depth;
    current_table = r.table;
}

inline void leave_all_entries(ThreadRecord& thread) noexcept {
    while (thread.entries_size != 0) pop_entry(thread);
}

}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
