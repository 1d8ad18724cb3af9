// The per-thread state record: everything ctxlocal keeps per thread hangs off one thread-local pointer,
// `current_table`, so that swapping that pointer swaps all of it. Nothing here is part of the public API.
//
// - A Table is one record's values: a small header followed, in the same allocation, by `capacity` slots
//   indexed by Local id. Reading a value is: load `current_table`, compare the id with the capacity, load
//   the slot (no second dependent load for a separate slot array).
// - A Record is the stable part: the registry's list links, the re-entry marks, the buffer that thread
//   exit uses to destroy the values without allocating, and the current Table (a Table is reallocated when
//   it grows; its Record is not). The contexts' stacks are an ordinary value in the table, so they are
//   swapped with it.
// - What truly belongs to the OS thread, not to the values it runs on (how often it holds the registry
//   lock, its own record for the thread-exit hook), is in plain thread_locals in registry.hpp.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#include "../config.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {

/// Destroys a value stored in a slot.
using Deleter = void (*)(void*) noexcept;

/// Sentinel id of a Local that has been destroyed: it fails every bounds check.
inline constexpr std::uint32_t dead_id = 0xFFFFFFFFu;

/// Whether a table accepts new values.
enum class TableState : std::uint8_t {
    open,      // values may be stored
    closed,    // its thread's exit teardown ran CTXLOCAL_MAX_EXIT_ROUNDS rounds: no new values
    finished,  // the shared table of a thread whose values were already destroyed at exit
};

/// What a mark says about its object (see marks.hpp).
enum class MarkKind : std::uint8_t {
    initialising,   // a Local is running its initialiser
    running_hooks,  // an AppHooks is running its teardown callbacks
};
inline constexpr std::size_t mark_kinds = 2;

/// One object marked busy; the marks of one kind form a stack that lives on the call stack.
struct Mark {
    const void* object;
    const Mark* outer;
};

/// A value taken out of a slot by a teardown, waiting to be destroyed.
struct Doomed {
    void* value;  // null once it is being destroyed, or once release_id took it over
    Deleter deleter;
    std::uint32_t id;
};

struct Record;

/// A record's values: this header, then `capacity` slots in the same allocation. Slot 0 is never used, so
/// the id 0 ("no slot yet") always reads as empty; the shared tables have capacity 0.
struct Table {
    std::uint32_t capacity = 0;
    TableState state = TableState::open;
    Record* record = nullptr;  // null for the shared tables

    std::atomic<void*>* slots() const noexcept {
        return reinterpret_cast<std::atomic<void*>*>(const_cast<Table*>(this) + 1);
    }

    /// A table of `capacity` empty slots for `owner`. Throws std::bad_alloc.
    static Table* make(std::uint32_t capacity, Record* owner) {
        void* memory = ::operator new (sizeof(Table) + std::size_t{capacity} * sizeof(std::atomic<void*>));
        auto* t = new (memory) Table();
        t->capacity = capacity;
        t->record = owner;
        for (std::uint32_t i = 0; i < capacity; ++i) new (&t->slots()[i]) std::atomic<void*>(nullptr);
        return t;
    }
    static void free(Table* t) noexcept { ::operator delete(t); }  // atomics of pointers: trivial
};
static_assert(sizeof(Table) % alignof(std::atomic<void*>) == 0, "slots follow the header, aligned");

/// The stable per-thread state record. Only the registry (under its lock) links, grows and frees it.
struct Record {
    Table* table = nullptr;
    Record* prev = nullptr;  // the registry's list of live records
    Record* next = nullptr;
    const Mark* marks[mark_kinds] = {nullptr, nullptr};
    // Room for one Doomed per slot, reserved whenever the table grows, so that thread exit never allocates.
    std::vector<Doomed> doomed;
};

/// The table of a thread that has stored nothing yet. Capacity 0; never written.
CTXLOCAL_EXPORT inline Table empty_table{};
/// The table of a thread whose values were destroyed at its exit. Capacity 0; refuses new values.
CTXLOCAL_EXPORT inline Table finished_table{0, TableState::finished, nullptr};

/// The table the calling thread runs on. Constant-initialised, so reading it is one thread-local load
/// (initial-exec TLS where available, also inside shared libraries: see CTXLOCAL_TLS_MODEL).
CTXLOCAL_EXPORT inline thread_local Table* current_table CTXLOCAL_TLS_MODEL = &empty_table;

/// The record the calling thread runs on, or null when it has stored nothing yet (or is past its exit).
inline Record* current_record() noexcept { return current_table->record; }

}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
