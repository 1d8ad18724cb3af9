// Flask-style request contexts in a threaded server: each worker thread handles requests in turn through
// web::handle(), and code deep inside the handler reads `request`, `current_app` and `g` without being
// passed anything. Teardown callbacks print what they see. Ends with one misuse: reading `request` where
// no request is bound.
//
// Each worker collects its lines and main prints them worker by worker, so the output is the same on every
// run. Exits 0 only if every check held.
#include <ctxlocal/context.hpp>

#include <atomic>
#include <cstdio>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

struct ShopApp : ctxlocal::AppHooks {
    std::string name;
};

struct HttpRequest {
    int id;
    std::string path;
    std::string user;
};

using web = ctxlocal::Contexts<ShopApp, HttpRequest>;

// ---------------------------------------------------------------------------------------------------
// Bookkeeping of the example itself.

thread_local std::vector<std::string> lines;  // what this worker printed, in order
std::atomic<int> failures{0};
std::mutex failures_mutex;

void say(const std::string& line) { lines.push_back(line); }

void check(bool ok, const std::string& what) {
    if (ok) return;
    failures.fetch_add(1);
    std::lock_guard<std::mutex> lock(failures_mutex);
    std::fprintf(stderr, "CHECK FAILED: %s\n", what.c_str());
}

// ---------------------------------------------------------------------------------------------------
// Application code: helpers that take no parameters and read the bound context.

/// Logs the user in for this request: what a middleware would do. Keeps the user in g.
void authenticate() {
    web::g->set("user", web::request->user);
    web::g->set("request_id", web::request->id);
}

/// The user authenticated for the current request, or "anonymous".
std::string current_user() { return web::g->get_or<std::string>("user", "anonymous"); }

/// "shop: GET /cart (#3) for ana".
std::string describe_current_request() {
    return web::current_app->name + ": GET " + web::request->path + " (#" + std::to_string(web::request->id) +
           ") for " + current_user();
}

/// The names g holds, "{user, request_id}", or "{}".
std::string g_names() {
    std::string out = "{";
    for (const std::string& name : *web::g) out += (out.size() > 1 ? ", " : "") + name;
    return out + "}";
}

// ---------------------------------------------------------------------------------------------------

/// The request handler. Knows nothing of threads: everything comes from the context.
std::string serve() {
    // A pooled thread's previous request left nothing behind.
    check(current_user() == "anonymous",
          "g of a previous request leaked into #" + std::to_string(web::request->id));
    authenticate();
    const std::string text = describe_current_request();
    say("  handler: " + text);
    return text;
}

}  // namespace

int main() {
    ShopApp app;
    app.name = "shop";
    app.teardown_request([](std::exception_ptr error) {
        // Runs first: the request is still bound.
        check(web::has_request_context(), "request unbound in teardown_request");
        check(web::g->get<int>("request_id") == web::request->id, "g belongs to another request");
        say("  teardown_request: request #" + std::to_string(web::request->id) +
            ", has_request_context=" + (web::has_request_context() ? "true" : "false") + ", g=" + g_names() +
            (error ? ", ended by an exception" : ""));
    });
    app.teardown_appcontext([](std::exception_ptr) {
        // Runs after the request is unbound; current_app and g are still readable.
        check(!web::has_request_context(), "request still bound in teardown_appcontext");
        say("  teardown_appcontext: has_request_context=" +
            std::string(web::has_request_context() ? "true" : "false") + ", app=" + web::current_app->name +
            ", g.user=" + current_user());
    });
    // handle() reports contexts a handler leaves pushed; this example leaves none.
    web::set_incident_handler(
        [](const ctxlocal::Incident& incident) { check(false, "unexpected incident: " + incident.message); });

    const std::vector<HttpRequest> requests = {
        {1, "/", "ana"},     {2, "/cart", "bo"},    {3, "/checkout", "chen"},
        {4, "/", "dara"},    {5, "/orders", "eli"}, {6, "/cart", "fay"},
        {7, "/help", "gus"}, {8, "/", "hana"},      {9, "/account", "ivan"},
    };
    constexpr int workers = 3;
    std::vector<std::vector<std::string>> output(workers);
    std::vector<std::thread> pool;
    for (int w = 0; w < workers; ++w) {
        pool.emplace_back([&, w] {
            // Worker w handles requests w, w + workers, ... one after another, like a pooled thread.
            for (std::size_t i = static_cast<std::size_t>(w); i < requests.size(); i += workers) {
                say("request #" + std::to_string(requests[i].id) + ":");
                const std::string text = web::handle(app, requests[i], serve);
                check(text.find(requests[i].user) != std::string::npos, "handler answered for another user");
                check(!web::has_app_context() && !web::has_request_context(),
                      "context left bound after handle()");
            }
            output[static_cast<std::size_t>(w)] = std::move(lines);
        });
    }
    for (std::thread& t : pool) t.join();
    web::set_incident_handler(nullptr);

    for (int w = 0; w < workers; ++w) {
        std::printf("worker %d\n", w);
        for (const std::string& line : output[static_cast<std::size_t>(w)]) std::printf("%s\n", line.c_str());
    }

    // Misuse: no request is bound on this thread.
    std::printf("\nreading web::request outside a request:\n");
    try {
        std::printf("%s\n", web::request->path.c_str());
        check(false, "web::request was readable outside a request");
    } catch (const ctxlocal::unbound_error& e) {
        const std::string message = e.what();
        check(message.rfind("Working outside of request context.", 0) == 0, "unexpected message: " + message);
        std::printf("  unbound_error: %s\n", e.what());
    }

    std::printf("\n%s\n", failures.load() == 0 ? "all checks passed" : "SOME CHECKS FAILED");
    return failures.load() == 0 ? 0 : 1;
}
