// Tests of ctxlocal::Contexts (include/ctxlocal/context.hpp, app_hooks.hpp): the two context stacks,
// implicit application contexts, g, teardown order and errors, misuse, nesting, concurrency,
// copy_current_request_context, handle() and the pooled-thread security guarantee.
#include <doctest/doctest.h>
#include <unistd.h>
#include <ctxlocal/context.hpp>

#include "support/incidents.hpp"
#include "support/sync.hpp"
#include "support/threads.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

// ---------------------------------------------------------------------------------------------------
// Types under test.

struct App : ctxlocal::AppHooks {
    explicit App(std::string n) : name(std::move(n)) {}
    std::string name;
};

/// An application type that does not derive from AppHooks.
struct PlainApp {
    std::string name;
};

struct Req {
    int id = 0;
    std::string secret;
};

/// A g type that counts how many were made and destroyed (copies and moves count as made, too).
struct CountingG {
    static inline std::atomic<int> made{0};
    static inline std::atomic<int> destroyed{0};
    CountingG() noexcept { made.fetch_add(1); }
    CountingG(const CountingG& o) noexcept : value(o.value) { made.fetch_add(1); }
    CountingG& operator=(const CountingG&) = default;
    ~CountingG() { destroyed.fetch_add(1); }
    int value = 0;
};

using web = ctxlocal::Contexts<App, Req>;
using counting_web = ctxlocal::Contexts<App, Req, CountingG>;
using plain_web = ctxlocal::Contexts<PlainApp, Req>;

struct BoomError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
struct OtherError : std::logic_error {
    using std::logic_error::logic_error;
};

// ---------------------------------------------------------------------------------------------------
// Helpers.

/// Thread-safe list of strings: what callbacks saw, failures seen on worker threads.
class Log {
public:
    void add(std::string line) {
        std::lock_guard<std::mutex> lock(mutex_);
        lines_.push_back(std::move(line));
    }
    std::vector<std::string> lines() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return lines_;
    }
    std::size_t size() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return lines_.size();
    }
    std::string first() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return lines_.empty() ? std::string() : lines_.front();
    }

private:
    mutable std::mutex mutex_;
    std::vector<std::string> lines_;
};

/// Records failures on worker threads (checked on the test thread after joining).
class Failures {
public:
    void check(bool ok, const std::string& what) {
        if (!ok) log_.add(what);
    }
    std::size_t count() const { return log_.size(); }
    std::string first() const { return log_.first(); }

private:
    Log log_;
};

using test_support::Seen;
using IncidentCapture = test_support::IncidentCapture<web, counting_web, plain_web>;

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}
bool starts_with(const std::string& text, const std::string& prefix) { return text.rfind(prefix, 0) == 0; }

/// True when the calling thread has no context of any kind for W.
template <class W>
bool stacks_empty() {
    return W::app_context_depth() == 0 && W::request_context_depth() == 0 && !W::has_app_context() &&
           !W::has_request_context() && W::current_app.get() == nullptr && W::request.get() == nullptr &&
           W::g.get() == nullptr;
}

#define CHECK_STACKS_EMPTY()                 \
    do {                                     \
        CHECK(stacks_empty<web>());          \
        CHECK(stacks_empty<counting_web>()); \
        CHECK(stacks_empty<plain_web>());    \
    } while (false)

/// What the calling thread has bound for `web`: compared before and after a misuse.
struct Snapshot {
    std::size_t apps;
    std::size_t requests;
    bool has_app;
    bool has_request;
    const App* app;
    const Req* request;
    const ctxlocal::Namespace* g;

    static Snapshot take() {
        return Snapshot{web::app_context_depth(),
                        web::request_context_depth(),
                        web::has_app_context(),
                        web::has_request_context(),
                        web::current_app.get(),
                        web::request.get(),
                        web::g.get()};
    }
    bool operator==(const Snapshot& o) const {
        return apps == o.apps && requests == o.requests && has_app == o.has_app &&
               has_request == o.has_request && app == o.app && request == o.request && g == o.g;
    }
};

/// The message of the context_error that `f` throws; a marker when it throws something else or nothing.
template <class F>
std::string context_error_of(F&& f) {
    try {
        f();
    } catch (const ctxlocal::context_error& e) {
        return e.what();
    } catch (const std::exception& e) {
        return std::string("<wrong exception type: ") + e.what() + ">";
    } catch (...) {
        return "<wrong exception type>";
    }
    return "<no exception>";
}

/// The message of the unbound_error that `f` throws; a marker otherwise.
template <class F>
std::string unbound_error_of(F&& f) {
    try {
        f();
    } catch (const ctxlocal::unbound_error& e) {
        return e.what();
    } catch (...) {
        return "<wrong exception type>";
    }
    return "<no exception>";
}

/// The message of the exception an exception_ptr holds ("null" for none).
std::string what_of(const std::exception_ptr& e) {
    if (!e) return "null";
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        return x.what();
    } catch (...) {
        return "?";
    }
}

using test_support::Counted;
using test_support::Gate;

using test_support::join_all;
using test_support::thread_count;

/// Runs `f` on a new thread and waits for it.
template <class F>
void on_new_thread(F&& f) {
    std::thread t(std::forward<F>(f));
    t.join();
}

/// "id=7" for the request bound now, "id=none" when none.
std::string request_id_now() {
    const Req* r = web::request.get();
    return r == nullptr ? "id=none" : "id=" + std::to_string(r->id);
}

