// Tests of Contexts inside Storages (include/ctxlocal/context.hpp, storage.hpp): web::make_storage, a
// request that follows its Storage across threads, teardown when the last handle is released, contexts left
// pushed in a released Storage, copy_current_request_context in its own Storage, and g while it is released.
#include <doctest/doctest.h>
#include <ctxlocal/context.hpp>
#include <ctxlocal/storage.hpp>

#include "support/incidents.hpp"
#include "support/sync.hpp"

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using ctxlocal::Storage;

namespace {

struct App : ctxlocal::AppHooks {
    std::string name;
    explicit App(std::string n = "app") : name(std::move(n)) {}
};
struct Req {
    int id = 0;
};
using web = ctxlocal::Contexts<App, Req>;
using IncidentCapture = test_support::IncidentCapture<web>;

std::string id_now() {
    return web::has_request_context() ? "id=" + std::to_string(web::request->id) : "id=-";
}

bool stacks_empty() { return web::app_context_depth() == 0 && web::request_context_depth() == 0; }

/// A thread-safe log.
class Log {
public:
    void add(std::string line) {
        std::lock_guard<std::mutex> lock(mutex_);
        lines_.push_back(std::move(line));
    }
    std::vector<std::string> lines() {
        std::lock_guard<std::mutex> lock(mutex_);
        return lines_;
    }

private:
    std::mutex mutex_;
    std::vector<std::string> lines_;
};

}  // namespace

TEST_CASE("Contexts.Storage.request_follows_the_storage_across_threads") {
    App app;
    Storage task = web::make_storage(app, Req{7});
    CHECK(stacks_empty());  // made and pushed inside the new Storage, not on this thread
    CHECK_FALSE(web::has_request_context());
    task.run([] {
        CHECK(id_now() == "id=7");
        web::g->set("user", std::string("ana"));
    });
    std::string seen;
    std::thread([&] {
        // This thread serves a request of its own; inside the Storage it sees the task's, and afterwards
        // its own again.
        web::RequestContext own{app, Req{1}};
        auto guard = own.scope();
        seen = task.run([] { return id_now() + " " + web::g->get<std::string>("user"); });
        seen += " then " + id_now();
    }).join();
    CHECK(seen == "id=7 ana then id=1");
    CHECK(stacks_empty());
}

TEST_CASE("Contexts.Storage.teardown_runs_once_when_the_last_handle_is_released") {
    App app;
    Log log;
    app.teardown_request([&](std::exception_ptr) { log.add("request " + id_now()); });
    app.teardown_appcontext([&](std::exception_ptr) {
        log.add("app " + id_now() + " g=" + web::g->get_or<std::string>("k", "-"));
    });
    Storage first = web::make_storage(app, std::make_shared<Req>(Req{3}));
    first.run([] { web::g->set("k", std::string("v")); });
    Storage second = first;
    first = Storage::null();
    CHECK(log.lines().empty());  // a handle is left
    std::thread([&] {
        web::RequestContext own{app, Req{9}};
        auto guard = own.scope();
        second = Storage::null();  // the last handle: teardown here, inside the Storage
        CHECK(id_now() == "id=9");
        CHECK(log.lines() == std::vector<std::string>{"request id=3", "app id=- g=v"});
    }).join();
    // The thread's own request was torn down by its guard afterwards, once.
    CHECK(log.lines() ==
          std::vector<std::string>{"request id=3", "app id=- g=v", "request id=9", "app id=- g=-"});
}

TEST_CASE("Contexts.Storage.contexts_left_pushed_are_popped_newest_first_and_reported") {
    IncidentCapture capture;
    App app;
    App other{"other"};
    Log log;
    app.teardown_request([&](std::exception_ptr) { log.add("app request " + id_now()); });
    other.teardown_request([&](std::exception_ptr) { log.add("other request " + id_now()); });
    other.teardown_appcontext([&](std::exception_ptr) { log.add("other app"); });
    web::AppContext left_app{other};
    web::RequestContext left_request{other, Req{5}};
    {
        Storage task = web::make_storage(app, Req{4});
        task.run([&] {
            left_app.push();
            left_request.push();
        });
        CHECK(stacks_empty());
    }
    CHECK(log.lines() == std::vector<std::string>{"other request id=5", "other app", "app request id=4"});
    const auto seen = IncidentCapture::all();
    REQUIRE(seen.size() == 2);  // make_storage's own request context is popped silently
    const std::string why =
        " was left pushed in a Storage whose last handle was released; it was popped and its "
        "teardown ran";
    CHECK(seen[0].kind == ctxlocal::Incident::Kind::leaked_context);
    CHECK(seen[0].message == "ctxlocal: " + left_request.describe() + why);
    CHECK(seen[1].message == "ctxlocal: " + left_app.describe() + why);
    CHECK(stacks_empty());
}

