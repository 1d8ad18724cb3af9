// Compile-fail: a handler that returns a reference to a type that cannot be copied. handle() returns
// results by value (the pop after the handler may destroy what a reference refers to: g, the request
// copy), so the reference would have to be copied, and cannot be.
// expect: static.assert(ion)? failed.*ctxlocal: the function returns a reference
#include <ctxlocal/context.hpp>

#include <memory>

struct App : ctxlocal::AppHooks {};
struct Request {
    std::unique_ptr<int> body;
};
using web = ctxlocal::Contexts<App, Request>;

#ifdef CTXLOCAL_COMPILE_FAIL_CONTROL
int served(App& app) {
    return *web::handle(app, Request{std::make_unique<int>(1)},
                        [](Request& r) { return std::move(r.body); });  // by value: moved out
}
#else
int served(App& app) {
    auto& body = web::handle(app, Request{std::make_unique<int>(1)},
                             [](Request& r) -> std::unique_ptr<int>& { return r.body; });  // misuse
    return *body;
}
#endif
