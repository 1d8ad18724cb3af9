// The library whose code tests/tls_model/check.cmake reads: Local::get() in a non-inlined function of a
// -fPIC shared library, exactly what a plugin compiles. Built twice (see CMakeLists.txt): with the default
// CTXLOCAL_TLS_MODEL, and with -DCTXLOCAL_TLS_MODEL= (the compiler's default model, the control).
#include <ctxlocal/local.hpp>

namespace {
ctxlocal::Local<long> probe_value;
}  // namespace

/// The function under test: the calling thread's value of a Local of this library, or null.
extern "C" CTXLOCAL_EXPORT CTXLOCAL_NOINLINE long* ctxlocal_tls_model_probe() { return probe_value.get(); }

/// Gives the calling thread a value (keeps the Local's slow paths in the library, as in real use).
extern "C" CTXLOCAL_EXPORT void ctxlocal_tls_model_probe_set(long v) { probe_value.value() = v; }
