// Tests of ctxlocal::task, start, sync_wait and storage_promise (include/ctxlocal/task.hpp,
// storage_promise.hpp; C++20): a task runs in its Storage on every resume, on any thread; every
// suspension and the completion restore the thread exactly (the paths Kotlin's ThreadContextElement got
// wrong: the first resume, immediate completion, completion itself); a task destroyed while suspended is
// destroyed with its Storage entered (tokio's rule); a task type of one's own becomes storage-aware
// through storage_promise.
#include <doctest/doctest.h>
#include <ctxlocal/context.hpp>
#include <ctxlocal/local.hpp>
#include <ctxlocal/local_stack.hpp>
#include <ctxlocal/storage.hpp>
#include <ctxlocal/task.hpp>

#include "support/sync.hpp"
#include "support/watchdog.hpp"

#include <atomic>
#include <condition_variable>
#include <coroutine>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using ctxlocal::Local;
using ctxlocal::Storage;
using ctxlocal::task;

namespace {

Local<std::string> who;
Local<int> step;

/// A thread that resumes the coroutines posted to it, one at a time, and records after each resume what
/// the thread runs on (it must be exactly what it ran on before).
class Worker {
public:
    Worker() : thread_([this] { loop(); }) {}
    ~Worker() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    void post(std::function<void()> job) {
        std::lock_guard<std::mutex> lock(mutex_);  // notified under the lock: see Gate::open
        jobs_.push_back(std::move(job));
        cv_.notify_all();
    }
    /// An awaitable that resumes the awaiting coroutine on this worker.
    auto schedule() {
        struct Awaiter {
            Worker* worker;
            bool await_ready() const noexcept { return false; }
            void await_suspend(std::coroutine_handle<> h) {
                worker->post([h] { h.resume(); });
            }
            void await_resume() const noexcept {}
        };
        return Awaiter{this};
    }
    std::thread::id id() const { return thread_.get_id(); }
    /// How many times the worker found itself not exactly as before a resume.
    int dirty() const { return dirty_.load(); }

private:
    void loop() {
        who.value() = "worker's own";  // the worker thread's own values, which no task may see
        for (;;) {
            std::function<void()> job;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
                if (jobs_.empty()) return;
                job = std::move(jobs_.front());
                jobs_.pop_front();
            }
            job();
            if (Storage::current() || who.get() == nullptr || *who.get() != "worker's own") ++dirty_;
        }
    }

    std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> jobs_;
    bool stop_ = false;
    std::atomic<int> dirty_{0};
    std::thread thread_;
};

task<std::string> read_who_after_hop(Worker& w) {
    co_await w.schedule();
    co_return who.get() == nullptr ? "<none>" : *who.get();
}

task<std::string> hop_twice(Worker& a, Worker& b, std::vector<std::thread::id>* ran_on) {
    who.value() = "task";
    ran_on->push_back(test_support::current_thread_id());
    co_await a.schedule();
    ran_on->push_back(test_support::current_thread_id());
    const std::string first = *who.get();
    co_await b.schedule();
    ran_on->push_back(test_support::current_thread_id());
    co_return first + "," + *who.get();
}

}  // namespace

TEST_CASE("Task.Resume.the_storage_follows_the_task_across_threads" * doctest::timeout(30)) {
    test_support::Watchdog watchdog("Task.Resume.the_storage_follows_the_task_across_threads");
    Worker a, b;
    std::vector<std::thread::id> ran_on;
    who.value() = "main's own";
    CHECK(ctxlocal::sync_wait(hop_twice(a, b, &ran_on)) == "task,task");
    CHECK(*who.get() == "main's own");  // the caller's own values, untouched
    REQUIRE(ran_on.size() == 3);
    CHECK((ran_on[1] == a.id()));
    CHECK((ran_on[2] == b.id()));
    CHECK(a.dirty() == 0);  // after each resume returned, the worker ran on its own values again
    CHECK(b.dirty() == 0);
    who.reset();
}

TEST_CASE("Task.Await.an_awaited_task_runs_in_the_awaiting_tasks_storage" * doctest::timeout(30)) {
    Worker w;
    auto outer = [&]() -> task<std::string> {
        who.value() = "outer";
        std::string inner = co_await read_who_after_hop(w);  // a call: same Storage
        co_return inner + "/" + *who.get();
    };
    CHECK(ctxlocal::sync_wait(outer()) == "outer/outer");
    CHECK(w.dirty() == 0);
}

