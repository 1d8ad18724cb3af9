// The Windows platform layer (see platform.hpp). Included by platform.hpp only.
//
// Thread exit: with mingw-w64 (POSIX threads, winpthreads) a pthread key, like on POSIX. There the key
// destructors run first at thread exit, while the thread's thread_locals still hold their values; mingw's
// emulated TLS (emutls) frees them right after, so the C++ thread_local destructors and the fiber-local
// (FLS) callbacks that run later see every thread_local reset to its initial value (tested:
// tests/platform_test.cpp). With MSVC (native TLS, not tested here) a fiber-local storage slot, whose
// callback runs at thread exit.
// No fork: on_fork does nothing. The main thread is the one that ran static initialisation.
#pragma once

// Empty elsewhere, so that every header compiles alone on every platform (the header checks).
#if defined(_WIN32)

#include <cstdlib>

#if !defined(WIN32_LEAN_AND_MEAN)
#define WIN32_LEAN_AND_MEAN
#define CTXLOCAL_DETAIL_UNDEF_LEAN
#endif
#if !defined(NOMINMAX)
#define NOMINMAX
#define CTXLOCAL_DETAIL_UNDEF_NOMINMAX
#endif
#include <windows.h>
#if defined(CTXLOCAL_DETAIL_UNDEF_LEAN)
#undef WIN32_LEAN_AND_MEAN
#undef CTXLOCAL_DETAIL_UNDEF_LEAN
#endif
#if defined(CTXLOCAL_DETAIL_UNDEF_NOMINMAX)
#undef NOMINMAX
#undef CTXLOCAL_DETAIL_UNDEF_NOMINMAX
#endif

#include "../config.hpp"

#if defined(__MINGW32__) && __has_include(<pthread.h>)
#define CTXLOCAL_DETAIL_WINPTHREADS 1
#include "platform_pthread_key.hpp"
#endif

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {
namespace platform {

#if !defined(CTXLOCAL_DETAIL_WINPTHREADS)  // with winpthreads: a pthread key (platform_pthread_key.hpp)
using ThreadExitKey = DWORD;

/// The hook of the one key (the registry makes one): FLS callbacks take no context of their own.
inline void (*fls_exit_hook)(void*) = nullptr;
inline void NTAPI fls_callback(void* value) {
    if (value != nullptr && fls_exit_hook != nullptr) fls_exit_hook(value);
}

inline bool make_thread_exit_key(ThreadExitKey& key, void (*exit_hook)(void*)) noexcept {
    fls_exit_hook = exit_hook;
    key = FlsAlloc(&fls_callback);
    return key != FLS_OUT_OF_INDEXES;
}
inline void delete_thread_exit_key(ThreadExitKey key) noexcept { FlsFree(key); }
inline bool set_thread_exit_value(ThreadExitKey key, void* value) noexcept {
    return FlsSetValue(key, value) != FALSE;
}
#endif

/// The id of the thread that ran this module's static initialisation: for an executable, and for the DLLs
/// it loads at startup, the main thread. (A DLL loaded later with LoadLibrary from another thread takes
/// that thread for the main thread: docs/platforms.md.) 0 until initialised.
inline const DWORD main_thread_id = GetCurrentThreadId();

/// True on the process's main thread (the one that runs main() and whose exit is exit()).
inline bool is_main_thread() noexcept {
    const DWORD id = main_thread_id;
    return id == 0 || id == GetCurrentThreadId();  // 0: during static initialisation, on the main thread
}

/// Whether C++ thread_local destructors run before the thread-exit hook, with the thread's thread_locals
/// intact. Not with mingw-w64: they run after it, and see every thread_local reset (docs/platforms.md).
/// Whether two threads' exit hooks can run at the same time. Not with winpthreads: it runs the key
/// destructors of one exiting thread at a time, process-wide, and pthread_create waits for them.
#if defined(CTXLOCAL_DETAIL_WINPTHREADS)
inline constexpr bool thread_local_destructors_first = false;
inline constexpr bool concurrent_thread_exits = false;
#else
inline constexpr bool thread_local_destructors_first = true;  // MSVC: not tested
inline constexpr bool concurrent_thread_exits = true;
#endif

/// A native TLS slot (TlsAlloc, not the compiler's thread_local, which mingw's emulation resets at thread
/// exit) that marks the threads whose exit hook has run.
inline const DWORD exited_slot = TlsAlloc();

/// Marks the calling thread as past its exit hook: thread_exited() is true on it from now on.
inline void mark_thread_exited() noexcept {
    if (exited_slot != TLS_OUT_OF_INDEXES) TlsSetValue(exited_slot, reinterpret_cast<void*>(1));
}
/// True on a thread whose exit hook has run, even where its thread_locals read as new again.
inline bool thread_exited() noexcept {
    return exited_slot != TLS_OUT_OF_INDEXES && TlsGetValue(exited_slot) != nullptr;
}

/// Windows has no fork.
inline void on_fork(void (*)(), void (*)(), void (*)()) noexcept {}

/// Runs `hook` at process exit (exit() or return from main), with the atexit handlers.
inline void on_process_exit(void (*hook)()) noexcept { std::atexit(hook); }

}  // namespace platform
}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal

#endif  // defined(_WIN32)
