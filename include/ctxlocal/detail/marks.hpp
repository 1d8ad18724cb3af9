// Re-entry marks: which objects are in the middle of a call on the calling thread's record, so that a
// re-entrant call can be refused with a clear error instead of recursing or corrupting state. Used for a
// Local running its initialiser and for an App running its teardown callbacks. The marks are part of the
// per-thread record (record.hpp), so they follow the record when a task carries its own.
#pragma once

#include "../config.hpp"
#include "record.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {

/// Marks `object` as `kind` on the calling thread's record for the length of a scope. Marks nothing when
/// the thread has no record yet (callers that need the mark make the record first). Never allocates,
/// never throws.
class ScopedMark {
public:
    ScopedMark(MarkKind kind, const void* object) noexcept
        : record_(current_record()), kind_(static_cast<std::size_t>(kind)), entry_{object, nullptr} {
        if (record_ == nullptr) return;
        entry_.outer = record_->marks[kind_];
        record_->marks[kind_] = &entry_;
    }
    ~ScopedMark() {
        if (record_ != nullptr) record_->marks[kind_] = entry_.outer;
    }
    ScopedMark(const ScopedMark&) = delete;
    ScopedMark& operator=(const ScopedMark&) = delete;

    /// True when `object` is marked as `kind` on the calling thread's record.
    static bool contains(MarkKind kind, const void* object) noexcept {
        const Record* r = current_record();
        if (r == nullptr) return false;
        for (const Mark* m = r->marks[static_cast<std::size_t>(kind)]; m != nullptr; m = m->outer) {
            if (m->object == object) return true;
        }
        return false;
    }

private:
    Record* record_;  // records are never moved, so the mark is undone where it was made
    std::size_t kind_;
    Mark entry_;
};

}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