/// The string "k" of g now, "g=none" without an application context, "g=-" when unset.
std::string g_now() {
    ctxlocal::Namespace* g = web::g.get();
    if (g == nullptr) return "g=none";
    return "g=" + g->get_or<std::string>("k", "-");
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Two stacks; implicit application contexts.

TEST_CASE("Contexts.Stacks.app_and_request_contexts_are_separate_stacks") {
    App app{"main"};
    web::AppContext actx{app};
    actx.push();
    CHECK(web::app_context_depth() == 1);
    CHECK(web::request_context_depth() == 0);
    CHECK(web::has_app_context());
    CHECK_FALSE(web::has_request_context());
    CHECK(&*web::current_app == &app);
    CHECK(web::request.get() == nullptr);

    web::RequestContext rctx{app, Req{1, ""}};
    rctx.push();
    CHECK(web::request_context_depth() == 1);
    CHECK(web::has_request_context());
    CHECK(web::request->id == 1);
    rctx.pop();
    CHECK(web::request_context_depth() == 0);
    CHECK(web::app_context_depth() == 1);
    actx.pop();
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Push.request_reuses_active_app_context_of_same_app") {
    App app{"main"};
    web::AppContext actx{app};
    actx.push();
    web::g->set("k", std::string("from app"));
    ctxlocal::Namespace* app_g = web::g.get();

    web::RequestContext rctx{app, Req{1, ""}};
    rctx.push();
    CHECK(web::app_context_depth() == 1);  // no implicit context pushed
    CHECK(&*web::current_app == &app);
    CHECK(web::g.get() == app_g);
    CHECK(web::g->get<std::string>("k") == "from app");
    rctx.pop();
    CHECK(web::app_context_depth() == 1);  // the reused context stays pushed
    CHECK(web::g.get() == app_g);
    actx.pop();
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Push.request_for_other_app_pushes_implicit_app_context") {
    App first{"first"};
    App second{"second"};
    web::AppContext actx{first};
    actx.push();
    web::g->set("k", std::string("first's"));
    ctxlocal::Namespace* first_g = web::g.get();

    web::RequestContext rctx{second, Req{2, ""}};
    rctx.push();
    CHECK(web::app_context_depth() == 2);
    CHECK(&*web::current_app == &second);
    CHECK(web::g.get() != first_g);
    CHECK(web::g->empty());
    web::g->set("k", std::string("second's"));
    rctx.pop();
    CHECK(web::app_context_depth() == 1);  // the implicit one was popped with the request
    CHECK(&*web::current_app == &first);
    CHECK(web::g.get() == first_g);
    CHECK(web::g->get<std::string>("k") == "first's");
    actx.pop();
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Push.request_without_app_context_pushes_implicit_one") {
    App app{"main"};
    CHECK_STACKS_EMPTY();
    web::RequestContext rctx{app, Req{3, ""}};
    rctx.push();
    CHECK(web::app_context_depth() == 1);
    CHECK(web::request_context_depth() == 1);
    CHECK(&*web::current_app == &app);
    CHECK(web::g->empty());
    rctx.pop();
    CHECK_STACKS_EMPTY();
}

// ---------------------------------------------------------------------------------------------------
// g.

TEST_CASE("Contexts.G.made_lazily_at_first_use") {
    App app{"main"};
    app.teardown_request([](std::exception_ptr) { (void)counting_web::request->id; });
    app.teardown_appcontext([](std::exception_ptr) { (void)counting_web::current_app->name; });
    const int made = CountingG::made.load();
    const int destroyed = CountingG::destroyed.load();

    // A request that never touches g pays nothing for it.
    counting_web::RequestContext quiet{app, Req{1, ""}};
    quiet.push();
    CHECK(counting_web::has_app_context());
    CHECK(counting_web::current_app->name == "main");
    CHECK(counting_web::request->id == 1);
    quiet.pop();
    CHECK(CountingG::made.load() == made);
    CHECK(CountingG::destroyed.load() == destroyed);

    // One that does gets exactly one, at the first use.
    counting_web::RequestContext busy{app, Req{2, ""}};
    busy.push();
    CHECK(CountingG::made.load() == made);
    counting_web::g->value = 5;
    CHECK(CountingG::made.load() == made + 1);
    CHECK(counting_web::g->value == 5);
    CHECK(CountingG::made.load() == made + 1);
    busy.pop();
    CHECK(CountingG::destroyed.load() == destroyed + 1);
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.G.nested_app_context_for_same_app_gets_new_empty_g") {
    App app{"main"};
    web::AppContext outer{app};
    web::AppContext inner{app};
    outer.push();
    web::g->set("k", std::string("outer"));
    ctxlocal::Namespace* outer_g = web::g.get();
    inner.push();
    CHECK(web::app_context_depth() == 2);
    CHECK(web::g.get() != outer_g);
    CHECK(web::g->empty());
    web::g->set("k", std::string("inner"));
    inner.pop();
    CHECK(web::g.get() == outer_g);
    CHECK(web::g->get<std::string>("k") == "outer");
    outer.pop();
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.G.request_inside_explicit_app_context_shares_its_g") {
    App app{"main"};
    web::AppContext actx{app};
    actx.push();
    web::g->set("k", std::string("set by app"));
    {
        web::RequestContext rctx{app, Req{1, ""}};
        auto guard = rctx.scope();
        CHECK(web::g->get<std::string>("k") == "set by app");
        web::g->set("from_request", 42);
    }
    CHECK(web::g->get<int>("from_request") == 42);  // the request wrote into the app context's g
    actx.pop();
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.G.same_app_context_pushed_twice_shares_g") {
    App app{"main"};
    web::AppContext actx{app};
    actx.push();
    web::g->set("k", std::string("first push"));
    ctxlocal::Namespace* g1 = web::g.get();
    actx.push();
    CHECK(web::app_context_depth() == 2);
    CHECK(web::g.get() == g1);
    CHECK(web::g->get<std::string>("k") == "first push");
    web::g->set("second", 2);
    actx.pop();
    CHECK(web::g.get() == g1);
    CHECK(web::g->get<int>("second") == 2);
    actx.pop();
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.G.destroyed_when_its_app_context_pops") {
    App app{"main"};
    const int destroyed = CountingG::destroyed.load();
    counting_web::AppContext actx{app};
    actx.push();
    counting_web::g->value = 1;
    actx.push();  // same context again: same g
    counting_web::g->value = 2;
    counting_web::RequestContext rctx{app, Req{1, ""}};
    rctx.push();  // reuses actx: same g
    counting_web::g->value = 3;
    rctx.pop();
    CHECK(CountingG::destroyed.load() == destroyed);
    actx.pop();
    CHECK(CountingG::destroyed.load() == destroyed);
    CHECK(counting_web::g->value == 3);
    actx.pop();
    CHECK(CountingG::destroyed.load() == destroyed + 1);

    // An implicit application context's g goes with its request.
    rctx.push();
    counting_web::g->value = 4;
    rctx.pop();
    CHECK(CountingG::destroyed.load() == destroyed + 2);
    CHECK_STACKS_EMPTY();
}

// ---------------------------------------------------------------------------------------------------
// Teardown.

TEST_CASE("Contexts.Teardown.reverse_order_r2_r1_a2_a1") {
    App app{"main"};
    Log log;
    auto seen = [&log](const char* name) {
        return [&log, name](std::exception_ptr) {
            log.add(std::string(name) + " " + request_id_now() +
                    " has_request=" + (web::has_request_context() ? "1" : "0") +
                    " app=" + (web::current_app.get() ? web::current_app->name : "none") + " " + g_now() +
                    " depths=" + std::to_string(web::app_context_depth()) + "/" +
                    std::to_string(web::request_context_depth()));
        };
    };
    app.teardown_request(seen("r1"));
    app.teardown_request(seen("r2"));
    app.teardown_appcontext(seen("a1"));
    app.teardown_appcontext(seen("a2"));

    web::RequestContext rctx{app, Req{7, ""}};
    rctx.push();
    web::g->set("k", std::string("v"));
    rctx.pop();
    CHECK(log.lines() == std::vector<std::string>{
                             "r2 id=7 has_request=1 app=main g=v depths=1/1",
                             "r1 id=7 has_request=1 app=main g=v depths=1/1",
                             "a2 id=none has_request=0 app=main g=v depths=1/0",
                             "a1 id=none has_request=0 app=main g=v depths=1/0",
                         });
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Teardown.reused_explicit_app_context_tears_down_at_its_own_pop") {
    App app{"main"};
    Log log;
    app.teardown_request([&](std::exception_ptr) { log.add("r " + request_id_now()); });
    app.teardown_appcontext([&](std::exception_ptr) { log.add("a " + request_id_now() + " " + g_now()); });
    web::AppContext actx{app};
    actx.push();
    web::g->set("k", std::string("kept"));
    web::RequestContext rctx{app, Req{8, ""}};
    rctx.push();
    rctx.pop();
    CHECK(log.lines() == std::vector<std::string>{"r id=8"});  // the app context is not the request's
    actx.pop();
    CHECK(log.lines() == std::vector<std::string>{"r id=8", "a id=none g=kept"});
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Teardown.callbacks_receive_the_exception_of_pop") {
    App app{"main"};
    std::vector<std::exception_ptr> got;
    app.teardown_request([&](std::exception_ptr e) { got.push_back(e); });
    app.teardown_request([&](std::exception_ptr e) { got.push_back(e); });
    app.teardown_appcontext([&](std::exception_ptr e) { got.push_back(e); });
    app.teardown_appcontext([&](std::exception_ptr e) { got.push_back(e); });
    web::RequestContext rctx{app, Req{1, ""}};

    SUBCASE("null when the request ended normally") {
        rctx.push();
        rctx.pop();
        REQUIRE(got.size() == 4);
        for (const auto& e : got) CHECK(e == nullptr);
    }
    SUBCASE("the exception given to pop(error)") {
        const std::exception_ptr error = std::make_exception_ptr(BoomError("the handler failed"));
        rctx.push();
        rctx.pop(error);
        REQUIRE(got.size() == 4);
        for (const auto& e : got) CHECK(e == error);
    }
    SUBCASE("AppContext::pop(error) too") {
        const std::exception_ptr error = std::make_exception_ptr(BoomError("app failed"));
        web::AppContext actx{app};
        actx.push();
        actx.pop(error);
        REQUIRE(got.size() == 2);
        for (const auto& e : got) CHECK(e == error);
    }
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Teardown.callbacks_receive_the_exception_thrown_in_run") {
    App app{"main"};
    std::vector<std::string> got;
    app.teardown_request([&](std::exception_ptr e) { got.push_back("r:" + what_of(e)); });
    app.teardown_appcontext([&](std::exception_ptr e) { got.push_back("a:" + what_of(e)); });
    web::RequestContext rctx{app, Req{1, ""}};
    CHECK_THROWS_WITH_AS(rctx.run([] { throw BoomError("handler blew up"); }), "handler blew up", BoomError);
    CHECK(got == std::vector<std::string>{"r:handler blew up", "a:handler blew up"});
    got.clear();
    rctx.run([] {});
    CHECK(got == std::vector<std::string>{"r:null", "a:null"});
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Teardown.every_callback_runs_when_earlier_ones_throw") {
    App app{"main"};
    std::vector<std::string> ran;
    app.teardown_request([&](std::exception_ptr) { ran.push_back("r1"); });
    app.teardown_request([&](std::exception_ptr) {
        ran.push_back("r2");
        throw BoomError("r2 failed");
    });
    app.teardown_appcontext([&](std::exception_ptr) { ran.push_back("a1"); });
    app.teardown_appcontext([&](std::exception_ptr) {
        ran.push_back("a2");
        throw BoomError("a2 failed");
    });
    web::RequestContext rctx{app, Req{1, ""}};
    rctx.push();
    CHECK_THROWS_AS(rctx.pop(), ctxlocal::teardown_error);
    CHECK(ran == std::vector<std::string>{"r2", "r1", "a2", "a1"});
    CHECK_STACKS_EMPTY();  // popped regardless
    // and it can be pushed again
    rctx.push();
    CHECK(web::request->id == 1);
    CHECK_THROWS_AS(rctx.pop(), ctxlocal::teardown_error);
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Teardown.one_failing_callback_rethrows_that_exception_type") {
    App app{"main"};
    int ran = 0;
    app.teardown_request([&](std::exception_ptr) { ++ran; });
    app.teardown_request([&](std::exception_ptr) {
        ++ran;
        throw OtherError("closing the session failed");
    });
    app.teardown_appcontext([&](std::exception_ptr) { ++ran; });
    web::RequestContext rctx{app, Req{1, ""}};
    rctx.push();
    CHECK_THROWS_WITH_AS(rctx.pop(), "closing the session failed", OtherError);
    CHECK(ran == 3);
    CHECK_STACKS_EMPTY();

    web::AppContext actx{app};
    actx.push();
    app.teardown_appcontext([](std::exception_ptr) { throw BoomError("app teardown failed"); });
    CHECK_THROWS_WITH_AS(actx.pop(), "app teardown failed", BoomError);
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Teardown.several_failing_callbacks_throw_teardown_error_with_all_in_order") {
    App app{"main"};
    app.teardown_request([](std::exception_ptr) { throw BoomError("r1 failed"); });
    app.teardown_request([](std::exception_ptr) { throw OtherError("r2 failed"); });
    app.teardown_appcontext([](std::exception_ptr) { throw BoomError("a1 failed"); });
    app.teardown_appcontext([](std::exception_ptr) {});
    web::RequestContext rctx{app, Req{1, ""}};
    rctx.push();
    bool caught = false;
    try {
        rctx.pop();
    } catch (const ctxlocal::teardown_error& e) {
        caught = true;
        REQUIRE(e.errors().size() == 3);
        CHECK(what_of(e.errors()[0]) == "r2 failed");
        CHECK(what_of(e.errors()[1]) == "r1 failed");
        CHECK(what_of(e.errors()[2]) == "a1 failed");
        CHECK_THROWS_AS(std::rethrow_exception(e.errors()[0]), OtherError);
        CHECK_THROWS_AS(std::rethrow_exception(e.errors()[1]), BoomError);
        const std::string what = e.what();
        CHECK(contains(what, "r2 failed"));
        CHECK(contains(what, "r1 failed"));
        CHECK(contains(what, "a1 failed"));
    }
    CHECK(caught);
    CHECK_STACKS_EMPTY();
}

// ---------------------------------------------------------------------------------------------------
// Misuse: popping the wrong context changes nothing.

TEST_CASE("Contexts.Misuse.pop_with_no_active_context") {
    App app{"main"};
    int teardowns = 0;
    app.teardown_request([&](std::exception_ptr) { ++teardowns; });
    app.teardown_appcontext([&](std::exception_ptr) { ++teardowns; });
    web::AppContext actx{app};
    web::RequestContext rctx{app, Req{1, ""}};
    std::string on_fresh_thread_app;
    std::string on_fresh_thread_request;
    on_new_thread([&] {  // a thread that never used contexts
        on_fresh_thread_app = context_error_of([&] { actx.pop(); });
        on_fresh_thread_request = context_error_of([&] { rctx.pop(); });
    });
    CHECK(on_fresh_thread_app ==
          "Cannot pop this context (" + actx.describe() + "), there is no active context.");
    CHECK(on_fresh_thread_request ==
          "Cannot pop this context (" + rctx.describe() + "), there is no active context.");

    // a thread whose stacks were used and are empty again
    actx.run([] {});
    teardowns = 0;
    CHECK(context_error_of([&] { actx.pop(); }) ==
          "Cannot pop this context (" + actx.describe() + "), there is no active context.");
    CHECK(context_error_of([&] { rctx.pop(std::make_exception_ptr(BoomError("x"))); }) ==
          "Cannot pop this context (" + rctx.describe() + "), there is no active context.");
    CHECK(teardowns == 0);
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Misuse.pop_context_that_is_not_pushed") {
    App app{"main"};
    int teardowns = 0;
    app.teardown_request([&](std::exception_ptr) { ++teardowns; });
    app.teardown_appcontext([&](std::exception_ptr) { ++teardowns; });
    web::AppContext pushed{app};
    web::AppContext never_app{app};
    web::RequestContext never_request{app, Req{9, ""}};
    web::RequestContext active{app, Req{1, ""}};
    pushed.push();
    active.push();
    web::g->set("k", std::string("keep"));
    const Snapshot before = Snapshot::take();

    CHECK(context_error_of([&] { never_app.pop(); }) ==
          "Cannot pop this context (" + never_app.describe() + "), it is not pushed.");
    CHECK(context_error_of([&] { never_request.pop(); }) ==
          "Cannot pop this context (" + never_request.describe() + "), it is not pushed.");
    CHECK(Snapshot::take() == before);
    CHECK(web::request->id == 1);
    CHECK(web::g->get<std::string>("k") == "keep");
    CHECK(teardowns == 0);

    active.pop();
    pushed.pop();
    CHECK(teardowns == 2);
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Misuse.pop_app_context_that_is_not_the_active_one") {
    App app{"main"};
    int teardowns = 0;
    app.teardown_appcontext([&](std::exception_ptr) { ++teardowns; });
    web::AppContext below{app};
    web::AppContext above{app};
    below.push();
    above.push();
    web::g->set("k", std::string("above's"));
    const Snapshot before = Snapshot::take();
    CHECK(context_error_of([&] { below.pop(); }) == "Cannot pop this context (" + below.describe() +
                                                        "), it is not the active context (" +
                                                        above.describe() + ").");
    CHECK(Snapshot::take() == before);
    CHECK(web::g->get<std::string>("k") == "above's");
    CHECK(teardowns == 0);
    above.pop();
    below.pop();
    CHECK(teardowns == 2);
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Misuse.pop_app_context_while_its_request_is_active") {
    App app{"main"};
    int teardowns = 0;
    app.teardown_request([&](std::exception_ptr) { ++teardowns; });
    app.teardown_appcontext([&](std::exception_ptr) { ++teardowns; });
    web::AppContext actx{app};
    web::RequestContext rctx{app, Req{4, ""}};
    actx.push();
    web::g->set("k", std::string("shared"));
    rctx.push();  // reuses actx
    const Snapshot before = Snapshot::take();
    CHECK(context_error_of([&] { actx.pop(); }) == "Cannot pop this context (" + actx.describe() +
                                                       "), it is not the active context (" + rctx.describe() +
                                                       ").");
    CHECK(Snapshot::take() == before);
    CHECK(web::request->id == 4);
    CHECK(&*web::current_app == &app);
    CHECK(web::g->get<std::string>("k") == "shared");
    CHECK(teardowns == 0);
    rctx.pop();
    actx.pop();
    CHECK(teardowns == 2);
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Misuse.pop_request_while_later_app_context_is_active") {
    App app{"main"};
    App other{"other"};
    int teardowns = 0;
    app.teardown_request([&](std::exception_ptr) { ++teardowns; });
    web::RequestContext rctx{app, Req{5, ""}};
    web::AppContext later{other};
    rctx.push();
    web::g->set("k", std::string("request's"));
    later.push();
    web::g->set("k", std::string("later's"));
    const Snapshot before = Snapshot::take();
    CHECK(context_error_of([&] { rctx.pop(); }) == "Cannot pop this context (" + rctx.describe() +
                                                       "), it is not the active context (" +
                                                       later.describe() + ").");
    CHECK(Snapshot::take() == before);
    CHECK(web::request->id == 5);
    CHECK(&*web::current_app == &other);
    CHECK(web::g->get<std::string>("k") == "later's");
    CHECK(teardowns == 0);
    later.pop();
    CHECK(web::g->get<std::string>("k") == "request's");
    rctx.pop();
    CHECK(teardowns == 1);
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Misuse.pop_implicit_app_context_is_named_in_the_message") {
    App app{"main"};
    App other{"other"};
    web::RequestContext rctx{app, Req{6, ""}};
    web::AppContext actx{other};
    actx.push();
    rctx.push();  // other app: implicit application context for app
    rctx.push();  // again, same app now active: no second implicit context
    CHECK(web::app_context_depth() == 2);
    const Snapshot before = Snapshot::take();
    CHECK(context_error_of([&] { actx.pop(); }) == "Cannot pop this context (" + actx.describe() +
                                                       "), it is not the active context (" + rctx.describe() +
                                                       ").");
    CHECK(Snapshot::take() == before);
    rctx.pop();
    rctx.pop();
    CHECK(&*web::current_app == &other);
    actx.pop();
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Misuse.teardown_callback_popping_its_own_request_context") {
    App app{"main"};
    web::RequestContext rctx{app, Req{1, ""}};
    std::string message;
    Snapshot inside_before{};
    Snapshot inside_after{};
    int request_teardowns = 0;
    int app_teardowns = 0;
    app.teardown_request([&](std::exception_ptr) {
        ++request_teardowns;
        inside_before = Snapshot::take();
        message = context_error_of([&] { rctx.pop(); });
        inside_after = Snapshot::take();
    });
    app.teardown_appcontext([&](std::exception_ptr) { ++app_teardowns; });
    rctx.push();
    rctx.pop();  // the callback's error was caught by the callback: pop succeeds
    CHECK(message == "Cannot pop this context (" + rctx.describe() +
                         "), it is already being popped (a teardown callback tried to pop it).");
    CHECK(inside_after == inside_before);
    CHECK(inside_before.requests == 1);
    CHECK(inside_before.apps == 1);
    CHECK(request_teardowns == 1);
    CHECK(app_teardowns == 1);
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Misuse.teardown_callback_popping_its_own_app_context") {
    App app{"main"};
    web::AppContext actx{app};
    std::string message;
    Snapshot inside_before{};
    Snapshot inside_after{};
    int teardowns = 0;
    app.teardown_appcontext([&](std::exception_ptr) {
        ++teardowns;
        inside_before = Snapshot::take();
        message = context_error_of([&] { actx.pop(); });
        inside_after = Snapshot::take();
    });
    actx.push();
    actx.pop();
    CHECK(message == "Cannot pop this context (" + actx.describe() +
                         "), it is already being popped (a teardown callback tried to pop it).");
    CHECK(inside_after == inside_before);
    CHECK(inside_before.apps == 1);
    CHECK(teardowns == 1);
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Misuse.uncaught_pop_error_in_teardown_is_reported_by_pop") {
    App app{"main"};
    web::RequestContext rctx{app, Req{1, ""}};
    app.teardown_request([&](std::exception_ptr) { rctx.pop(); });  // lets the context_error escape
    rctx.push();
    CHECK(context_error_of([&] { rctx.pop(); }) ==
          "Cannot pop this context (" + rctx.describe() +
              "), it is already being popped (a teardown callback tried to pop it).");
    CHECK_STACKS_EMPTY();
}

// ---------------------------------------------------------------------------------------------------
// The same context pushed more than once.

TEST_CASE("Contexts.Nesting.same_request_context_pushed_twice_stays_active_until_last_pop") {
    App app{"main"};
    int request_teardowns = 0;
    int app_teardowns = 0;
    app.teardown_request([&](std::exception_ptr) { ++request_teardowns; });
    app.teardown_appcontext([&](std::exception_ptr) { ++app_teardowns; });
    web::RequestContext rctx{app, Req{11, ""}};
    rctx.push();
    web::g->set("k", std::string("v"));
    rctx.push();
    CHECK(web::request_context_depth() == 2);
    CHECK(web::app_context_depth() == 1);  // the implicit context is reused by the second push
    rctx.pop();
    CHECK(request_teardowns == 0);
    CHECK(app_teardowns == 0);
    CHECK(web::has_request_context());
    CHECK(web::request->id == 11);
    CHECK(web::g->get<std::string>("k") == "v");
    rctx.pop();
    CHECK(request_teardowns == 1);
    CHECK(app_teardowns == 1);
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Nesting.same_app_context_pushed_twice_tears_down_once") {
    App app{"main"};
    int teardowns = 0;
    app.teardown_appcontext([&](std::exception_ptr) { ++teardowns; });
    web::AppContext actx{app};
    actx.push();
    actx.push();
    actx.pop();
    CHECK(teardowns == 0);
    CHECK(web::has_app_context());
    actx.pop();
    CHECK(teardowns == 1);
    CHECK_STACKS_EMPTY();
}

namespace {
thread_local int tl_request_teardowns = 0;
thread_local int tl_app_teardowns = 0;
}  // namespace

TEST_CASE("Contexts.Threads.same_context_objects_pushed_on_many_threads_at_once" * doctest::timeout(30)) {
    const int threads = thread_count();
    constexpr int iterations = 500;
    App app{"shared"};
    app.teardown_request([](std::exception_ptr) { ++tl_request_teardowns; });
    app.teardown_appcontext([](std::exception_ptr) { ++tl_app_teardowns; });
    const web::AppContext actx{app};
    const web::RequestContext rctx{app, Req{1, ""}};
    Failures failures;
    Gate start;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            tl_request_teardowns = 0;
            tl_app_teardowns = 0;
            start.wait();
            for (int k = 0; k < iterations; ++k) {
                actx.push();
                web::g->set("thread", t);
                rctx.push();
                rctx.push();
                failures.check(web::app_context_depth() == 1 && web::request_context_depth() == 2, "depths");
                failures.check(web::g->get<int>("thread") == t, "g shared with another thread");
                failures.check(&*web::request == &rctx.request(), "request object");
                rctx.pop();
                failures.check(tl_request_teardowns == k, "request teardown before the last pop");
                failures.check(web::request.get() == &rctx.request(), "request unbound too early");
                rctx.pop();
                failures.check(tl_request_teardowns == k + 1, "request teardown not exactly once");
                failures.check(tl_app_teardowns == k, "app teardown at request pop");
                actx.pop();
                failures.check(tl_app_teardowns == k + 1, "app teardown not exactly once");
                failures.check(stacks_empty<web>(), "stacks not empty");
            }
        });
    }
    start.open();
    join_all(pool);
    CHECK_MESSAGE(failures.count() == 0, failures.first());
    CHECK_STACKS_EMPTY();
}

