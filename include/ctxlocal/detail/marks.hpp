// Per-thread "busy" marks: which objects are in the middle of a call on the calling thread, so that a
// re-entrant call can be refused with a clear error instead of recursing or corrupting state. Used for
// a Local running its initialiser and for an App running its teardown callbacks.
#pragma once

#include "../config.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {

/// One object marked busy on the calling thread; the marks form a stack on the thread's call stack.
struct Mark {
    const void* object;
    const Mark* outer;
};

/// Marks `object` on the mark stack whose innermost entry is `top` (a thread_local) for the length of a
/// scope.
class ScopedMark {
public:
    ScopedMark(const Mark*& top, const void* object) noexcept : top_(top), entry_{object, top} {
        top_ = &entry_;
    }
    ~ScopedMark() { top_ = entry_.outer; }
    ScopedMark(const ScopedMark&) = delete;
    ScopedMark& operator=(const ScopedMark&) = delete;

    /// True when `object` is marked on the stack whose innermost entry is `top`.
    static bool contains(const Mark* top, const void* object) noexcept {
        for (const Mark* m = top; m != nullptr; m = m->outer) {
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
