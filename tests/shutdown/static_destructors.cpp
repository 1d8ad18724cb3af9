// Shutdown (a): namespace-scope Locals and pushed request contexts, used from static destructors of objects
// constructed before and after the Locals and from std::atexit handlers registered before and after them.
// Exit code 0 and "N of N checks passed" when everything behaved.
//
// Order at exit (reverse of construction / registration): main's atexit handler, then `late` (constructed
// in main), with every value intact and the requests still bound; `late` destroys a request context that is
// still pushed, which pops it with teardown. Then the global request context and the main thread's context
// stacks (in either order: see early_atexit_handler). Then the Locals, each destroying the main thread's
// value and staying usable; then `early` and the atexit handler registered before the Locals, which find no
// value, make fresh ones (from the initialisers), and find no request.
#include <ctxlocal/ctxlocal.hpp>

#include <cstdlib>
#include <memory>
#include <string>

#include "check.hpp"

using shutdown_test::check;

namespace {

struct App : ctxlocal::AppHooks {
    std::string name = "static-app";
};
struct Request {
    std::string path;
};
using web = ctxlocal::Contexts<App, Request>;

// 6 checks in main, 3 in main's atexit handler, 4 in `late`, 5 in `early`, 2 in the early atexit handler.
shutdown_test::Summary summary{"shutdown_static_test", 20};

// Written by the incident handler and the teardown callback (trivially destructible: usable to the end).
int leaked_incidents = 0;
int late_teardowns = 0;
int static_teardowns = 0;
int other_teardowns = 0;

void early_atexit_handler();

// Constructed before the Locals: destroyed after them.
struct Early {
    Early() { std::atexit(&early_atexit_handler); }  // registered before the Locals: runs after them
    Early(const Early&) = delete;
    Early& operator=(const Early&) = delete;
    ~Early();
} early;

ctxlocal::Local<int> counter;                                                        // value-initialised
ctxlocal::Local<std::string> label{[] { return std::string("fresh"); }};             // constexpr initialiser
ctxlocal::Local<std::string> stateful{[s = std::string("stateful")] { return s; }};  // initialiser with state

App app;
web::RequestContext global_request{app, Request{"/static"}};  // pushed in main, never popped

Early::~Early() {
    // The Locals were destroyed as static objects while exiting: each destroyed the main thread's value and
    // stays usable (other threads could still be running).
    check(counter.get() == nullptr, "Early::~Early: counter has no value after its destructor");
    check(counter.value() == 0 && ++counter.value() == 1, "Early::~Early: counter makes a fresh value");
    check(label.value() == "fresh", "Early::~Early: label makes a fresh value from its initialiser");
    check(stateful.value() == "stateful", "Early::~Early: the initialiser with state still works");
    check(!web::has_request_context() && !web::has_app_context() && web::request_context_depth() == 0,
          "Early::~Early: no request or app context left");
}

void early_atexit_handler() {
    check(counter.value() == 1, "early atexit handler: counter keeps the value made in Early::~Early");
    // Contexts' own static Locals are template members: their initialisation (so their destruction) is
    // unordered with this file's globals. Either the global request context was destroyed first and popped
    // itself (a leaked-context incident, its teardown ran), or the main thread's context stacks were
    // destroyed first, dropping their frames without teardown (the context then had nothing to pop).
    std::printf("       (global request context: %s)\n",
                static_teardowns == 1 ? "popped by its destructor, with teardown"
                                      : "dropped with the context stacks, without teardown");
    check(other_teardowns == 0 && late_teardowns == 1 &&
              ((leaked_incidents == 2 && static_teardowns == 1) ||
               (leaked_incidents == 1 && static_teardowns == 0)),
          "early atexit handler: each request context popped at most once, with teardown when popped");
}

// Constructed in main, after everything: destroyed first (after main's atexit handler).
struct Late {
    std::unique_ptr<web::RequestContext> request{new web::RequestContext{app, Request{"/late"}}};
    Late() = default;
    Late(const Late&) = delete;
    Late& operator=(const Late&) = delete;
    ~Late() {
        check(counter.value() == 43 && label.value() == "main-2",
              "Late::~Late: values intact (as main's atexit handler left them)");
        check(web::request->path == "/late" && web::current_app->name == "static-app" &&
                  web::g->get<int>("user") == 5 && web::request_context_depth() == 2,
              "Late::~Late: both request contexts still pushed, the newer one bound");
        request.reset();  // still pushed: its destructor pops it, with teardown
        check(late_teardowns == 1 && leaked_incidents == 1,
              "Late::~Late: destroying the pushed context popped it with teardown (leaked-context incident)");
        check(web::request->path == "/static" && web::request_context_depth() == 1,
              "Late::~Late: the global request context is bound again");
    }
};

void main_atexit_handler() {
    check(counter.value() == 42 && label.value() == "main" && stateful.value() == "stateful",
          "main's atexit handler: values set in main intact");
    check(web::has_request_context() && web::request->path == "/late",
          "main's atexit handler: request still bound");
    ++counter.value();
    label.value() = "main-2";
    check(counter.count() == 1, "main's atexit handler: one thread holds counter");
}

void count_incident(const ctxlocal::Incident& incident) {
    if (incident.kind == ctxlocal::Incident::Kind::leaked_context) ++leaked_incidents;
}

}  // namespace

int main() {
    web::set_incident_handler(&count_incident);
    app.teardown_request([](std::exception_ptr) {
        const std::string& path = web::request->path;
        int& n = path == "/late" ? late_teardowns : path == "/static" ? static_teardowns : other_teardowns;
        ++n;
    });
    global_request.push();
    web::g->set("user", 5);
    counter.value() = 42;
    label.value() = "main";
    check(counter.value() == 42, "main: counter set");
    check(label.value() == "main", "main: label set");
    check(stateful.value() == "stateful", "main: stateful initialiser");
    check(web::request->path == "/static", "main: request bound");
    static Late late;  // constructed after everything: destroyed first
    late.request->push();
    check(web::request->path == "/late" && web::request_context_depth() == 2, "main: second request pushed");
    check(web::g->get<int>("user") == 5, "main: the second request shares the app context and its g");
    std::atexit(&main_atexit_handler);  // registered last: runs first
    return 0;
}