TEST_CASE("Contexts.Storage.released_from_inside_its_own_scope") {
    App app;
    Log log;
    app.teardown_request([&](std::exception_ptr) { log.add("teardown " + id_now()); });
    web::RequestContext own{app, Req{1}};
    auto guard = own.scope();
    {
        Storage task = web::make_storage(app, Req{2});
        const Storage::Scope in(task);
        task = Storage::null();  // the Scope still holds it
        CHECK(id_now() == "id=2");
        CHECK(log.lines().empty());
    }  // the Scope ends: released, torn down with the Storage entered, then the thread is back
    CHECK(log.lines() == std::vector<std::string>{"teardown id=2"});
    CHECK(id_now() == "id=1");
}

TEST_CASE("Contexts.Storage.handle_inside_a_storage_uses_its_stack") {
    App app;
    Storage task = web::make_storage(app, Req{10});
    const std::string inside =
        task.run([&] { return web::handle(app, Req{11}, [] { return id_now(); }) + " then " + id_now(); });
    CHECK(inside == "id=11 then id=10");
    CHECK(stacks_empty());
    CHECK(task.run([] { return web::request_context_depth(); }) == 1);
}

TEST_CASE("Contexts.Storage.make_storage_misuse_changes_nothing") {
    App app;
    CHECK_THROWS_WITH_AS(web::make_storage(app, std::shared_ptr<Req>()),
                         "ctxlocal: RequestContext needs a request, got a null shared_ptr",
                         ctxlocal::context_error);
    CHECK(stacks_empty());
    CHECK_FALSE(Storage::current());
    auto shared = std::make_shared<Req>(Req{12});
    Storage task = web::make_storage(app, shared);
    CHECK(task.run([] { return &*web::request; }) == shared.get());  // shared, not copied
}

TEST_CASE("Contexts.Storage.a_thread_that_made_it_may_exit_first") {
    App app;
    Log log;
    app.teardown_request([&](std::exception_ptr) { log.add("teardown " + id_now()); });
    Storage task;
    std::thread([&] { task = web::make_storage(app, Req{13}); }).join();
    CHECK(log.lines().empty());
    CHECK(task.run([] { return id_now(); }) == "id=13");
    task = Storage::null();
    CHECK(log.lines() == std::vector<std::string>{"teardown id=13"});
}

TEST_CASE("Contexts.Copy.sees_none_of_the_executing_threads_contexts") {
    // folly#2017: the callable runs in its own Storage, so the thread's own request and g stay invisible.
    App app;
    std::function<std::string()> copied;
    web::handle(app, Req{20}, [&] {
        copied = web::copy_current_request_context([] {
            return id_now() + " depth=" + std::to_string(web::request_context_depth()) +
                   " g=" + web::g->get_or<std::string>("secret", "-");
        });
    });
    std::string seen;
    std::thread([&] {
        web::handle(app, Req{21}, [&] {
            web::g->set("secret", std::string("21's"));
            seen = copied();
            seen += " then " + id_now() + " " + web::g->get<std::string>("secret");
        });
    }).join();
    CHECK(seen == "id=20 depth=1 g=- then id=21 21's");
}