TEST_CASE("Task.Start.runs_in_the_current_storage_or_a_fresh_one") {
    who.value() = "thread";
    std::string seen;
    auto probe = [&]() -> task<void> {
        seen = who.get() == nullptr ? "<none>" : *who.get();
        co_return;
    };
    ctxlocal::start(probe());
    CHECK(seen == "<none>");  // no Storage current: a fresh one, never the thread's values (folly#2017)
    Storage request;
    request.run([] { who.value() = "request"; });
    request.run([&] { ctxlocal::start(probe()); });
    CHECK(seen == "request");
    ctxlocal::start(probe(), request);  // the same, from outside the Storage
    CHECK(seen == "request");
    CHECK(*who.get() == "thread");  // immediate completion restored the thread
    CHECK_FALSE(Storage::current());
    who.reset();
}

TEST_CASE("Task.SyncWait.lends_the_callers_storage_while_the_task_runs_elsewhere" * doctest::timeout(30)) {
    Worker w;
    Storage request;
    std::string seen;
    request.run([&] {
        who.value() = "request";
        seen = ctxlocal::sync_wait(read_who_after_hop(w));  // resumes on the worker, in `request`
        CHECK(Storage::current() == request);               // taken back afterwards
        CHECK(*who.get() == "request");
    });
    CHECK(seen == "request");
}

namespace {

/// Awaitables that exercise every shape of await_suspend.
struct ReadyAwaiter {  // never suspends
    bool await_ready() const noexcept { return true; }
    void await_suspend(std::coroutine_handle<>) const noexcept {}
    int await_resume() const noexcept { return 1; }
};
struct DeclinesAwaiter {  // await_suspend returns false: resumes at once
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<>) const noexcept {
        saw_thread_values = who.get() != nullptr && *who.get() == "thread";  // the task's Storage was left
        return false;
    }
    int await_resume() const noexcept { return 2; }
    static inline bool saw_thread_values = false;
};
struct ThrowingAwaiter {  // await_suspend throws: the exception goes to the coroutine
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<>) const { throw std::runtime_error("cannot suspend"); }
    void await_resume() const noexcept {}
};
/// await_suspend hands the thread to another coroutine (symmetric transfer), which resumes the task.
struct Bouncer {
    struct promise_type {
        Bouncer get_return_object() {
            return Bouncer{std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_always initial_suspend() noexcept { return {}; }
        std::suspend_always final_suspend() noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() { std::terminate(); }
    };
    std::coroutine_handle<promise_type> h;
};
struct TransferAwaiter {
    std::coroutine_handle<>* resume_later;
    std::coroutine_handle<> bouncer;
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) const noexcept {
        *resume_later = h;
        return bouncer;
    }
    int await_resume() const noexcept { return 3; }
};

}  // namespace

TEST_CASE("Task.Suspension.every_await_shape_leaves_and_reenters_exactly") {
    who.value() = "thread";
    Storage request;
    request.run([] { who.value() = "request"; });
    std::coroutine_handle<> later = nullptr;
    std::string seen_by_bouncer;
    auto bounce = [&]() -> Bouncer {
        seen_by_bouncer = who.get() == nullptr ? "<none>" : *who.get();
        co_return;
    };
    Bouncer bouncer = bounce();
    std::vector<std::string> seen;
    int sum = 0;
    auto body = [&]() -> task<void> {
        sum += co_await ReadyAwaiter{};
        seen.push_back(*who.get());
        sum += co_await DeclinesAwaiter{};
        seen.push_back(*who.get());
        try {
            co_await ThrowingAwaiter{};
        } catch (const std::runtime_error&) {
            seen.push_back(*who.get());  // the exception arrives inside the Storage again
        }
        sum += co_await TransferAwaiter{&later, bouncer.h};
        seen.push_back(*who.get());
    };
    ctxlocal::start(body(), request);
    CHECK(seen_by_bouncer == "thread");  // the coroutine it transferred to ran outside the task's Storage
    CHECK(*who.get() == "thread");       // suspended: the thread is exactly as before
    CHECK_FALSE(Storage::current());
    REQUIRE(later);
    later.resume();  // completes
    CHECK(DeclinesAwaiter::saw_thread_values);
    CHECK(sum == 6);
    CHECK(seen == std::vector<std::string>{"request", "request", "request", "request"});
    CHECK(*who.get() == "thread");
    CHECK_FALSE(Storage::current());
    bouncer.h.destroy();
    who.reset();
}

TEST_CASE("Task.Exceptions.propagate_to_the_awaiting_task_and_out_of_sync_wait" * doctest::timeout(30)) {
    Worker w;
    auto failing = [&]() -> task<int> {
        co_await w.schedule();
        throw std::runtime_error("inner failed");
        co_return 0;
    };
    auto outer = [&]() -> task<int> {
        step.value() = 1;
        try {
            co_return co_await failing();
        } catch (const std::runtime_error&) {
            co_return* step.get() + 10;  // still in the task's Storage
        }
    };
    CHECK(ctxlocal::sync_wait(outer()) == 11);
    CHECK_THROWS_WITH_AS(ctxlocal::sync_wait(failing()), "inner failed", std::runtime_error);
    CHECK(step.get() == nullptr);
}