// ---------------------------------------------------------------------------------------------------
// Unbound reads; has_*_context.

TEST_CASE("Contexts.Unbound.current_app_and_g_outside_app_context") {
    const std::string app_message = unbound_error_of([] { (void)web::current_app->name; });
    const std::string g_message = unbound_error_of([] { (void)web::g->size(); });
    CHECK(starts_with(app_message, "Working outside of application context. "));
    CHECK(app_message == web::outside_app_context_message);
    CHECK(contains(app_message, "web::AppContext"));  // says how to set one up
    CHECK(g_message == app_message);
    CHECK(unbound_error_of([] { (void)*web::current_app; }) == app_message);
    CHECK(!web::current_app);
    CHECK(!web::g);
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Unbound.request_outside_request_context") {
    const std::string message = unbound_error_of([] { (void)web::request->id; });
    CHECK(starts_with(message, "Working outside of request context. "));
    CHECK(message == web::outside_request_context_message);
    CHECK(contains(message, "web::RequestContext"));
    CHECK(contains(message, "web::handle"));

    // an application context alone does not bind a request
    App app{"main"};
    web::AppContext actx{app};
    actx.run([&] { CHECK(unbound_error_of([] { (void)web::request->id; }) == message); });

    // and after the request is popped it is unbound again
    web::RequestContext rctx{app, Req{1, ""}};
    rctx.run([] {});
    CHECK(unbound_error_of([] { (void)web::request->id; }) == message);
    CHECK(unbound_error_of([] { (void)web::current_app->name; }) == web::outside_app_context_message);
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Has.has_app_context_and_has_request_context") {
    App app{"main"};
    CHECK_FALSE(web::has_app_context());
    CHECK_FALSE(web::has_request_context());
    web::AppContext actx{app};
    actx.run([&] {
        CHECK(web::has_app_context());
        CHECK_FALSE(web::has_request_context());
        web::RequestContext rctx{app, Req{1, ""}};
        rctx.run([] {
            CHECK(web::has_app_context());
            CHECK(web::has_request_context());
        });
        CHECK(web::has_app_context());
        CHECK_FALSE(web::has_request_context());
    });
    CHECK_FALSE(web::has_app_context());
    CHECK_FALSE(web::has_request_context());
    // per thread: another thread sees none while this one has both
    web::RequestContext rctx{app, Req{2, ""}};
    rctx.run([] {
        bool other_has_app = true;
        bool other_has_request = true;
        on_new_thread([&] {
            other_has_app = web::has_app_context();
            other_has_request = web::has_request_context();
        });
        CHECK_FALSE(other_has_app);
        CHECK_FALSE(other_has_request);
        CHECK(web::has_request_context());
    });
    CHECK_STACKS_EMPTY();
}

