// Propagation: a request's context follows its work onto other threads. One request (#42, user ana) is
// bound in a Storage made by web::make_storage(), then its work leaves the main thread three ways:
//   1. fan-out:  three parts run at once on a thread pool, each through web::copy_current_request_context:
//                the same request, but each its own fresh g, stacks and teardown (concurrent work shares
//                nothing mutable);
//   2. hop:      one step runs on a pool thread through ctxlocal::wrap: the same Storage, so the same g
//                (what it stores there, the request sees afterwards);
//   3. task:     a ctxlocal::task chain that resumes on pool threads after each co_await: every resume is
//                inside the request's Storage, and an awaited task shares it (a call, not a copy).
// Helpers take no parameters: they read web::request and web::g. The pool threads hold values of their
// own (a Local) that no request may see, and must see no request between two jobs. Every line printed is
// checked; exits 1 when a check failed. Needs C++20 (ctxlocal/task.hpp).
#include <ctxlocal/context.hpp>
#include <ctxlocal/local.hpp>
#include <ctxlocal/storage.hpp>
#include <ctxlocal/task.hpp>

#include <atomic>
#include <condition_variable>
#include <coroutine>
#include <cstdio>
#include <deque>
#include <functional>
#include <future>
#include <latch>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

struct ShopApp : ctxlocal::AppHooks {
    std::string name;
};

struct Request {
    int id;
    std::string user;
};

using web = ctxlocal::Contexts<ShopApp, Request>;

// ---------------------------------------------------------------------------------------------------
// Bookkeeping of the example itself.

std::atomic<int> failures{0};

void check(bool ok, const std::string& what) {
    if (ok) return;
    failures.fetch_add(1);
    std::fprintf(stderr, "CHECK FAILED: %s\n", what.c_str());
}

/// The name of the calling OS thread ("main", "pool-1"): always the thread's own, also inside a Storage.
ctxlocal::ThreadLocal<std::string> thread_name;
/// A value a pool thread keeps for itself; code running for a request must never see it.
ctxlocal::Local<std::string> pool_own;

std::string this_thread() { return thread_name.get() == nullptr ? "?" : *thread_name.get(); }

/// A fixed pool of threads running jobs in the order posted. After each job a thread checks it is back on
/// its own values: no request bound, its own pool_own.
class Pool {
public:
    explicit Pool(int n) {
        for (int i = 0; i < n; ++i) threads_.emplace_back([this, i] { loop(i); });
    }
    ~Pool() { join(); }
    /// Runs the jobs posted so far, then ends the threads (destroying every job).
    void join() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        for (std::thread& t : threads_) t.join();
        threads_.clear();
    }
    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;

    void post(std::function<void()> job) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            jobs_.push_back(std::move(job));
        }
        wake_.notify_one();
    }
    /// Runs `f()` on a pool thread; the future gets its result.
    template <class F>
    auto submit(F f) {
        auto job = std::make_shared<std::packaged_task<decltype(f())()>>(std::move(f));
        auto result = job->get_future();
        post([job] { (*job)(); });
        return result;
    }
    /// `co_await pool.schedule()`: the coroutine goes on on a pool thread.
    auto schedule() {
        struct Awaiter {
            Pool* pool;
            bool await_ready() const noexcept { return false; }
            void await_suspend(std::coroutine_handle<> h) {
                pool->post([h] { h.resume(); });
            }
            void await_resume() const noexcept {}
        };
        return Awaiter{this};
    }
    /// Times a pool thread found itself not on its own values after a job.
    int dirty() const { return dirty_.load(); }

private:
    void loop(int i) {
        thread_name.value() = "pool-" + std::to_string(i);
        pool_own.value() = "pool's own";
        for (;;) {
            std::function<void()> job;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
                if (jobs_.empty()) return;
                job = std::move(jobs_.front());
                jobs_.pop_front();
            }
            job();
            job = nullptr;
            if (web::has_request_context() || ctxlocal::Storage::current() || pool_own.get() == nullptr ||
                *pool_own.get() != "pool's own") {
                ++dirty_;
            }
        }
    }

    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<std::function<void()>> jobs_;
    bool stop_ = false;
    std::atomic<int> dirty_{0};
    std::vector<std::thread> threads_;
};

// ---------------------------------------------------------------------------------------------------
// Application code: no parameters, everything from the context.

/// The value `name` holds in g, or "-".
std::string g_value(const char* name) {
    if (const auto* s = web::g->get_if<std::string>(name)) return *s;
    if (const auto* n = web::g->get_if<int>(name)) return std::to_string(*n);
    return "-";
}

/// What the calling code sees: "request #42 (ana) g.user=ana g.step=- pool_own=- on main".
std::string seen() {
    const std::string request = web::has_request_context()
                                    ? "#" + std::to_string(web::request->id) + " (" + web::request->user + ")"
                                    : "<none>";
    return "request " + request + " g.user=" + g_value("user") + " g.part=" + g_value("part") +
           " g.step=" + g_value("step") + " pool_own=" + (pool_own.get() ? *pool_own.get() : "-") + " on " +
           this_thread();
}

void print(const std::string& where, const std::string& what) {
    std::printf("%-22s %s\n", where.c_str(), what.c_str());
}

