// The POSIX platform layer (see platform.hpp): Linux, macOS, the BSDs. Included by platform.hpp only.
#pragma once

// Empty elsewhere, so that every header compiles alone on every platform (the header checks).
#if !defined(_WIN32)

#include <pthread.h>
#include <unistd.h>

#include <cstdlib>

#if defined(__linux__)
#include <sys/syscall.h>
#elif defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__DragonFly__)
#include <pthread_np.h>
#endif

#include "../config.hpp"
#include "platform_pthread_key.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {
namespace platform {

// The thread-exit hook is a pthread key (platform_pthread_key.hpp). On glibc the key destructors run after
// the thread's C++ thread_local destructors; elsewhere the order is not promised, and ctxlocal does not
// depend on it (docs/platforms.md).

/// True on the process's main thread (the one that runs main() and whose exit is exit()).
inline bool is_main_thread() noexcept {
#if defined(__linux__)
    return ::getpid() == static_cast<pid_t>(::syscall(SYS_gettid));
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__DragonFly__)
    return pthread_main_np() != 0;  // not tested (docs/platforms.md)
#else
#error "ctxlocal: no is_main_thread() for this platform (see include/ctxlocal/detail/platform_posix.hpp)"
#endif
}

/// Whether C++ thread_local destructors run before the thread-exit hook, with the thread's thread_locals
/// intact: glibc runs them first (tested by local_test); the others are not tested (docs/platforms.md).
inline constexpr bool thread_local_destructors_first = true;
/// Whether two threads' exit hooks can run at the same time (yes: each runs on its own thread).
inline constexpr bool concurrent_thread_exits = true;

/// Marks the calling thread as past its exit hook. Nothing to do: ctxlocal's own thread_locals say so.
inline void mark_thread_exited() noexcept {}
/// True on a thread whose exit hook has run where its thread_locals do not say so (never here).
inline bool thread_exited() noexcept { return false; }

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

#endif  // !defined(_WIN32)