// ---------------------------------------------------------------------------------------------------
// scope() and run().

TEST_CASE("Contexts.Scope.normal_exit_pops_with_teardown") {
    App app{"main"};
    std::vector<std::string> got;
    app.teardown_request([&](std::exception_ptr e) { got.push_back("r:" + what_of(e)); });
    app.teardown_appcontext([&](std::exception_ptr e) { got.push_back("a:" + what_of(e)); });
    web::RequestContext rctx{app, Req{1, ""}};
    {
        auto guard = rctx.scope();
        CHECK(web::request->id == 1);
        CHECK(got.empty());
    }
    CHECK(got == std::vector<std::string>{"r:null", "a:null"});
    web::AppContext actx{app};
    {
        auto guard = actx.scope();
        CHECK(&*web::current_app == &app);
    }
    CHECK(got.size() == 3);
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Scope.normal_exit_throws_teardown_error") {
    App app{"main"};
    app.teardown_request([](std::exception_ptr) { throw BoomError("teardown failed"); });
    web::RequestContext rctx{app, Req{1, ""}};
    auto body = [&] { auto guard = rctx.scope(); };
    CHECK_THROWS_WITH_AS(body(), "teardown failed", BoomError);
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Scope.exception_exit_pops_and_reports_teardown_errors") {
    IncidentCapture capture;
    App app{"main"};
    int teardowns = 0;
    app.teardown_request([&](std::exception_ptr) {
        ++teardowns;
        throw OtherError("teardown failed while unwinding");
    });
    web::RequestContext rctx{app, Req{1, ""}};
    auto body = [&] {
        auto guard = rctx.scope();
        throw BoomError("body failed");
    };
    CHECK_THROWS_WITH_AS(body(), "body failed", BoomError);  // the body's exception wins
    CHECK(teardowns == 1);
    const auto seen = IncidentCapture::all();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].kind == ctxlocal::Incident::Kind::suppressed_teardown_error);
    CHECK(contains(seen[0].message, "teardown failed while unwinding"));
    CHECK_THROWS_AS(std::rethrow_exception(seen[0].error), OtherError);
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Run.returns_the_result_of_f") {
    App app{"main"};
    web::RequestContext rctx{app, Req{21, ""}};
    web::AppContext actx{app};

    SUBCASE("a value") {
        const std::string name = actx.run([] { return web::current_app->name + "!"; });
        CHECK(name == "main!");
        CHECK(rctx.run([] { return web::request->id * 2; }) == 42);
    }
    SUBCASE("a reference is returned by value: a copy made before the pop") {
        static int cell = 5;
        auto value = rctx.run([]() -> int& { return cell; });
        static_assert(std::is_same_v<decltype(value), int>);
        CHECK(value == 5);
        const auto req = rctx.run([]() -> Req& { return *web::request; });
        static_assert(std::is_same_v<decltype(req), const Req>);
        CHECK(req.id == 21);
        CHECK(&req != &rctx.request());
    }
    SUBCASE("void") {
        bool called = false;
        rctx.run([&] { called = web::request->id == 21; });
        CHECK(called);
    }
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Run.passes_exception_to_teardown_then_rethrows_it") {
    IncidentCapture capture;
    App app{"main"};
    std::exception_ptr seen_by_teardown;
    app.teardown_appcontext([&](std::exception_ptr e) { seen_by_teardown = e; });
    web::AppContext actx{app};
    const BoomError* thrown = nullptr;
    try {
        actx.run([&] {
            BoomError e("run failed");
            throw e;
        });
    } catch (const BoomError& e) {
        thrown = &e;
        // teardown got the very exception object being propagated
        REQUIRE(seen_by_teardown != nullptr);
        try {
            std::rethrow_exception(seen_by_teardown);
        } catch (const BoomError& same) {
            CHECK(&same == thrown);
        }
    }
    CHECK(thrown != nullptr);

    // a teardown error during that goes to the incident handler; f's exception still wins
    app.teardown_appcontext([](std::exception_ptr) { throw OtherError("teardown also failed"); });
    CHECK_THROWS_WITH_AS(actx.run([] { throw BoomError("run failed again"); }), "run failed again",
                         BoomError);
    CHECK(what_of(seen_by_teardown) == "run failed again");
    const auto seen = IncidentCapture::all();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].kind == ctxlocal::Incident::Kind::suppressed_teardown_error);
    CHECK(contains(seen[0].message, "teardown also failed"));
    CHECK_STACKS_EMPTY();
}

