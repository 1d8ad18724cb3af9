// Compile-fail: ctxlocal::Contexts<App, Request, G> is refused when G's default constructor may throw (g is
// made on first use, from a noexcept path).
// expect: static.assert(ion)? failed.*ctxlocal::Contexts: G must be nothrow default-constructible
#include <ctxlocal/context.hpp>

struct App : ctxlocal::AppHooks {};
struct Request {};

struct ThrowingG {
    ThrowingG() noexcept(false) {}
};

struct NothrowG {
    NothrowG() noexcept {}
};

#ifdef CTXLOCAL_COMPILE_FAIL_CONTROL
using web = ctxlocal::Contexts<App, Request, NothrowG>;
#else
using web = ctxlocal::Contexts<App, Request, ThrowingG>;  // misuse
#endif

// Naming the class template is not enough: instantiate it.
bool active() { return web::has_app_context(); }
