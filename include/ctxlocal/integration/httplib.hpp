// ctxlocal/integration/httplib.hpp — binds each request a cpp-httplib server routes with ctxlocal.
// Optional: needs cpp-httplib (`#include <httplib.h>`, Debian: libcpp-httplib-dev); not included by
// ctxlocal.hpp.
//
//     using web = ctxlocal::Contexts<App, MyRequest>;
//     httplib::Server server;
//     server.Get("/hello", ctxlocal::integration::httplib_handler<web>(
//                              app, [](const httplib::Request& in) { return MyRequest{in.path}; },
//                              [](const httplib::Request&, httplib::Response& out) {
//                                  out.set_content("path=" + web::request->path, "text/plain");
//                              }));
//
// Each call of the returned handler runs the user handler inside `web::handle(app, make_request(in), ...)`,
// so it has handle()'s guarantees on httplib's pooled threads: the request (and a fresh `g`) is bound for
// the handler and everything it calls, and afterwards the thread's context stacks are as they were before
// (empty on httplib's pool threads), also when the handler threw or left contexts pushed (those are
// popped and reported as leaked_context).
#pragma once

#include <httplib.h>

#include <type_traits>
#include <utility>

#include "../config.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace integration {

/// Returns an httplib::Server::Handler that, for each request, builds the bound request with
/// `make_request(const httplib::Request&)` (it must return the Web's Request type, or a
/// std::shared_ptr to one) and runs `handler(const httplib::Request&, httplib::Response&)` inside
/// `Web::handle(app, <that request>, ...)`.
///
/// `Web` is a ctxlocal::Contexts<App, Request, G>. `app` must outlive the server. `make_request` and
/// `handler` are copied into the returned handler and called concurrently from httplib's pool threads
/// (they must be thread-safe as called; they are called as const). An exception from either propagates to
/// httplib (which answers 500 unless built with CPPHTTPLIB_NO_EXCEPTIONS); one from the handler first
/// reaches the request's teardown, as in handle(). Allocation: what make_request does, plus handle()'s.
template <class Web, class App, class MakeRequest, class Handler>
::httplib::Server::Handler httplib_handler(App& app, MakeRequest make_request, Handler handler) {
    static_assert(std::is_invocable_v<const MakeRequest&, const ::httplib::Request&>,
                  "httplib_handler: make_request must be callable as make_request(const httplib::Request&)");
    static_assert(
        std::is_invocable_v<const Handler&, const ::httplib::Request&, ::httplib::Response&>,
        "httplib_handler: handler must be callable as handler(const httplib::Request&, httplib::Response&)");
    return [&app, make_request = std::move(make_request), handler = std::move(handler)](
               const ::httplib::Request& in, ::httplib::Response& out) {
        Web::handle(app, make_request(in), [&] { handler(in, out); });
    };
}

/// Routes every method cpp-httplib dispatches (GET, POST, PUT, PATCH, DELETE, OPTIONS; HEAD goes to the GET
/// route) for paths matching `pattern` (a regex, e.g. ".*") to `handler`, typically one made by
/// httplib_handler(). Not thread-safe: call before the server starts listening.
inline void route_all(::httplib::Server& server, const char* pattern,
                      const ::httplib::Server::Handler& handler) {
    server.Get(pattern, handler);
    server.Post(pattern, handler);
    server.Put(pattern, handler);
    server.Patch(pattern, handler);
    server.Delete(pattern, handler);
    server.Options(pattern, handler);
}

}  // namespace integration
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
