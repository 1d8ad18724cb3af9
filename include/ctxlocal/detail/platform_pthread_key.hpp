// The thread-exit hook as a pthread key: POSIX (platform_posix.hpp) and Windows with mingw-w64's
// winpthreads (platform_windows.hpp), which has the same API. Included by those two only.
#pragma once

// Empty where there are no pthreads (MSVC), so that every header compiles alone on every platform.
#if !defined(_WIN32) || (defined(__MINGW32__) && __has_include(<pthread.h>))

#include <pthread.h>

#include "../config.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {
namespace platform {

/// A per-thread hook: `exit_hook(value)` runs on a thread that exits with a non-null value set.
using ThreadExitKey = pthread_key_t;

/// Makes the key; false when the system has none left.
inline bool make_thread_exit_key(ThreadExitKey& key, void (*exit_hook)(void*)) noexcept {
    return pthread_key_create(&key, exit_hook) == 0;
}
inline void delete_thread_exit_key(ThreadExitKey key) noexcept { pthread_key_delete(key); }

/// Sets the calling thread's value of the key; false when the system could not store it (out of memory).
inline bool set_thread_exit_value(ThreadExitKey key, void* value) noexcept {
    return pthread_setspecific(key, value) == 0;
}

}  // namespace platform
}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal

#endif  // pthreads