namespace {
/// Lives in a coroutine frame; when destroyed, records the Storage and the request it saw.
struct FrameGuard {
    Storage* seen_storage;
    std::string* seen_who;
    int* destroyed;
    ~FrameGuard() {
        *seen_storage = Storage::current();
        *seen_who = who.get() == nullptr ? "<none>" : *who.get();
        ++*destroyed;
    }
};
}  // namespace

TEST_CASE("Task.Destroy.a_suspended_task_is_destroyed_with_its_storage_entered" * doctest::timeout(30)) {
    Storage seen_storage = Storage::null();
    std::string seen_who;
    int destroyed = 0;
    std::coroutine_handle<> parked = nullptr;
    struct Park {
        std::coroutine_handle<>* slot;
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<> h) const noexcept { *slot = h; }
        void await_resume() const noexcept {}
    };
    auto body = [&]() -> task<void> {
        who.value() = "request";
        FrameGuard guard{&seen_storage, &seen_who, &destroyed};
        co_await Park{&parked};
    };
    Storage request;
    auto t = std::make_unique<task<void>>(body());
    {
        auto h = t->handle();
        h.promise().run_as_root(request);
        h.resume();  // runs to Park: suspended
    }
    REQUIRE(parked);
    bool destroying_thread_clean = false;
    std::thread([&] {
        who.value() = "destroying thread's own";
        t.reset();  // destroyed on another thread, while suspended
        destroying_thread_clean = !Storage::current() && *who.get() == "destroying thread's own";
    }).join();
    CHECK(destroyed == 1);  // exactly once
    CHECK(seen_storage == request);
    CHECK(seen_who == "request");
    CHECK(destroying_thread_clean);
}

namespace {
struct TaskApp : ctxlocal::AppHooks {};
struct TaskRequest {
    int id = 0;
};
using task_web = ctxlocal::Contexts<TaskApp, TaskRequest>;
std::string task_request_now() {
    return task_web::has_request_context() ? "id=" + std::to_string(task_web::request->id) : "id=-";
}
}  // namespace

TEST_CASE("Task.Destroy.a_suspended_request_task_is_torn_down_once_on_the_destroying_thread" *
          doctest::timeout(30)) {
    // A request served by a coroutine that is destroyed while suspended, on another thread that serves a
    // request of its own: the request's teardown runs exactly once, there, with the task's request bound;
    // the destroying thread's own request is bound again afterwards.
    TaskApp app;
    std::vector<std::string> log;
    std::mutex log_mutex;
    app.teardown_request([&](std::exception_ptr) {
        std::lock_guard<std::mutex> lock(log_mutex);
        log.push_back("teardown " + task_request_now());
    });
    std::coroutine_handle<> parked = nullptr;
    struct Park {
        std::coroutine_handle<>* slot;
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<> h) const noexcept { *slot = h; }
        void await_resume() const noexcept {}
    };
    std::string seen_before_park;
    auto body = [&]() -> task<void> {
        seen_before_park = task_request_now();
        co_await Park{&parked};
        seen_before_park = "resumed (must not happen)";
    };
    auto t = std::make_unique<task<void>>(body());
    {
        Storage request = task_web::make_storage(app, TaskRequest{77});
        auto h = t->handle();
        h.promise().run_as_root(request);
        h.resume();  // runs to Park: suspended; the task holds the only handle now
    }
    REQUIRE(parked);
    CHECK(seen_before_park == "id=77");
    CHECK_FALSE(task_web::has_request_context());
    std::string after;
    std::thread([&] {
        task_web::RequestContext own{app, TaskRequest{5}};
        auto guard = own.scope();
        t.reset();  // destroyed while suspended
        after = task_request_now() + " depth=" + std::to_string(task_web::request_context_depth());
    }).join();
    CHECK(after == "id=5 depth=1");
    CHECK(log == std::vector<std::string>{"teardown id=77", "teardown id=5"});
}

