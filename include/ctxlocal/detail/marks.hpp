// Re-entry marks: which objects are in the middle of a call in the calling context, so that a re-entrant
// call can be refused with a clear error instead of recursing or corrupting state. Used for a Local running
// its initialiser and for an App running its teardown callbacks.
#pragma once

#include "../config.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {

/// What a mark says about its object.
enum class MarkKind : unsigned char {
    initialising,   // a Local is running its initialiser
    running_hooks,  // an AppHooks is running its teardown callbacks
};

/// One object marked busy; the marks of one kind form a stack on the call stack.
struct Mark {
    const void* object;
    const Mark* outer;
};

/// The innermost mark of each kind.
struct Marks {
    const Mark* top[2] = {nullptr, nullptr};
};

/// The marks of the calling thread. (Interim: becomes part of the per-thread record.)
CTXLOCAL_EXPORT inline thread_local Marks thread_marks{};

/// Marks `object` as `kind` for the length of a scope. Never allocates, never throws.
class ScopedMark {
public:
    ScopedMark(MarkKind kind, const void* object) noexcept
        : top_(thread_marks.top[static_cast<unsigned>(kind)]), entry_{object, top_} {
        top_ = &entry_;
    }
    ~ScopedMark() { top_ = entry_.outer; }
    ScopedMark(const ScopedMark&) = delete;
    ScopedMark& operator=(const ScopedMark&) = delete;

    /// True when `object` is marked as `kind`.
    static bool contains(MarkKind kind, const void* object) noexcept {
        for (const Mark* m = thread_marks.top[static_cast<unsigned>(kind)]; m != nullptr; m = m->outer) {
            if (m->object == object) return true;
        }
        return false;
    }

private:
    const Mark*& top_;
    Mark entry_;
};

}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
