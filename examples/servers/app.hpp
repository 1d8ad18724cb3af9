// The one small application every example server runs. Each request is bound with
// `web::handle(app, request, handler)`; code below the handler reads the request and `g` through the
// globals `web::request` and `web::g`, never through parameters.
//
//   GET /whoami?id=N&delay_ms=D  stores N in g, sleeps D ms (so requests interleave), then answers
//                                `id=<from request> g=<from g> pid=<pid> tid=<thread>`; a missing id
//                                reads `<none>` in both fields.
//   GET /leak?id=N               misbehaves on purpose: pushes an AppContext (with N in its g) and a
//                                RequestContext for id N and never pops them. handle() must pop both and
//                                report them to the incident handler; the next request on the thread must
//                                start clean (the e2e leak test checks that with /whoami).
//   GET /stats                   `leaks=<leaked contexts reported in this process> pid=<pid>`.
//
// Built with CTXLOCAL_SERVERS_EXPLICIT defined, the same app skips ctxlocal altogether and passes the
// request and the id explicitly: the baseline of the overhead measurement (overhead.sh). /leak is then 404.
#pragma once

#include <unistd.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "http.hpp"
#include "server.hpp"

#ifndef CTXLOCAL_SERVERS_EXPLICIT
#include <ctxlocal/ctxlocal.hpp>
#endif

namespace servers {

/// Longest delay a request may ask for.
inline constexpr long max_delay_ms = 10'000;

/// Parses a non-negative decimal number; nothing when `text` is not one.
inline std::optional<long long> parse_number(std::string_view text) {
    long long value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || end != text.data() + text.size() || value < 0) return std::nullopt;
    return value;
}

inline HttpResponse text(int status, std::string body) {
    return HttpResponse{status, std::move(body), false};
}

/// The id/delay_ms parameters of a whoami or leak request, validated.
struct Params {
    std::optional<long long> id;
    long delay_ms = 0;
    bool valid = true;
};

inline Params read_params(const HttpRequest& request) {
    Params p;
    if (auto id = request.param("id")) {
        p.id = parse_number(*id);
        p.valid = p.valid && p.id.has_value();
    }
    if (auto delay = request.param("delay_ms")) {
        const auto d = parse_number(*delay);
        p.valid = p.valid && d.has_value() && *d <= max_delay_ms;
        if (p.valid) p.delay_ms = static_cast<long>(*d);
    }
    return p;
}

inline void sleep_ms(long ms) {
    if (ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

inline std::string describe_worker() {
    return " pid=" + std::to_string(::getpid()) + " tid=" + std::to_string(thread_id()) + "\n";
}

#ifndef CTXLOCAL_SERVERS_EXPLICIT

/// The application object; one per process, shared by all its threads.
struct App : ctxlocal::AppHooks {};

/// The contexts of this app: `web::request` is the HttpRequest being served, `web::g` a Namespace.
using web = ctxlocal::Contexts<App, HttpRequest>;

/// Leaked contexts the incident handler was told about, in this process.
inline std::atomic<long> leaks_reported{0};

/// Call once per process before serving: routes ctxlocal incidents to stderr and counts leaks.
inline void init_app() {
    web::set_incident_handler([](const ctxlocal::Incident& incident) {
        if (incident.kind == ctxlocal::Incident::Kind::leaked_context) leaks_reported.fetch_add(1);
        std::fprintf(stderr, "incident (pid %d tid %ld): %s\n", static_cast<int>(::getpid()), thread_id(),
                     incident.message.c_str());
    });
}

/// Answers from the globals only: no parameters.
inline std::string whoami() {
    const auto id = web::request->param("id");
    const long long* g_id = web::g->get_if<long long>("id");
    return "id=" + (id ? std::string(*id) : std::string("<none>")) +
           " g=" + (g_id != nullptr ? std::to_string(*g_id) : std::string("<none>")) + describe_worker();
}

inline HttpResponse route() {
    const HttpRequest& request = *web::request;
    if (request.method != "GET") return text(405, "Method Not Allowed\n");
    if (request.path == "/whoami" || request.path == "/leak") {
        const Params p = read_params(request);
        if (!p.valid) return text(400, "bad id or delay_ms\n");
        if (p.id) web::g->set("id", *p.id);
        sleep_ms(p.delay_ms);
        if (request.path == "/whoami") return text(200, whoami());
        // Misbehave: push two contexts and never pop them. They must outlive this handler (the stacks
        // refer to them by address until handle() pops them), so they are kept per thread until this
        // thread's next /leak.
        struct Leaked {
            Leaked(App& app, const HttpRequest& copy) : app_context(app), request_context(app, copy) {}
            web::AppContext app_context;
            web::RequestContext request_context;
        };
        thread_local std::unique_ptr<Leaked> kept;
        kept = std::make_unique<Leaked>(web::current_app.current(), request);
        kept->app_context.push();
        if (p.id) web::g->set("id", *p.id);  // the leaked application context's own g
        kept->request_context.push();
        return text(200, "leaked" + describe_worker());
    }
    if (request.path == "/stats") {
        return text(200, "leaks=" + std::to_string(leaks_reported.load()) + describe_worker());
    }
    return text(404, "Not Found\n");
}

/// Serves one request: binds it for the calling thread, routes it, unbinds.
inline HttpResponse serve(App& app, HttpRequest&& request) {
    return web::handle(app, std::move(request), [] { return route(); });
}

#else  // CTXLOCAL_SERVERS_EXPLICIT: the same work, everything passed explicitly

struct App {};
inline void init_app() {}

inline std::string whoami(const HttpRequest& request, const std::optional<long long>& g_id) {
    const auto id = request.param("id");
    return "id=" + (id ? std::string(*id) : std::string("<none>")) +
           " g=" + (g_id ? std::to_string(*g_id) : std::string("<none>")) + describe_worker();
}

inline HttpResponse serve(App&, HttpRequest&& request) {
    if (request.method != "GET") return text(405, "Method Not Allowed\n");
    if (request.path == "/whoami") {
        const Params p = read_params(request);
        if (!p.valid) return text(400, "bad id or delay_ms\n");
        const std::optional<long long> g_id = p.id;
        sleep_ms(p.delay_ms);
        return text(200, whoami(request, g_id));
    }
    if (request.path == "/stats") return text(200, "leaks=0" + describe_worker());
    return text(404, "Not Found\n");
}

#endif

/// The request handler the connection loops take: `serve(app, request)`.
inline auto handler_for(App& app) {
    return [&app](HttpRequest&& request) { return serve(app, std::move(request)); };
}

}  // namespace servers