TEST_CASE("Task.Destroy.local_destroyed_while_a_suspended_task_holds_its_value" * doctest::timeout(30)) {
    using test_support::Counted;
    const int live = Counted::live.load();
    auto* counted = new Local<Counted>();
    Worker w;
    Storage request;
    test_support::Gate destroyed, resumed;
    std::unique_ptr<Local<Counted>> fresh;
    bool read_null = false;
    auto body = [&]() -> task<void> {
        counted->value();
        co_await w.schedule();                // the worker resumes it only after the Local is gone
        read_null = fresh->get() == nullptr;  // a new Local (it may reuse the slot) shows no old value
        resumed.open();
    };
    w.post([&] { destroyed.wait(); });  // holds the worker until the Local is destroyed
    ctxlocal::start(body(), request);
    delete counted;  // destroys the task's value, once
    CHECK(Counted::live.load() == live);
    fresh = std::make_unique<Local<Counted>>();
    destroyed.open();
    resumed.wait();
    CHECK(read_null);
}

TEST_CASE("Task.Misuse.resumed_while_its_storage_is_entered_elsewhere" * doctest::timeout(30)) {
    Worker w;
    Storage request;
    std::string outcome;
    test_support::Gate done;
    auto body = [&]() -> task<void> {
        try {
            co_await w.schedule();  // resumed on the worker while the caller still has `request` entered
            outcome = "entered";
        } catch (const ctxlocal::context_error& e) {
            // goes on in a fresh, empty Storage: it sees neither the request nor the worker's own values
            outcome = std::string(Storage::current() && Storage::current() != request && who.get() == nullptr
                                      ? "fresh: "
                                      : "wrong: ") +
                      e.what();
        }
        done.open();
    };
    request.run([&] {
        who.value() = "request";
        ctxlocal::start(body());  // the caller stays inside `request` until the worker resumed the task
        done.wait();
    });
    CHECK(outcome.find("fresh: ") == 0);
    CHECK(outcome.find("entered on another thread") != std::string::npos);
    CHECK(w.dirty() == 0);
}

namespace {

/// A framework's own lazy task type, made storage-aware with ctxlocal::storage_promise.
struct mini_task {
    struct promise_type : ctxlocal::storage_promise {
        std::coroutine_handle<> continuation = std::noop_coroutine();
        mini_task get_return_object() {
            return mini_task{std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_always initial_suspend() noexcept { return {}; }
        auto final_suspend() noexcept {
            struct Final {
                bool await_ready() const noexcept { return false; }
                std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) noexcept {
                    h.promise().leave_at_final();
                    return h.promise().continuation;
                }
                void await_resume() const noexcept {}
            };
            return Final{};
        }
        void return_void() noexcept {}
        void unhandled_exception() { std::terminate(); }
    };
    std::coroutine_handle<promise_type> h;
    mini_task(mini_task&& o) noexcept : h(std::exchange(o.h, nullptr)) {}
    explicit mini_task(std::coroutine_handle<promise_type> handle) : h(handle) {}
    ~mini_task() {
        if (h) h.destroy();
    }
};

}  // namespace

TEST_CASE("Task.Mixin.a_task_type_of_ones_own_runs_in_its_storage" * doctest::timeout(30)) {
    std::optional<Worker> worker;
    worker.emplace();
    Worker& w = *worker;
    Storage request;
    request.run([] { who.value() = "request"; });
    std::vector<std::string> seen;
    test_support::Gate finished;
    auto body = [&]() -> mini_task {
        seen.push_back(*who.get());
        co_await w.schedule();  // an external awaitable: wrapped by storage_promise::await_transform
        seen.push_back(*who.get());
        seen.push_back(co_await read_who_after_hop(w));  // a ctxlocal::task inherits the Storage
        finished.open();
    };
    mini_task t = body();
    t.h.promise().run_as_root(request);
    t.h.resume();
    finished.wait();
    const int dirty = w.dirty();
    worker.reset();  // joins the worker: the task has finished its final suspension there
    CHECK(t.h.done());
    CHECK(seen == std::vector<std::string>{"request", "request", "request"});
    CHECK_FALSE(Storage::current());
    CHECK(dirty == 0);
}

TEST_CASE("Task.Concurrent.tasks_in_their_own_storages_never_share_a_stack" * doctest::timeout(30)) {
    // werkzeug#2102: concurrent tasks of one request must not share one mutable stack.
    ctxlocal::LocalStack<int> stack;
    Worker a, b;
    std::atomic<int> mismatches{0};
    test_support::Latch done(2);
    auto body = [&](Worker& w, int id) -> task<void> {
        for (int i = 0; i < 200; ++i) {
            stack.push(id);
            co_await w.schedule();
            if (stack.size() != 1 || *stack.top() != id) ++mismatches;
            stack.pop();
        }
        done.count_down();
    };
    ctxlocal::start(body(a, 1), Storage());
    ctxlocal::start(body(b, 2), Storage());
    done.wait();
    CHECK(mismatches.load() == 0);
    CHECK(stack.empty());
}
