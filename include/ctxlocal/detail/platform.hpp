// The operating-system services ctxlocal needs, in one place: a hook that runs when a thread exits, the
// identity of the main thread, fork hooks, a process-exit hook, and readable type names. The rest of the
// headers call these and contain no platform #if. One implementation is chosen at compile time:
//
//   platform_posix.hpp    Linux (glibc, musl), macOS, the BSDs: pthread keys, pthread_atfork
//   platform_windows.hpp  Windows: winpthreads keys with mingw-w64, fiber-local storage (FlsAlloc) with
//                         MSVC; no fork
//
// Each provides, in ctxlocal::detail::platform:
//   ThreadExitKey; make_thread_exit_key(key, hook) -> bool; delete_thread_exit_key(key);
//   set_thread_exit_value(key, value) -> bool   `hook(value)` runs on a thread that exits with value set
//   is_main_thread() -> bool                     the thread that runs main() and whose exit is exit()
//   on_fork(before, parent, child)               fork hooks (a no-op where there is no fork)
//   on_process_exit(hook)                        runs at exit() or return from main, with atexit handlers
//   thread_local_destructors_first               C++ thread_local destructors run before the exit hook
//   concurrent_thread_exits                      two threads' exit hooks may run at the same time
//   mark_thread_exited(); thread_exited()        a mark that survives the thread_locals' reset (mingw)
// (the key functions from platform_pthread_key.hpp where there are pthreads); platform_demangle.hpp:
// demangled(mangled) -> std::string ("" when it cannot demangle); and this header: on_exit_start(hook),
// which runs `hook` as soon as the main thread starts to exit.
//
// Orderings at thread and process exit differ between platforms; docs/platforms.md says which ctxlocal
// relies on where, and which test checks each.
#pragma once

#include "../config.hpp"

#if defined(_WIN32)
#include "platform_windows.hpp"
#else
#include "platform_posix.hpp"
#endif

#include "platform_demangle.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {
namespace platform {

#if defined(CTXLOCAL_DETAIL_WINPTHREADS)
/// Runs `hook` once the process exits: on_process_exit, registered by the first call. With mingw-w64,
/// libstdc++ runs the main thread's thread_local destructors from an atexit handler too, so the sentinel
/// below would fire no sooner; and it would make libstdc++ create a pthread key that a static destructor
/// deletes in exit(), which deadlocks inside winpthreads while other threads are exiting (seen under wine:
/// shutdown_threads_test exit-main, the main thread blocked in pthread_key_delete; docs/platforms.md).
inline void on_exit_start(void (*hook)()) noexcept {
    static const bool registered = (on_process_exit(hook), true);
    (void)registered;
}
#else
/// Runs `hook` when the main thread starts to exit: glibc runs the calling thread's thread_local
/// destructors first thing in exit(), before static destructors and atexit handlers, so this sentinel's
/// destructor marks the very start. Call on the main thread; a later call only sets the hook again.
inline void on_exit_start(void (*hook)()) noexcept {
    struct Sentinel {
        void (*hook)() = nullptr;
        ~Sentinel() {
            if (hook != nullptr) hook();
        }
    };
    static thread_local Sentinel sentinel;
    sentinel.hook = hook;
}
#endif

}  // namespace platform
}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