// ---------------------------------------------------------------------------------------------------
// Building a RequestContext.

TEST_CASE("Contexts.RequestContext.from_shared_ptr_binds_that_object") {
    App app{"main"};
    auto shared = std::make_shared<Req>(Req{31, "s"});
    web::RequestContext rctx{app, shared};
    CHECK(rctx.shared_request().get() == shared.get());
    rctx.run([&] {
        CHECK(&*web::request == shared.get());
        web::request->secret = "changed";
    });
    CHECK(shared->secret == "changed");
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.RequestContext.by_value_binds_its_own_copy") {
    App app{"main"};
    Req original{32, "orig"};
    web::RequestContext rctx{app, original};
    rctx.run([&] {
        CHECK(&*web::request == &rctx.request());
        CHECK(&*web::request != &original);
        CHECK(web::request->id == 32);
        web::request->secret = "changed";
    });
    CHECK(original.secret == "orig");
    CHECK(rctx.request().secret == "changed");
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.RequestContext.null_shared_ptr_throws_context_error") {
    App app{"main"};
    CHECK(contains(context_error_of([&] { web::RequestContext rctx(app, std::shared_ptr<Req>()); }),
                   "null shared_ptr"));
    CHECK_STACKS_EMPTY();
}

// ---------------------------------------------------------------------------------------------------
// copy_current_request_context.

