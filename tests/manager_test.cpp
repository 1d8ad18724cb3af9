// Tests for ctxlocal::LocalManager (include/ctxlocal/manager.hpp): cleanup destroys (not overwrites) the
// calling thread's values and only those; wrap() and scope() clean up on every exit path; a pooled worker
// thread never lets one request's data reach the next.
#include <ctxlocal/manager.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <ctxlocal/local.hpp>
#include <ctxlocal/local_stack.hpp>
#include <ctxlocal/namespace.hpp>

#include "support/sync.hpp"

namespace {

using test_support::Counted;

using test_support::Gate;

}  // namespace

TEST_CASE("Manager.Size.counts_added_locals") {
    ctxlocal::Local<int> a;
    ctxlocal::LocalStack<int> b;
    ctxlocal::Local<std::string> c;
    ctxlocal::LocalManager manager{a, b};
    CHECK(manager.size() == 2);
    manager.add(c);
    CHECK(manager.size() == 3);
    ctxlocal::LocalManager empty;
    CHECK(empty.size() == 0);
    CHECK_NOTHROW(empty.cleanup());
}

TEST_CASE("Manager.Construct.only_locals_and_stacks") {
    static_assert(
        std::is_constructible_v<ctxlocal::LocalManager, ctxlocal::Local<int>&, ctxlocal::LocalStack<int>&>);
    static_assert(!std::is_constructible_v<ctxlocal::LocalManager, int&>);
    static_assert(!std::is_constructible_v<ctxlocal::LocalManager, std::vector<int>&>);
    static_assert(noexcept(std::declval<const ctxlocal::LocalManager&>().cleanup()),
                  "cleanup() never throws");
    CHECK(true);
}

TEST_CASE("Manager.Cleanup.destroys_locals_and_stacks") {
    Counted::live = 0;
    ctxlocal::Local<Counted> local;
    ctxlocal::LocalStack<Counted> stack;
    ctxlocal::Local<ctxlocal::Namespace> ns;
    ctxlocal::LocalManager manager{local, stack, ns};
    local.emplace(1);
    stack.emplace(2);
    stack.emplace(3);
    ns.value().set("counted", Counted(4));
    REQUIRE(Counted::live == 4);

    manager.cleanup();

    CHECK(Counted::live == 0);  // destroyed, not merely overwritten or hidden
    CHECK_FALSE(local.has_value());
    CHECK_FALSE(stack.local().has_value());
    CHECK(stack.empty());
    CHECK_FALSE(ns.has_value());
    // Released, not poisoned: the next use starts from a fresh value.
    CHECK(local.value().value == 0);
    CHECK(ns.value().empty());
    manager.cleanup();
    CHECK(Counted::live == 0);
}

TEST_CASE("Manager.Cleanup.nothing_to_release_creates_nothing") {
    ctxlocal::Local<int> local;
    ctxlocal::LocalStack<int> stack;
    ctxlocal::LocalManager manager{local, stack};
    manager.cleanup();
    CHECK_FALSE(local.has_value());
    CHECK_FALSE(stack.local().has_value());
    CHECK(local.count() == 0);
}

TEST_CASE("Manager.Cleanup.releases_only_the_calling_thread" * doctest::timeout(30)) {
    for (int threads : {1, 2, 8}) {
        CAPTURE(threads);
        Counted::live = 0;
        ctxlocal::Local<Counted> local;
        ctxlocal::LocalStack<Counted> stack;
        ctxlocal::LocalManager manager{local, stack};
        Gate cleaned;
        test_support::Latch ready(threads);
        std::atomic<int> intact{0};
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t) {
            pool.emplace_back([&, id = t + 1] {
                local.emplace(id);
                stack.emplace(id);
                stack.emplace(id + 100);
                ready.count_down();
                cleaned.wait();  // the main thread cleans up meanwhile
                if (local.get() != nullptr && local.get()->value == id && stack.size() == 2 &&
                    stack.top()->value == id + 100) {
                    ++intact;
                }
                manager.cleanup();  // and now this thread's own, before it exits
                if (!local.has_value() && !stack.local().has_value()) ++intact;
            });
        }
        local.emplace(-1);
        stack.emplace(-1);
        ready.wait();
        REQUIRE(Counted::live == 2 + 3 * threads);
        manager.cleanup();
        CHECK_FALSE(local.has_value());
        CHECK(stack.empty());
        CHECK(Counted::live == 3 * threads);  // exactly the main thread's two were destroyed
        CHECK(local.count() == static_cast<std::size_t>(threads));
        cleaned.open();
        test_support::join_all(pool);
        CHECK(intact == 2 * threads);
        CHECK(Counted::live == 0);
    }
}

TEST_CASE("Manager.Cleanup.in_the_order_added") {
    struct Recorder {
        std::vector<int>* log;
        int id;
        ~Recorder() { log->push_back(id); }
    };
    std::vector<int> log;
    ctxlocal::Local<Recorder> first;
    ctxlocal::LocalStack<std::shared_ptr<Recorder>> second;
    ctxlocal::Local<Recorder> third;
    ctxlocal::LocalManager manager{first, second};
    manager.add(third);
    third.emplace(Recorder{&log, 3});
    second.push(std::make_shared<Recorder>(Recorder{&log, 2}));
    first.emplace(Recorder{&log, 1});
    log.clear();  // the temporaries above
    manager.cleanup();
    CHECK(log == std::vector<int>{1, 2, 3});
}

// ---------------------------------------------------------------------------------------------------------
// wrap()