TEST_CASE("Contexts.Copy.concurrent_copies_of_one_request_share_no_stack") {
    // werkzeug#2102: two copies of one request running at once on two threads each have their own stack and
    // g; pushes in one are invisible to the other.
    App app;
    Log log;
    app.teardown_request([&](std::exception_ptr) { log.add("teardown " + id_now()); });
    test_support::Barrier both(2);
    std::function<std::string(int)> task;
    web::handle(app, Req{30}, [&] {
        task = web::copy_current_request_context([&](int n) {
            web::g->set("n", n);
            both.arrive_and_wait();  // both copies are pushed now
            web::AppContext nested{app};
            auto guard = nested.scope();
            web::g->set("nested", n);
            both.arrive_and_wait();
            return id_now() + " depth=" + std::to_string(web::app_context_depth()) +
                   " nested=" + std::to_string(web::g->get<int>("nested"));
        });
    });
    std::string a, b;
    std::thread ta([&] { a = task(1); });
    std::thread tb([&] { b = task(2); });
    ta.join();
    tb.join();
    CHECK(a == "id=30 depth=2 nested=1");
    CHECK(b == "id=30 depth=2 nested=2");
    CHECK(log.lines() == std::vector<std::string>{"teardown id=30", "teardown id=30", "teardown id=30"});
}

namespace {

/// A value whose destructor looks at g while g is being released.
struct LooksAtG {
    std::string* seen;
    bool armed = true;
    explicit LooksAtG(std::string* s) : seen(s) {}
    LooksAtG(LooksAtG&& o) noexcept : seen(o.seen) { o.armed = false; }
    LooksAtG(const LooksAtG&) = delete;
    LooksAtG& operator=(const LooksAtG&) = delete;
    LooksAtG& operator=(LooksAtG&&) = delete;
    ~LooksAtG() {
        if (!armed) return;
        *seen = web::g.get() == nullptr ? "g unbound" : "g bound";
        try {
            web::g->set("again", 1);
            *seen += ", set worked";
        } catch (const ctxlocal::unbound_error&) {
            *seen += ", set refused";
        }
        *seen += web::has_app_context() ? ", app bound" : ", app unbound";
    }
};

/// A custom G that records what its destructor saw of g.
struct CustomG {
    static inline std::atomic<int> made{0};
    static inline std::string seen_in_destructor;
    int value = 0;
    CustomG() noexcept { ++made; }
    ~CustomG() {
        seen_in_destructor =
            ctxlocal::Contexts<App, Req, CustomG>::g.get() == nullptr ? "g unbound" : "g bound";
    }
};
using custom_web = ctxlocal::Contexts<App, Req, CustomG>;

}  // namespace

TEST_CASE("Contexts.GRelease.namespace_value_destructor_sees_g_unbound") {
    App app;
    std::string seen;
    web::handle(app, Req{40}, [&] { web::g->set("looker", LooksAtG(&seen)); });
    CHECK(seen == "g unbound, set refused, app bound");
    // The next request on the thread has an empty g.
    CHECK(web::handle(app, Req{41}, [] { return web::g->empty(); }));
}

TEST_CASE("Contexts.GRelease.custom_g_destructor_sees_g_unbound_and_nothing_is_inherited") {
    App app;
    CustomG::made = 0;
    custom_web::handle(app, Req{42}, [] { custom_web::g->value = 42; });
    CHECK(CustomG::seen_in_destructor == "g unbound");
    CHECK(CustomG::made == 1);  // reading g in its destructor did not make another
    const int next = custom_web::handle(app, Req{43}, [] { return custom_web::g->value; });
    CHECK(next == 0);  // the next request on this thread gets a fresh G, not the previous request's
    CHECK(CustomG::made == 2);
}

TEST_CASE("Contexts.Storage.copy_current_request_storage_gives_a_task_its_own_copy") {
    App app;
    Log log;
    app.teardown_request([&](std::exception_ptr) { log.add("teardown " + id_now()); });
    CHECK_THROWS_AS(web::copy_current_request_storage(), ctxlocal::context_error);
    Storage copy = Storage::null();
    web::handle(app, Req{50}, [&] {
        web::g->set("k", std::string("original's"));
        copy = web::copy_current_request_storage();
        CHECK(copy != Storage::current());
    });
    CHECK(log.lines() == std::vector<std::string>{"teardown id=50"});
    const std::string seen = copy.run([] {
        return id_now() + " g=" + web::g->get_or<std::string>("k", "-") +
               " depth=" + std::to_string(web::request_context_depth());
    });
    CHECK(seen == "id=50 g=- depth=1");  // the same request (a copy: handle() had it by value), its own g
    copy = Storage::null();
    CHECK(log.lines() == std::vector<std::string>{"teardown id=50", "teardown id=50"});
}
