// The Read peer of ctxlocal compiled into a shared library: the same non-inlined read as Ctx::get() in
// peers.cpp, but built with -fPIC into a library that the benchmark binaries link against (see
// CMakeLists.txt), and a raw thread_local read in the same library as its floor. Built twice:
//
//   libctxlocal_bench_dso.so              default options: CTXLOCAL_TLS_MODEL is initial-exec
//                                         (bench::CtxSharedLibrary; bench::RawTlsSharedLibrary, a
//                                         thread_local with the initial-exec model too)
//   libctxlocal_bench_dso_dynamic_tls.so  -DCTXLOCAL_TLS_MODEL= -DBENCH_DSO_DYNAMIC_TLS: the compiler's
//                                         default model, general dynamic (bench::CtxSharedLibraryDynamicTls;
//                                         bench::RawTlsSharedLibraryDynamicTls, a plain thread_local)
//
// The Local lives in the library; the registry and the thread's table are the process-wide ones that the
// executable shares (CTXLOCAL_EXPORT), as in any program that uses ctxlocal from a plugin.
#include <ctxlocal/local.hpp>

#include "peers.hpp"

// Each build must be the variant its name says: BENCH_DSO_DYNAMIC_TLS exactly when CTXLOCAL_TLS_MODEL is
// empty.
#define BENCH_DSO_STRING(x) #x
#define BENCH_DSO_EXPANDED(x) BENCH_DSO_STRING(x)
#if defined(BENCH_DSO_DYNAMIC_TLS)
static_assert(sizeof(BENCH_DSO_EXPANDED(CTXLOCAL_TLS_MODEL)) == 1,
              "the dynamic-TLS variant is built with -DCTXLOCAL_TLS_MODEL= (empty)");
#define BENCH_DSO_PEER CtxSharedLibraryDynamicTls
#define BENCH_DSO_RAW_PEER RawTlsSharedLibraryDynamicTls
#define BENCH_DSO_RAW_TLS_MODEL
#else
static_assert(sizeof(BENCH_DSO_EXPANDED(CTXLOCAL_TLS_MODEL)) > 1,
              "the default variant keeps CTXLOCAL_TLS_MODEL's default (initial-exec)");
#define BENCH_DSO_PEER CtxSharedLibrary
#define BENCH_DSO_RAW_PEER RawTlsSharedLibrary
#define BENCH_DSO_RAW_TLS_MODEL __attribute__((tls_model("initial-exec")))
#endif

namespace bench {

namespace {
ctxlocal::Local<Value> dso_value;
thread_local Value dso_raw_value BENCH_DSO_RAW_TLS_MODEL = 0;
}  // namespace

BENCH_OPAQUE void BENCH_DSO_PEER::ensure() { dso_value.value() = 1; }
BENCH_OPAQUE Value* BENCH_DSO_PEER::get() { return dso_value.get(); }

BENCH_OPAQUE void BENCH_DSO_RAW_PEER::ensure() { dso_raw_value = 1; }
BENCH_OPAQUE Value* BENCH_DSO_RAW_PEER::get() { return &dso_raw_value; }

}  // namespace bench
