// The compiler- and platform-dependent defaults of the configuration macros (config.hpp), chosen here so
// that config.hpp and the rest of the headers contain no platform #if. Included by config.hpp only.
#pragma once

// Visibility: GCC and Clang on ELF and Mach-O give what must be one object in the process default
// visibility. On Windows (PE) there is no symbol interposition: each DLL and the executable have their own
// copy of every inline variable, so the default there is nothing (see docs/platforms.md).
#if defined(_WIN32) || defined(__CYGWIN__)
#define CTXLOCAL_DETAIL_DEFAULT_EXPORT
#elif defined(__GNUC__) || defined(__clang__)
#define CTXLOCAL_DETAIL_DEFAULT_EXPORT __attribute__((visibility("default")))
#else
#define CTXLOCAL_DETAIL_DEFAULT_EXPORT
#endif

// TLS model: initial-exec only in code compiled for an ELF shared library (-fPIC, not -fPIE): in an
// executable the compiler picks the faster local-exec model by itself, which GCC would not do with the
// attribute. Elsewhere (Mach-O, PE, MSVC) the compiler's default.
#if (defined(__GNUC__) || defined(__clang__)) && defined(__ELF__) && defined(__PIC__) && !defined(__PIE__)
#define CTXLOCAL_DETAIL_DEFAULT_TLS_MODEL __attribute__((tls_model("initial-exec")))
#else
#define CTXLOCAL_DETAIL_DEFAULT_TLS_MODEL
#endif

// Code-layout hints; MSVC has __declspec(noinline) and no branch hints.
#if defined(__GNUC__) || defined(__clang__)
#define CTXLOCAL_NOINLINE __attribute__((noinline))
#define CTXLOCAL_LIKELY(x) __builtin_expect(!!(x), 1)
#define CTXLOCAL_UNLIKELY(x) __builtin_expect(!!(x), 0)
#elif defined(_MSC_VER)
#define CTXLOCAL_NOINLINE __declspec(noinline)
#define CTXLOCAL_LIKELY(x) (x)
#define CTXLOCAL_UNLIKELY(x) (x)
#else
#define CTXLOCAL_NOINLINE
#define CTXLOCAL_LIKELY(x) (x)
#define CTXLOCAL_UNLIKELY(x) (x)
#endif