TEST_CASE("Contexts.Copy.outside_a_request_throws_context_error") {
    auto f = [] { return 1; };
    CHECK(contains(context_error_of([&] { (void)web::copy_current_request_context(f); }),
                   "Working outside of request context"));
    App app{"main"};
    web::AppContext actx{app};
    actx.run([&] {  // an application context is not enough
        CHECK(contains(context_error_of([&] { (void)web::copy_current_request_context(f); }),
                       "Working outside of request context"));
        CHECK(web::app_context_depth() == 1);
    });
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Copy.runs_f_on_another_thread_with_same_request_and_fresh_g" * doctest::timeout(30)) {
    App app{"main"};
    std::atomic<int> request_teardowns{0};
    std::atomic<int> app_teardowns{0};
    app.teardown_request([&](std::exception_ptr) { request_teardowns.fetch_add(1); });
    app.teardown_appcontext([&](std::exception_ptr) { app_teardowns.fetch_add(1); });
    auto original = std::make_shared<Req>(Req{41, "secret"});
    web::RequestContext rctx{app, original};

    std::function<std::string(int)> copied;
    rctx.run([&] {
        web::g->set("k", std::string("original's"));
        copied = web::copy_current_request_context(
            [](int suffix) { return std::to_string(web::request->id) + "/" + std::to_string(suffix); });
    });
    CHECK(request_teardowns.load() == 1);

    const Req* seen_request = nullptr;
    const App* seen_app = nullptr;
    bool g_empty = false;
    std::size_t depths = 99;
    bool clean_after = false;
    std::string result;
    int teardowns_during = -1;
    on_new_thread([&] {
        // run f inside the copy, observe what it sees
        rctx.push();
        auto probe = web::copy_current_request_context([&] {
            seen_request = web::request.get();
            seen_app = web::current_app.get();
            g_empty = web::g->empty() && !web::g->contains("k");
            depths = web::app_context_depth() * 10 + web::request_context_depth();
            web::g->set("k", std::string("copy's"));
        });
        web::g->set("k", std::string("thread's"));
        rctx.pop();
        teardowns_during = request_teardowns.load();
        probe();  // on this thread with nothing pushed
        result = copied(7);
        clean_after = stacks_empty<web>();
    });
    CHECK(seen_request == original.get());
    CHECK(seen_app == &app);
    CHECK(g_empty);
    CHECK(depths == 11);
    CHECK(result == "41/7");
    CHECK(clean_after);
    CHECK(request_teardowns.load() == teardowns_during + 2);  // one per call of a copy
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Copy.called_while_original_active_runs_in_its_own_storage") {
    App app{"main"};
    web::RequestContext rctx{app, Req{42, ""}};
    rctx.run([&] {
        web::g->set("k", std::string("original's"));
        ctxlocal::Namespace* original_g = web::g.get();
        auto copied = web::copy_current_request_context([&] {
            // Its own Storage: only its own copy is pushed there, none of the calling thread's contexts.
            CHECK(ctxlocal::Storage::current());
            CHECK(web::request_context_depth() == 1);
            CHECK(web::app_context_depth() == 1);  // a fresh implicit app context, even for the same app
            CHECK(web::g.get() != original_g);
            CHECK(web::g->empty());
            web::g->set("k", std::string("copy's"));
            return web::request->id;
        });
        CHECK(copied() == 42);
        CHECK(web::g.get() == original_g);
        CHECK(web::g->get<std::string>("k") == "original's");
        CHECK(web::request_context_depth() == 1);
        CHECK(web::app_context_depth() == 1);
    });
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Copy.same_callable_called_from_many_threads_at_once" * doctest::timeout(30)) {
    const int threads = thread_count();
    constexpr int calls = 400;
    App app{"main"};
    std::atomic<int> teardowns{0};
    app.teardown_request([&](std::exception_ptr) { teardowns.fetch_add(1); });
    web::RequestContext rctx{app, Req{51, ""}};
    Failures failures;
    const Req* original = &rctx.request();
    std::function<int(int)> copied;
    rctx.run([&] {
        web::g->set("k", std::string("original's"));
        copied = web::copy_current_request_context([&](int t) {
            failures.check(&*web::request == original, "request object differs");
            failures.check(web::g->empty(), "g not empty: shared between calls");
            web::g->set("thread", t);
            std::this_thread::yield();
            failures.check(web::g->get<int>("thread") == t, "g written by another thread");
            failures.check(web::app_context_depth() == 1 && web::request_context_depth() == 1, "depths");
            return t * 1000 + web::request->id;
        });
    });
    const int teardowns_before = teardowns.load();
    Gate start;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            start.wait();
            for (int k = 0; k < calls; ++k) {
                failures.check(copied(t) == t * 1000 + 51, "result");
                failures.check(stacks_empty<web>(), "stacks not empty after a call");
            }
        });
    }
    start.open();
    join_all(pool);
    CHECK_MESSAGE(failures.count() == 0, failures.first());
    CHECK(teardowns.load() - teardowns_before == threads * calls);
    CHECK_STACKS_EMPTY();
}

// ---------------------------------------------------------------------------------------------------
// handle().

TEST_CASE("Contexts.Handle.returns_the_handler_result_and_leaves_stacks_empty") {
    IncidentCapture capture;
    App app{"main"};
    int teardowns = 0;
    app.teardown_request([&](std::exception_ptr e) { teardowns += e == nullptr ? 1 : 100; });
    SUBCASE("handler without parameters, request by value") {
        const int result = web::handle(app, Req{61, ""}, [] {
            CHECK(web::app_context_depth() == 1);
            CHECK(web::request_context_depth() == 1);
            return web::request->id + 1;
        });
        CHECK(result == 62);
    }
    SUBCASE("handler taking Request&, request as shared_ptr") {
        auto shared = std::make_shared<Req>(Req{63, ""});
        const Req* seen = nullptr;
        const std::string result = web::handle(app, shared, [&](Req& r) {
            seen = &r;
            CHECK(&r == &*web::request);
            return std::to_string(r.id);
        });
        CHECK(seen == shared.get());
        CHECK(result == "63");
    }
    SUBCASE("void handler") {
        bool ran = false;
        web::handle(app, Req{64, ""}, [&] { ran = web::request->id == 64; });
        CHECK(ran);
    }
    SUBCASE("reference result: returned by value") {
        static int cell = 65;
        auto value = web::handle(app, Req{65, ""}, []() -> int& { return cell; });
        static_assert(std::is_same_v<decltype(value), int>);
        CHECK(value == 65);
    }
    CHECK(teardowns == 1);
    CHECK(IncidentCapture::all().empty());
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Handle.handler_exception_reaches_teardown_and_is_rethrown") {
    IncidentCapture capture;
    App app{"main"};
    std::vector<std::string> got;
    app.teardown_request(
        [&](std::exception_ptr e) { got.push_back("r:" + what_of(e) + " " + request_id_now()); });
    app.teardown_appcontext([&](std::exception_ptr e) { got.push_back("a:" + what_of(e)); });
    CHECK_THROWS_WITH_AS(web::handle(app, Req{66, ""}, []() -> int { throw BoomError("handler failed"); }),
                         "handler failed", BoomError);
    CHECK(got == std::vector<std::string>{"r:handler failed id=66", "a:handler failed"});
    CHECK(IncidentCapture::all().empty());
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Handle.teardown_error_after_normal_handler_is_thrown_after_popping") {
    IncidentCapture capture;
    App app{"main"};
    app.teardown_request([](std::exception_ptr) { throw OtherError("teardown failed"); });
    CHECK_THROWS_WITH_AS(web::handle(app, Req{67, ""}, [] { return 1; }), "teardown failed", OtherError);
    CHECK_STACKS_EMPTY();
}

