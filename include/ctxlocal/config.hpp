// Configuration macros. Each may be defined by the user before including any ctxlocal header.
#pragma once

#include "detail/platform_macros.hpp"  // the platform defaults below, and CTXLOCAL_NOINLINE/LIKELY/UNLIKELY

/// CTXLOCAL_ABI_NAMESPACE: every ctxlocal name lives in `ctxlocal::CTXLOCAL_ABI_NAMESPACE`, an inline
/// namespace, so user code still writes `ctxlocal::Local` while the symbols carry the ABI version. Two
/// copies of ctxlocal in one process (two plugins that each vendor it) then share their registry and
/// context stacks only when their layouts agree: a version that changes the layout of anything shared
/// changes this name, and the two copies keep separate registries instead of corrupting each other.
/// Do not define it yourself except to keep a private copy apart on purpose.
#ifndef CTXLOCAL_ABI_NAMESPACE
#define CTXLOCAL_ABI_NAMESPACE abi_v2
#endif

/// CTXLOCAL_EXPORT gives default visibility to what must be one object in the whole process: the
/// library's process-wide state (the slot registry, the per-thread table pointer), the class template
/// `Contexts` (its static members hold every thread's context stacks) and `Namespace` (the default `G` of
/// Contexts: a template instantiated with a hidden type is hidden). Then the main program and every shared
/// library that includes the headers share one registry, and one set of context stacks per
/// `Contexts<App, Request, G>`, even when built with -fvisibility=hidden.
/// Mark your own shared things with it too: a global Local defined in a header
/// (`CTXLOCAL_EXPORT inline ctxlocal::Local<T> x;`; unmarked, each hidden library has its own copy), and
/// the App, Request and G types of Contexts (`struct CTXLOCAL_EXPORT MyApp ...`; unmarked, each hidden
/// library has its own context stacks for them).
/// Default: `__attribute__((visibility("default")))` on GCC and Clang, nothing elsewhere. On Windows it is
/// empty: there each DLL and the executable have their own registry (docs/platforms.md).
/// Define it empty to give each shared library built with -fvisibility=hidden its own private registry
/// (then share no Local or Contexts between such a library and the rest of the process).
#ifndef CTXLOCAL_EXPORT
#define CTXLOCAL_EXPORT CTXLOCAL_DETAIL_DEFAULT_EXPORT
#endif

/// CTXLOCAL_TLS_MODEL: the TLS model of the one thread-local pointer on the read path. Default on ELF
/// platforms with GCC or Clang: initial-exec, so that a `Local::get()` compiled into a shared library is a
/// plain thread-local load like in the executable, not a call to `__tls_get_addr`. The price: a library
/// loaded with dlopen() that is the first module of the process to include ctxlocal needs a little static
/// TLS, which glibc reserves for that purpose; only a process that dlopen()s many libraries with large
/// initial-exec TLS of their own can run out ("cannot allocate memory in static TLS block"). Such programs
/// define CTXLOCAL_TLS_MODEL empty (the compiler's default model) in every module, or use ctxlocal from
/// the executable first. Elsewhere than ELF (Mach-O, Windows) the default is empty.
#ifndef CTXLOCAL_TLS_MODEL
#define CTXLOCAL_TLS_MODEL CTXLOCAL_DETAIL_DEFAULT_TLS_MODEL
#endif

/// CTXLOCAL_MAX_EXIT_ROUNDS: how many times thread exit destroys the values that value destructors
/// re-created during the exit before it stops allowing new values on the exiting thread.
/// Default 8. After that round `Local::value()` and `emplace()` throw `ctxlocal::unbound_error`.
#ifndef CTXLOCAL_MAX_EXIT_ROUNDS
#define CTXLOCAL_MAX_EXIT_ROUNDS 8
#endif
