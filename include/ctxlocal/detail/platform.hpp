// The operating-system services ctxlocal needs, in one place: a hook that runs when a thread exits, the
// identity of the main thread, fork hooks and a process-exit hook. The rest of the headers call these and
// contain no platform #if.
#pragma once

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>

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

/// True on the process's main thread (the one that runs main() and whose exit is exit()).
inline bool is_main_thread() noexcept { return ::getpid() == static_cast<pid_t>(::syscall(SYS_gettid)); }

/// Runs `before` in the forking thread before fork(), `parent` after it in the parent, `child` in the child.
inline void on_fork(void (*before)(), void (*parent)(), void (*child)()) noexcept {
    pthread_atfork(before, parent, child);
}

/// Runs `hook` at process exit (exit() or return from main), with the atexit handlers.
inline void on_process_exit(void (*hook)()) noexcept { std::atexit(hook); }

}  // namespace platform
}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
