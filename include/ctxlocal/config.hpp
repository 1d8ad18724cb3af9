// Configuration macros. Each may be defined by the user before including any ctxlocal header.
#pragma once

/// CTXLOCAL_EXPORT marks the library's process-wide state (the slot registry and the per-thread table
/// pointer) with default visibility, so that the main program and every shared library that includes
/// the headers share one registry, even when they are built with -fvisibility=hidden.
/// Default: `__attribute__((visibility("default")))` on GCC and Clang, nothing elsewhere.
/// Define it empty to give each shared library its own private registry.
#ifndef CTXLOCAL_EXPORT
#if defined(__GNUC__) || defined(__clang__)
#define CTXLOCAL_EXPORT __attribute__((visibility("default")))
#else
#define CTXLOCAL_EXPORT
#endif
#endif

/// CTXLOCAL_MAX_EXIT_ROUNDS: how many times thread exit destroys the values that value destructors
/// re-created during the exit before it stops allowing new values on the exiting thread.
/// Default 8. After that round `Local::value()` and `emplace()` throw `ctxlocal::unbound_error`.
#ifndef CTXLOCAL_MAX_EXIT_ROUNDS
#define CTXLOCAL_MAX_EXIT_ROUNDS 8
#endif

#if defined(__GNUC__) || defined(__clang__)
#define CTXLOCAL_NOINLINE __attribute__((noinline))
#define CTXLOCAL_LIKELY(x) __builtin_expect(!!(x), 1)
#define CTXLOCAL_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define CTXLOCAL_NOINLINE
#define CTXLOCAL_LIKELY(x) (x)
#define CTXLOCAL_UNLIKELY(x) (x)
#endif