namespace {
/// An App whose Contexts never get an incident handler (IncidentCapture installs none for it).
struct StderrApp {};
using stderr_web = ctxlocal::Contexts<StderrApp, Req>;
}  // namespace

TEST_CASE("Contexts.Incidents.default_handler_writes_the_incident_to_stderr") {
    std::FILE* capture = std::tmpfile();
    REQUIRE(capture != nullptr);
    std::fflush(stderr);
    const int saved = ::dup(2);
    REQUIRE(saved >= 0);
    REQUIRE(::dup2(::fileno(capture), 2) != -1);  // 2 on POSIX, 0 with the Windows C runtime
    StderrApp app;
    stderr_web::AppContext leaked{app};
    stderr_web::handle(app, Req{1, ""}, [&] { leaked.push(); });  // left pushed: reported
    std::fflush(stderr);
    ::dup2(saved, 2);
    ::close(saved);
    std::string written;
    std::rewind(capture);
    for (int c = std::fgetc(capture); c != EOF; c = std::fgetc(capture)) written += static_cast<char>(c);
    std::fclose(capture);
    CHECK(written == "ctxlocal: " + leaked.describe() +
                         " was left pushed by the handler; it was popped and its teardown ran\n");
    CHECK(stderr_web::app_context_depth() == 0);
}

TEST_CASE("Contexts.Handle.leaked_push_is_popped_reported_and_next_request_starts_clean") {
    IncidentCapture capture;
    App app{"main"};
    App other{"other"};
    Log log;
    app.teardown_request(
        [&](std::exception_ptr e) { log.add("app r " + request_id_now() + " " + what_of(e)); });
    app.teardown_appcontext([&](std::exception_ptr e) { log.add("app a " + g_now() + " " + what_of(e)); });
    other.teardown_request([&](std::exception_ptr) { log.add("other r " + request_id_now()); });
    other.teardown_appcontext([&](std::exception_ptr) { log.add("other a " + g_now()); });
    // The leaked contexts outlive handle(): a context must stay alive while it is pushed.
    web::AppContext leaked_app{other};
    web::RequestContext leaked_request{other, Req{999, "leaked secret"}};
    bool throws = false;
    bool leak_app = false;
    std::string leaked_name;
    std::vector<std::string> expected;

    SUBCASE("an AppContext") {
        leak_app = true;
        leaked_name = leaked_app.describe();
        expected = {"other a g=leaked", "app r id=71 null", "app a g=mine null"};
    }
    SUBCASE("a RequestContext") {
        leaked_name = leaked_request.describe();
        expected = {"other r id=999", "other a g=leaked", "app r id=71 null", "app a g=mine null"};
    }
    SUBCASE("a RequestContext, then the handler throws") {
        leaked_name = leaked_request.describe();
        throws = true;
        expected = {"other r id=999", "other a g=leaked", "app r id=71 handler failed",
                    "app a g=mine handler failed"};
    }

    // All on one thread, as on a pooled worker.
    std::vector<std::string> next_request_saw;
    std::size_t leaks_after_first = 0;
    std::vector<std::string> log_after_first;
    on_new_thread([&] {
        auto handler = [&] {
            web::g->set("k", std::string("mine"));
            if (leak_app) {
                leaked_app.push();
            } else {
                leaked_request.push();
            }
            web::g->set("k", std::string("leaked"));
            if (throws) throw BoomError("handler failed");
            return 0;
        };
        try {
            web::handle(app, Req{71, "first secret"}, handler);
        } catch (const BoomError&) {
        }
        leaks_after_first = IncidentCapture::count(ctxlocal::Incident::Kind::leaked_context);
        log_after_first = log.lines();
        next_request_saw.push_back(std::string(stacks_empty<web>() ? "empty" : "not empty"));
        web::handle(app, Req{72, ""}, [&] {
            next_request_saw.push_back(request_id_now());
            next_request_saw.push_back(web::current_app->name);
            next_request_saw.push_back(web::g->empty() ? "g empty" : "g not empty");
            next_request_saw.push_back(std::to_string(web::app_context_depth()) + "/" +
                                       std::to_string(web::request_context_depth()));
        });
    });
    CHECK(leaks_after_first == 1);
    CHECK(log_after_first == expected);
    const auto seen = IncidentCapture::all();
    REQUIRE(seen.size() == 1);  // the second request reported nothing
    CHECK(seen[0].kind == ctxlocal::Incident::Kind::leaked_context);
    CHECK(contains(seen[0].message, leaked_name));
    CHECK(next_request_saw == std::vector<std::string>{"empty", "id=72", "main", "g empty", "1/1"});
    CHECK_STACKS_EMPTY();
}

// Fails with the headers of bb27289: a context destroyed while pushed stays on the stack, pointing at its
// freed request, until handle() unwinds it and runs teardown on it (a use-after-free under ASan when a
// callback reads `request`). Fixed by ~RequestContext/~AppContext popping the context on the calling thread.
TEST_CASE("Contexts.Handle.context_destroyed_while_pushed_is_popped_at_once") {
    IncidentCapture capture;
    App app{"main"};
    std::vector<const Req*> torn_down;  // addresses only: never dereferences a request that may be gone
    app.teardown_request([&](std::exception_ptr) { torn_down.push_back(web::request.get()); });
    const Req* outer = nullptr;
    const Req* inner_request = nullptr;
    std::size_t depth_after = 0;
    const Req* bound_after = nullptr;
    std::size_t leaks_after = 0;
    web::handle(app, Req{74, ""}, [&](Req& r) {
        outer = &r;
        try {
            web::RequestContext inner{app, Req{75, "inner secret"}};
            inner_request = &inner.request();
            inner.push();
            throw BoomError("work failed before inner.pop()");  // destroys inner while it is pushed
        } catch (const BoomError&) {
        }
        depth_after = web::request_context_depth();
        bound_after = web::request.get();
        leaks_after = IncidentCapture::count(ctxlocal::Incident::Kind::leaked_context);
    });
    CHECK(depth_after == 1);
    CHECK(bound_after == outer);
    CHECK(leaks_after == 1);
    REQUIRE(torn_down.size() == 2);
    CHECK(torn_down[0] == inner_request);  // its teardown ran while its request was still alive
    CHECK(torn_down[1] == outer);
    CHECK(IncidentCapture::count(ctxlocal::Incident::Kind::leaked_context) == 1);
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Handle.contexts_pushed_before_handle_are_left_as_found") {
    // A worker that keeps its own application context pushed and serves requests with handle(): every
    // request gets its own request context and g; the worker's contexts and g are untouched.
    IncidentCapture capture;
    App app{"main"};
    App other{"other"};
    Log log;
    other.teardown_request([&](std::exception_ptr) { log.add("other r " + request_id_now()); });
    other.teardown_appcontext([&](std::exception_ptr) { log.add("other a"); });
    app.teardown_request([&](std::exception_ptr) { log.add("main r " + request_id_now()); });
    web::AppContext worker_app{app};
    web::RequestContext worker_request{other, Req{998, "worker's"}};
    auto app_guard = worker_app.scope();
    auto request_guard = worker_request.scope();
    web::g->set("k", std::string("worker's"));  // the g of worker_request's implicit application context
    ctxlocal::Namespace* worker_g = web::g.get();
    for (int id : {73, 74}) {
        std::vector<std::string> saw;
        web::handle(app, Req{id, ""}, [&] {
            saw.push_back(request_id_now());
            saw.push_back(g_now());
            saw.push_back(web::g.get() == worker_g ? "worker's g" : "own g");
            saw.push_back(std::to_string(web::app_context_depth()) + "/" +
                          std::to_string(web::request_context_depth()));
            web::g->set("k", std::string("request's"));
        });
        CHECK(saw == std::vector<std::string>{"id=" + std::to_string(id), "g=-", "own g", "3/2"});
        CHECK(request_id_now() == "id=998");
        CHECK(web::g.get() == worker_g);
        CHECK(web::g->get<std::string>("k") == "worker's");
        CHECK(web::app_context_depth() == 2);  // the worker's and the implicit one of worker_request
        CHECK(web::request_context_depth() == 1);
    }
    CHECK(log.lines() == std::vector<std::string>{"main r id=73", "main r id=74"});
    CHECK(IncidentCapture::all().empty());
}

