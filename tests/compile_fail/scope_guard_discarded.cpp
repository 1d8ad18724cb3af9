// Compile-fail: discarding the guard that scope() returns ([[nodiscard]]) pops the context at once; the
// compiler warns. The warning is made an error below (after the includes), so the case fails to compile.
// expect: nodiscard
#include <ctxlocal/context.hpp>

#pragma GCC diagnostic error "-Wunused-result"

struct App {};
struct Request {};
using web = ctxlocal::Contexts<App, Request>;

void serve(App& app) {
    web::AppContext ctx{app};
#ifdef CTXLOCAL_COMPILE_FAIL_CONTROL
    (void)ctx.scope();  // discarded on purpose: no warning
#else
    ctx.scope();  // misuse
#endif
}
