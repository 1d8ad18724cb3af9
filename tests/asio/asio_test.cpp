// Tests of ctxlocal::bind_executor (include/ctxlocal/asio.hpp) with standalone asio: every function the
// adapted executor runs, runs inside its Storage, on whichever io_context thread runs it; a coroutine
// co_spawned on it sees its Storage after every co_await, and the threads see none of it in between.
#include <doctest/doctest.h>
#include <asio.hpp>
#include <ctxlocal/asio.hpp>
#include <ctxlocal/local.hpp>
#include <ctxlocal/storage.hpp>

#include "../support/sync.hpp"

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

using ctxlocal::Local;
using ctxlocal::Storage;

namespace {

Local<int> request_id;

/// Runs `ioc` on `n` threads until it runs out of work; returns how many times a thread found itself
/// inside a Storage, or holding a request_id of its own, between two handlers or at the end.
int run_on_threads(asio::io_context& ioc, int n) {
    std::atomic<int> dirty{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
        threads.emplace_back([&] {
            ioc.run();
            if (Storage::current() || request_id.get() != nullptr) ++dirty;
        });
    }
    for (std::thread& t : threads) t.join();
    return dirty.load();
}

}  // namespace

TEST_CASE("Asio.Post.functions_run_in_the_bound_storage_on_any_thread" * doctest::timeout(60)) {
    asio::io_context ioc;
    constexpr int requests = 50;
    std::vector<Storage> storages(requests);
    for (int i = 0; i < requests; ++i) storages[i].run([i] { request_id.value() = i; });
    std::atomic<int> mismatches{0}, ran{0};
    for (int round = 0; round < 20; ++round) {
        for (int i = 0; i < requests; ++i) {
            asio::post(ctxlocal::bind_executor(ioc.get_executor(), storages[i]), [&, i] {
                if (request_id.get() == nullptr || *request_id.get() != i) ++mismatches;
                ++ran;
            });
        }
    }
    // Plain handlers in between see none of it.
    for (int i = 0; i < 200; ++i) {
        asio::post(ioc, [&] {
            if (Storage::current() || request_id.get() != nullptr) ++mismatches;
        });
    }
    CHECK(run_on_threads(ioc, 4) == 0);
    CHECK(mismatches.load() == 0);
    CHECK(ran.load() == requests * 20);
}

namespace {

asio::awaitable<void> hop_and_check(int id, std::atomic<int>& mismatches, std::atomic<int>& multi_threaded) {
    request_id.value() = id;
    auto ex = co_await asio::this_coro::executor;
    asio::steady_timer timer(ex);  // made from the adapted executor: its completions run in the Storage
    std::set<std::thread::id> threads{test_support::current_thread_id()};
    for (int i = 0; i < 10; ++i) {
        timer.expires_after(std::chrono::microseconds(50 * (id % 5)));
        co_await timer.async_wait(asio::use_awaitable);
        co_await asio::post(ex, asio::use_awaitable);
        threads.insert(test_support::current_thread_id());
        if (request_id.get() == nullptr || *request_id.get() != id) ++mismatches;
    }
    if (threads.size() > 1) ++multi_threaded;
}

}  // namespace

TEST_CASE("Asio.CoSpawn.a_coroutine_sees_its_storage_after_every_co_await" * doctest::timeout(60)) {
    asio::io_context ioc;
    std::atomic<int> mismatches{0}, multi_threaded{0};
    constexpr int coroutines = 100;
    for (int i = 0; i < coroutines; ++i) {
        asio::co_spawn(ctxlocal::bind_executor(ioc.get_executor(), Storage()),
                       hop_and_check(i, mismatches, multi_threaded), asio::detached);
    }
    CHECK(run_on_threads(ioc, 4) == 0);
    CHECK(mismatches.load() == 0);
    MESSAGE("coroutines that ran on more than one thread: " << multi_threaded.load() << " of " << coroutines);
}

TEST_CASE("Asio.Bind.one_argument_form_takes_the_current_storage_or_a_fresh_one") {
    asio::io_context ioc;
    request_id.value() = -1;  // the binding thread's own value: never seen by the functions
    Storage request;
    request.run([] { request_id.value() = 7; });
    std::vector<std::string> seen;
    auto record = [&] {
        seen.push_back(request_id.get() == nullptr ? "none" : std::to_string(*request_id.get()));
    };
    request.run([&] { asio::post(ctxlocal::bind_executor(ioc.get_executor()), record); });
    asio::post(ctxlocal::bind_executor(ioc.get_executor()), record);
    ioc.run();
    CHECK(seen == std::vector<std::string>{"7", "none"});
    CHECK(*request_id.get() == -1);
    request_id.reset();
    CHECK_THROWS_AS(ctxlocal::bind_executor(ioc.get_executor(), Storage::null()), ctxlocal::context_error);
}

TEST_CASE("Asio.Properties.queries_go_to_the_inner_executor_and_requirements_keep_the_storage") {
    asio::io_context ioc;
    Storage request;
    auto ex = ctxlocal::bind_executor(ioc.get_executor(), request);
    CHECK(&asio::query(ex, asio::execution::context) == &ioc);
    auto never = asio::require(ex, asio::execution::blocking.never);
    CHECK(never.storage() == request);
    CHECK(asio::query(never, asio::execution::blocking) == asio::execution::blocking.never);
    {
        auto tracked =
            asio::prefer(ex, asio::execution::outstanding_work.tracked);  // keeps ioc busy: dropped
        CHECK(tracked.storage() == request);
    }
    ioc.restart();  // the work count went back to zero, which stops an io_context
    CHECK(ex == ctxlocal::bind_executor(ioc.get_executor(), request));
    CHECK(ex != ctxlocal::bind_executor(ioc.get_executor(), Storage()));
    asio::any_io_executor any = ex;  // usable wherever asio takes an executor
    bool ran_inside = false;
    asio::post(any, [&] { ran_inside = Storage::current() == request; });
    ioc.run();
    CHECK(ran_inside);
}

TEST_CASE("Asio.Overlap.two_handlers_of_one_storage_never_run_at_once" * doctest::timeout(60)) {
    asio::io_context ioc;
    Storage request;
    auto ex = ctxlocal::bind_executor(ioc.get_executor(), request);
    std::atomic<int> inside{0}, overlaps{0}, ran{0};
    for (int i = 0; i < 200; ++i) {
        asio::post(ex, [&] {
            if (inside.fetch_add(1) != 0) ++overlaps;
            std::this_thread::sleep_for(std::chrono::microseconds(20));
            inside.fetch_sub(1);
            ++ran;
        });
    }
    CHECK(run_on_threads(ioc, 4) == 0);
    CHECK(overlaps.load() == 0);  // the second waits until the first has left the Storage
    CHECK(ran.load() == 200);
}

TEST_CASE("Asio.Dispatch.inline_dispatch_from_inside_nests") {
    asio::io_context ioc;
    Storage outer, inner;
    outer.run([] { request_id.value() = 1; });
    inner.run([] { request_id.value() = 2; });
    std::vector<int> seen;
    asio::post(ctxlocal::bind_executor(ioc.get_executor(), outer), [&] {
        asio::dispatch(ctxlocal::bind_executor(ioc.get_executor(), inner),
                       [&] { seen.push_back(*request_id.get()); });
        seen.push_back(*request_id.get());  // back in the outer Storage
        asio::dispatch(ctxlocal::bind_executor(ioc.get_executor(), outer),
                       [&] { seen.push_back(*request_id.get()); });
    });
    ioc.run();
    CHECK(seen == std::vector<int>{2, 1, 1});
    CHECK_FALSE(Storage::current());
}
