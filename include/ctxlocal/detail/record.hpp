// The per-thread state record: everything ctxlocal keeps per thread hangs off one thread-local pointer,
// `current_table`, so that swapping that pointer swaps all of it. A Storage (storage.hpp) is a record that
// belongs to a task instead of a thread: entering it points `current_table` at its table. Nothing here is
// part of the public API.
//
// - A Table is one record's values: a small header followed, in the same allocation, by `capacity` slots
//   indexed by Local id. Reading a value is: load `current_table`, compare the id with the capacity, load
//   the slot (no second dependent load for a separate slot array).
// - A Record is the stable part: the registry's list links, the re-entry marks, and the current Table (a
// Table is reallocated when it
//   grows; its Record is not). The contexts' stacks are an ordinary value in the table, so they are
//   swapped with it.
// - `thread_table` is the OS thread's own table, whatever it runs on: ThreadLocal reads it, and leaving a
//   Storage returns to it. What truly belongs to the OS thread, not to the values it runs on (how often it
//   holds the registry lock, its own record, the Storages it has entered), is in thread_locals elsewhere.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>

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

struct Record;

/// Whose values a record holds.
enum class RecordKind : std::uint8_t { thread, storage };

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

/// The stable state record of a thread or a Storage. Only the registry (under its lock) links, grows and
/// frees it.
struct Record {
    explicit Record(RecordKind k) noexcept : kind(k) {}
    Record(const Record&) = delete;
    Record& operator=(const Record&) = delete;

    Table none{0, TableState::open, this};  // the table of a Storage that has stored nothing yet
    Table* table = &none;
    Record* prev = nullptr;  // the registry's list of live records, once linked
    Record* next = nullptr;
    bool linked = false;
    const RecordKind kind;
    const Mark* marks[mark_kinds] = {nullptr, nullptr};
    // A Storage's references and entry (storage_entry.hpp): bits 32-63 count the handles and the entries
    // holding it, bits 0-31 are the index of the thread that has it entered (0: none).
    std::atomic<std::uint64_t> storage_state{0};
    std::uint32_t depth = 0;  // how many times the entering thread has it entered; only that thread uses it
};

// Record::storage_state: references in bits 32-63, the index of the entering thread in bits 0-31.
inline constexpr std::uint64_t storage_one_ref = std::uint64_t{1} << 32;
inline constexpr std::uint64_t storage_thread_mask = 0xFFFFFFFFu;
inline constexpr std::uint64_t storage_releasing = 0xFFFFFFFFu;  // thread bits while its values are destroyed

/// One Storage entered on a thread (storage_entry.hpp).
struct Entry {
    Record* record;
    Record* prev;  // the Storage entered before it, or null for the thread's own values
    std::uint32_t serial;
};

/// A thread's own record, with the Storages the thread has entered, innermost last. The stack is the
/// thread's, not its values': it describes the thread's call stack.
struct ThreadRecord : Record {
    explicit ThreadRecord(std::uint32_t i) noexcept : Record(RecordKind::thread), index(i) {}
    static constexpr std::uint32_t max_entries = 64;
    const std::uint32_t index;  // identifies the thread in a Storage's storage_state (never 0)
    std::uint32_t entries_size = 0;
    std::uint32_t next_serial = 0;
    Entry entries[max_entries];
};

/// The table of a thread that has stored nothing yet. Capacity 0; never written.
CTXLOCAL_EXPORT inline Table empty_table{};
/// The table of a thread whose values were destroyed at its exit. Capacity 0; refuses new values.
CTXLOCAL_EXPORT inline Table finished_table{0, TableState::finished, nullptr};

/// The table the calling thread runs on. Constant-initialised, so reading it is one thread-local load
/// (initial-exec TLS where available, also inside shared libraries: see CTXLOCAL_TLS_MODEL).
CTXLOCAL_EXPORT inline thread_local Table* current_table CTXLOCAL_TLS_MODEL = &empty_table;

/// The calling thread's own table: what it runs on outside every Storage, and what ThreadLocal reads.
CTXLOCAL_EXPORT inline thread_local Table* thread_table CTXLOCAL_TLS_MODEL = &empty_table;

/// Which table an access goes to: the one the thread runs on (a Local: it follows a Storage), or the
/// thread's own (a ThreadLocal).
enum class Where : std::uint8_t { task, thread };

template <Where W>
inline Table*& table_of() noexcept {
    if constexpr (W == Where::task) {
        return current_table;
    } else {
        return thread_table;
    }
}

/// The record the calling thread runs on, or null when it has stored nothing yet (or is past its exit).
inline Record* current_record() noexcept { return current_table->record; }

}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