TEST_CASE("Contexts.Hooks.app_without_apphooks_works_without_callbacks") {
    PlainApp app{"plain"};
    const int result = plain_web::handle(app, Req{81, ""}, [] {
        plain_web::g->set("k", 1);
        return plain_web::request->id + static_cast<int>(plain_web::current_app->name.size());
    });
    CHECK(result == 86);
    plain_web::AppContext actx{app};
    {
        auto guard = actx.scope();
        CHECK(&*plain_web::current_app == &app);
    }
    plain_web::RequestContext rctx{app, Req{82, ""}};
    CHECK_THROWS_AS(rctx.run([] { throw BoomError("x"); }), BoomError);
    const int copied = rctx.run([] { return plain_web::copy_current_request_context([] { return 5; }); })();
    CHECK(copied == 5);
    CHECK_STACKS_EMPTY();
}

// ---------------------------------------------------------------------------------------------------
// Security: a pooled thread's next request never sees the previous one's data.

TEST_CASE("Contexts.Security.pooled_threads_never_see_previous_request_data" * doctest::timeout(30)) {
    const int threads = thread_count();
    constexpr int requests = 5000;
    IncidentCapture capture;
    App app{"main"};
    Failures failures;
    app.teardown_request([&](std::exception_ptr) {
        const Req& r = *web::request;
        failures.check(r.secret == "request-secret-" + std::to_string(r.id), "teardown saw another request");
        failures.check(web::g->get_or<std::string>("secret", "") == "g-secret-" + std::to_string(r.id),
                       "teardown saw another g");
    });
    std::vector<int> ids(requests);
    std::mt19937 random(12345);
    for (int& id : ids) id = static_cast<int>(random() % 1000000);
    std::atomic<int> next{0};
    std::atomic<int> leaks{0};
    Gate start;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&] {
            // Contexts a handler leaks stay alive until the worker ends (as they must while pushed).
            std::vector<std::unique_ptr<web::AppContext>> leaked;
            start.wait();
            for (int i = next.fetch_add(1); i < requests; i = next.fetch_add(1)) {
                const int id = ids[static_cast<std::size_t>(i)];
                auto request = std::make_shared<Req>(Req{id, ""});
                const int result = web::handle(app, request, [&](Req& r) {
                    failures.check(&r == request.get() && &*web::request == request.get(), "wrong request");
                    failures.check(r.secret.empty(), "request carried a secret in");
                    failures.check(web::g->empty(), "g carried values in");
                    failures.check(web::app_context_depth() == 1 && web::request_context_depth() == 1,
                                   "stale contexts at start");
                    r.secret = "request-secret-" + std::to_string(id);
                    web::g->set("secret", "g-secret-" + std::to_string(id));
                    if (i % 7 == 0) {  // leak a push carrying a secret of its own
                        leaked.push_back(std::make_unique<web::AppContext>(app));
                        leaked.back()->push();
                        web::g->set("secret", std::string("leaked-") + std::to_string(id));
                        leaks.fetch_add(1);
                    }
                    return web::request->id;
                });
                failures.check(result == id, "result of another request");
                failures.check(stacks_empty<web>(), "stacks not empty after handle");
            }
        });
    }
    start.open();
    join_all(pool);
    CHECK_MESSAGE(failures.count() == 0, failures.first());
    CHECK(IncidentCapture::count(ctxlocal::Incident::Kind::leaked_context) ==
          static_cast<std::size_t>(leaks));
    CHECK(leaks.load() > 0);
    CHECK_STACKS_EMPTY();
}

// ---------------------------------------------------------------------------------------------------
// handle(): how the request is held.

namespace {
/// A request type that can be moved but not copied.
struct MoveOnlyReq {
    int id = 0;
    std::unique_ptr<int> payload;
};
using move_only_web = ctxlocal::Contexts<App, MoveOnlyReq>;
}  // namespace

TEST_CASE("Contexts.Handle.rvalue_request_is_bound_in_place_and_lvalue_is_copied") {
    App app{"main"};
    Req given{7, "s"};
    const Req* seen = nullptr;
    web::handle(app, std::move(given), [&](Req& r) {
        seen = &r;
        CHECK(&*web::request == &r);
        r.secret = "changed by the handler";
    });
    CHECK(seen == &given);  // bound where it is: not moved, not copied
    CHECK(given.secret == "changed by the handler");

    Req kept{8, "kept"};
    web::handle(app, kept, [&](Req& r) {
        CHECK(&r != &kept);  // a copy
        CHECK(r.id == 8);
        r.secret = "changed";
    });
    CHECK(kept.secret == "kept");  // the caller's object is untouched

    const Req frozen{9, "frozen"};
    web::handle(app, std::move(frozen), [&](Req& r) {  // a const rvalue cannot be bound: copied too
        CHECK(&r != &frozen);
        CHECK(r.id == 9);
        r.secret = "changed";
    });
    CHECK(frozen.secret == "frozen");

    MoveOnlyReq only{3, std::make_unique<int>(4)};
    CHECK(move_only_web::handle(app, std::move(only), [] { return *move_only_web::request->payload; }) == 4);
    CHECK(only.payload != nullptr);  // not moved from
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.Handle.copy_current_request_context_of_a_by_value_request_holds_a_copy" *
          doctest::timeout(30)) {
    App app{"main"};
    std::function<std::string()> later;
    web::handle(app, Req{5, "value"}, [&] {
        later = web::copy_current_request_context(
            [] { return std::to_string(web::request->id) + web::request->secret; });
        web::request->secret = "after the copy";  // the copy was taken before this
    });
    std::string seen;
    std::thread([&] { seen = later(); }).join();  // runs after handle() returned: its request is gone
    CHECK(seen == "5value");

    // With a shared_ptr, the copy shares the very object.
    const auto shared = std::make_shared<Req>(Req{6, "shared"});
    web::handle(app, shared, [&] {
        later = web::copy_current_request_context([] { return web::request->secret; });
        web::request->secret = "changed";
    });
    std::thread([&] { seen = later(); }).join();
    CHECK(seen == "changed");

    // A request that cannot be copied, given by value: refused, nothing changes.
    std::string error;
    move_only_web::handle(app, MoveOnlyReq{1, nullptr}, [&] {
        try {
            (void)move_only_web::copy_current_request_context([] {});
        } catch (const ctxlocal::context_error& e) {
            error = e.what();
        }
        CHECK(move_only_web::request_context_depth() == 1);
        CHECK(move_only_web::app_context_depth() == 1);
    });
    CHECK(error ==
          "copy_current_request_context(): the request was given to web::handle() by value and the Request "
          "type cannot be copied; give handle() a std::shared_ptr<Request> to share it");
    CHECK_STACKS_EMPTY();
}

TEST_CASE("Contexts.G.namespace_values_die_at_pop_and_the_next_context_starts_empty") {
    App app{"main"};
    Counted::live = 0;  // counts live instances, to see when g's values die
    for (int i = 0; i < 3; ++i) {
        web::handle(app, Req{i, ""}, [&] {
            CHECK(web::g->empty());  // nothing left from the previous request on this thread
            web::g->set("value", Counted());
            web::g->set("n", i);
            CHECK(Counted::live == 1);
        });
        CHECK(Counted::live == 0);  // destroyed when its application context popped
    }
    web::AppContext actx{app};
    actx.push();
    web::g->set("value", Counted());
    actx.pop();
    CHECK(Counted::live == 0);
    actx.push();
    CHECK(web::g->empty());
    actx.pop();
    CHECK_STACKS_EMPTY();
}