TEST_CASE("Manager.Wrap.forwards_arguments_and_return_value") {
    ctxlocal::Local<std::string> local;
    ctxlocal::LocalManager manager{local};
    auto handler = manager.wrap([&local](const std::string& prefix, std::unique_ptr<int> owned, int& out) {
        local.value() = prefix + std::to_string(*owned);
        out = *owned * 2;
        return local.value();  // returned by value, before cleanup runs
    });
    int out = 0;
    const std::string result = handler(std::string("n="), std::make_unique<int>(21), out);
    CHECK(result == "n=21");
    CHECK(out == 42);
    CHECK_FALSE(local.has_value());
}

TEST_CASE("Manager.Wrap.cleans_up_after_normal_return") {
    Counted::live = 0;
    ctxlocal::Local<Counted> local;
    ctxlocal::LocalStack<Counted> stack;
    ctxlocal::LocalManager manager{local, stack};
    int seen_inside = -1;
    auto handler = manager.wrap([&] {
        local.emplace(1);
        stack.emplace(2);
        seen_inside = Counted::live;
    });
    handler();
    CHECK(seen_inside == 2);
    CHECK(Counted::live == 0);
    CHECK_FALSE(local.has_value());
    CHECK_FALSE(stack.local().has_value());
}

TEST_CASE("Manager.Wrap.cleans_up_when_f_throws") {
    Counted::live = 0;
    ctxlocal::Local<Counted> local;
    ctxlocal::LocalStack<Counted> stack;
    ctxlocal::LocalManager manager{local, stack};
    auto handler = manager.wrap([&](int code) -> int {
        local.emplace(1);
        stack.emplace(2);
        throw std::runtime_error("request failed: " + std::to_string(code));
    });
    CHECK_THROWS_WITH_AS(handler(500), "request failed: 500", std::runtime_error);
    CHECK(Counted::live == 0);
    CHECK_FALSE(local.has_value());
    CHECK_FALSE(stack.local().has_value());
}

TEST_CASE("Manager.Wrap.stateful_callable_keeps_state_between_calls") {
    ctxlocal::Local<int> local;
    ctxlocal::LocalManager manager{local};
    auto handler = manager.wrap([calls = 0]() mutable { return ++calls; });
    CHECK(handler() == 1);
    CHECK(handler() == 2);
}

TEST_CASE("Manager.Wrap.independent_of_the_manager_object") {
    ctxlocal::Local<int> local;
    auto manager = std::make_unique<ctxlocal::LocalManager>(local);
    auto handler = manager->wrap([&local] { local.value() = 5; });
    manager.reset();  // the callable copied the manager's list
    handler();
    CHECK_FALSE(local.has_value());
}

// ---------------------------------------------------------------------------------------------------------
// scope()

TEST_CASE("Manager.Scope.cleans_up_at_scope_end") {
    Counted::live = 0;
    ctxlocal::Local<Counted> local;
    ctxlocal::LocalStack<Counted> stack;
    ctxlocal::LocalManager manager{local, stack};
    {
        auto guard = manager.scope();
        local.emplace(1);
        stack.emplace(2);
        CHECK(Counted::live == 2);
    }
    CHECK(Counted::live == 0);
    CHECK_FALSE(local.has_value());
    CHECK_FALSE(stack.local().has_value());
}

TEST_CASE("Manager.Scope.cleans_up_during_unwinding") {
    Counted::live = 0;
    ctxlocal::Local<Counted> local;
    ctxlocal::LocalManager manager{local};
    try {
        auto guard = manager.scope();
        local.emplace(1);
        throw std::runtime_error("boom");
    } catch (const std::runtime_error&) {
        CHECK(Counted::live == 0);
        CHECK_FALSE(local.has_value());
    }
    CHECK(Counted::live == 0);
}

// ---------------------------------------------------------------------------------------------------------
// The security lesson: a pooled thread serves request after request; each starts from empty state.

TEST_CASE("Manager.PooledThread.requests_never_see_previous_data" * doctest::timeout(30)) {
    struct Request {
        int id;
        std::string secret;
    };
    for (int requests : {1, 2, 8}) {
        CAPTURE(requests);
        Counted::live = 0;
        ctxlocal::Local<Counted> session;
        ctxlocal::LocalStack<Request> request_stack;
        ctxlocal::Local<ctxlocal::Namespace> g;
        ctxlocal::Local<std::vector<std::string>> audit;
        ctxlocal::LocalManager manager{session, request_stack, g, audit};

        int started_clean = 0;
        int served = 0;
        int failed = 0;
        int leaked = 0;
        auto handle = manager.wrap([&](int id) {
            const bool clean = !session.has_value() && request_stack.empty() &&
                               request_stack.top() == nullptr && !g.has_value() && !audit.has_value();
            if (clean) ++started_clean;
            // Leave data behind on purpose: cleanup must remove it.
            session.emplace(id);
            request_stack.push(Request{id, "secret-" + std::to_string(id)});
            g.value().set("user", "user-" + std::to_string(id));
            g.value().set("counted", Counted(id));
            audit.value().push_back("request " + std::to_string(id));
            if (id % 3 == 2) throw std::runtime_error("handler failed");
            return id;
        });

        std::thread worker([&] {  // one pooled thread, serving every request in turn
            for (int id = 1; id <= requests; ++id) {
                try {
                    if (handle(id) == id) ++served;
                } catch (const std::runtime_error&) {
                    ++failed;
                }
                if (Counted::live != 0 || session.has_value() || g.has_value() || !request_stack.empty()) {
                    ++leaked;  // something survived the request
                }
            }
        });
        worker.join();
        CHECK(started_clean == requests);
        int expected_failures = 0;
        for (int id = 1; id <= requests; ++id) expected_failures += id % 3 == 2 ? 1 : 0;
        CHECK(failed == expected_failures);
        CHECK(served == requests - expected_failures);
        CHECK(leaked == 0);
        CHECK(Counted::live == 0);
    }
}