/// Checks that `line` (from seen()) shows request #42, the given g values, no pool value, and ran on a
/// pool thread (or on main).
void check_seen(const std::string& line, const std::string& user, const std::string& part,
                const std::string& step, bool on_pool) {
    const std::string expected_prefix =
        "request #42 (ana) g.user=" + user + " g.part=" + part + " g.step=" + step + " pool_own=- on ";
    check(line.rfind(expected_prefix, 0) == 0, "expected '" + expected_prefix + "...', got '" + line + "'");
    const bool pool = line.find(" on pool-") != std::string::npos;
    check(pool == on_pool, "'" + line + "' ran on the wrong thread");
}

ctxlocal::task<std::string> inner_step(Pool& pool) {
    co_await pool.schedule();  // resumes on a pool thread, still in the request's Storage
    web::g->set("step", std::string("task"));
    co_return seen();
}

ctxlocal::task<std::vector<std::string>> task_chain(Pool& pool) {
    std::vector<std::string> lines{seen()};  // before the first suspension: the caller's thread
    co_await pool.schedule();
    lines.push_back(seen());
    lines.push_back(co_await inner_step(pool));  // awaited: the same Storage, so the same g
    lines.push_back(seen());                     // sees g.step=task, set by inner_step
    co_return lines;
}

}  // namespace

int main() {
    thread_name.value() = "main";
    ShopApp app;
    app.name = "shop";
    std::atomic<int> teardowns{0};
    app.teardown_request([&](std::exception_ptr) { ++teardowns; });
    web::set_incident_handler(
        [](const ctxlocal::Incident& incident) { check(false, "unexpected incident: " + incident.message); });

    Pool pool(3);
    ctxlocal::Storage request = web::make_storage(app, Request{42, "ana"});
    request.run([] {
        web::g->set("user", std::string("ana"));
        const std::string line = seen();
        print("main, in the request:", line);
        check_seen(line, "ana", "-", "-", false);
    });

    // 1. Fan-out: each part in its own copy of the request context (fresh g). The latch holds every part
    //    until all three have started, so they run at the same time, on three pool threads.
    std::vector<std::future<std::string>> parts;
    std::latch all_started(3);
    request.run([&] {
        for (int i = 0; i < 3; ++i) {
            parts.push_back(pool.submit(web::copy_current_request_context([i, &all_started] {
                const bool fresh = web::g->get_if<std::string>("user") == nullptr;
                web::g->set("part", i);
                all_started.arrive_and_wait();
                return std::string(fresh ? "" : "NOT FRESH ") + seen();
            })));
        }
    });
    std::set<std::string> part_threads;
    for (int i = 0; i < 3; ++i) {
        const std::string line = parts[i].get();
        print("fan-out part " + std::to_string(i) + ":", line);
        check_seen(line, "-", std::to_string(i), "-", true);
        part_threads.insert(line.substr(line.rfind(' ') + 1));
    }
    check(part_threads.size() == 3, "the fan-out parts did not run on three threads");
    request.run([] { check(g_value("part") == "-", "a fan-out part wrote into the request's own g"); });

    // 2. Sequential hop: wrap captures the request's Storage; the pool thread runs inside it, same g.
    //    (Called after main has left the Storage: one Storage runs on one thread at a time.)
    {
        auto hop = request.run([] {
            return ctxlocal::wrap([] {
                web::g->set("step", std::string("hop"));
                return seen();
            });
        });
        const std::string line = pool.submit(hop).get();
        print("hop (wrap):", line);
        check_seen(line, "ana", "-", "hop", true);
    }
    check(!web::has_request_context(), "main sees the request outside its Storage");

    // 3. A task chain: sync_wait runs it in the request's Storage (lent to it while main waits); after each
    //    co_await it resumes on a pool thread, inside that Storage.
    std::vector<std::string> lines;
    request.run([&] { lines = ctxlocal::sync_wait(task_chain(pool)); });
    const char* where[] = {
        "task, first resume:", "task, after a hop:", "task, awaited task:", "task, after it:"};
    check(lines.size() == 4, "the task chain returned " + std::to_string(lines.size()) + " lines");
    for (std::size_t i = 0; i < lines.size() && i < 4; ++i) {
        print(where[i], lines[i]);
        check_seen(lines[i], "ana", "-", i < 2 ? "hop" : "task", i > 0);
    }
    request.run([] {
        const std::string line = seen();
        print("main, in the request:", line);
        check_seen(line, "ana", "-", "task", false);
    });

    pool.join();
    check(pool.dirty() == 0,
          std::to_string(pool.dirty()) + " pool jobs left a pool thread off its own values");
    // The last handles go: the request's teardown runs now (each fan-out copy tore down when it ended).
    request = ctxlocal::Storage::null();
    check(teardowns.load() == 4,
          "teardown_request ran " + std::to_string(teardowns.load()) + " times, expected 4");
    std::printf("teardown_request ran %d times (3 fan-out copies, 1 request)\n", teardowns.load());
    if (failures.load() != 0) {
        std::fprintf(stderr, "%d checks failed\n", failures.load());
        return 1;
    }
    std::printf("all checks passed\n");
    return 0;
}
