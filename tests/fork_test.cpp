// Tests of ctxlocal::Local<T> and request contexts across fork() (POSIX): the child keeps the forking
// thread's values and contexts, sees none of the other threads', and never deadlocks, whatever the other
// threads were doing.
//
// A child reports through its exit code (0 = every check passed; otherwise the number of the first
// failed check) and ends with _exit. The parent waits a bounded time, so a deadlocked child fails the
// test instead of hanging it.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <ctxlocal/context.hpp>
#include <ctxlocal/local.hpp>

#include "support/sync.hpp"
#include "support/threads.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using ctxlocal::Local;

// Sanitizer limits after fork() of a multithreaded process (they are the sanitizers', not ctxlocal's):
// - ThreadSanitizer kills a child that starts a thread ("starting new threads after multi-threaded fork
//   is not supported", die_after_fork=1), and its runtime stops checking in such a child anyway. Under
//   TSan the child skips the "start a thread in the child" check; everything else still runs.
// - AddressSanitizer before LLVM 18 (llvm/llvm-project#75290) and ThreadSanitizer before LLVM 19
//   (llvm/llvm-project#96600) do not take their allocator's locks around fork(): a child forked while
//   another thread is inside malloc can deadlock in the sanitizer's allocator at its first allocation.
//   Fork.Stress forks while threads allocate, so it is skipped under those sanitizers.
#if defined(__SANITIZE_THREAD__)
#define FORK_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FORK_TEST_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define FORK_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FORK_TEST_ASAN 1
#endif
#endif

namespace {

#if defined(FORK_TEST_TSAN)
constexpr bool child_may_start_threads = false;
#else
constexpr bool child_may_start_threads = true;
#endif

#if (defined(FORK_TEST_ASAN) && !(defined(__clang__) && __clang_major__ >= 18)) || \
    (defined(FORK_TEST_TSAN) && !(defined(__clang__) && __clang_major__ >= 19))
constexpr bool sanitizer_allocator_forks_unsafely = true;
#else
constexpr bool sanitizer_allocator_forks_unsafely = false;
#endif

using test_support::Gate;
using test_support::Latch;

constexpr int child_timeout_seconds = 10;
constexpr int timed_out = -1;

/// Waits for child `pid` at most child_timeout_seconds. Returns its exit code, 128 + the signal that
/// killed it, or timed_out (after killing it with SIGKILL).
int wait_for_child(pid_t pid) {
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(child_timeout_seconds);
    while (std::chrono::steady_clock::now() < deadline) {
        const pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            if (WIFEXITED(status)) return WEXITSTATUS(status);
            if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
            return 255;
        }
        if (r < 0) return 254;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return timed_out;
}

/// Runs `checks()` in a forked child and returns its result as wait_for_child does, the code `checks`
/// returned in place of exit codes. The child reports that code through a pipe and then replaces itself
/// with /bin/true (or, failing that, kills itself with SIGKILL), so that nothing runs at its exit: forked
/// from a busy process, it holds memory that only the parent's other threads (absent in the child) referred
/// to, which a leak checker (valgrind follows forks) would report.
template <class F>
int run_in_child(F checks) {
    int fds[2];
    if (pipe(fds) != 0) return 253;
    const pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return 252;
    }
    if (pid == 0) {
        close(fds[0]);
        const unsigned char code = static_cast<unsigned char>(checks());
        if (write(fds[1], &code, 1) != 1) _exit(251);
        execl("/bin/true", "true", static_cast<char*>(nullptr));
        kill(getpid(), SIGKILL);
        _exit(250);  // not reached
    }
    close(fds[1]);
    int result = wait_for_child(pid);
    unsigned char code = 0;
    const bool reported = read(fds[0], &code, 1) == 1;
    close(fds[0]);
    if ((result == 0 || result == 128 + SIGKILL) && reported) result = code;
    return result;
}

/// Counts destructions, so that a child can tell whether another thread's value was destroyed.
std::atomic<int> g_tracked_dtors{0};
struct Tracked {
    int v = 0;
    Tracked() = default;
    explicit Tracked(int x) : v(x) {}
    Tracked(const Tracked&) = delete;
    Tracked& operator=(const Tracked&) = delete;
    ~Tracked() { ++g_tracked_dtors; }
};

/// The checks every child runs, with `local` holding `expected` for the forking thread and (in the
/// parent) values for other threads too. Returns 0, or the number of the first failed check.
int child_checks(Local<Tracked>& local, int expected) {
    const Tracked* mine = local.get();
    if (mine == nullptr || mine->v != expected) return 10;  // kept the forking thread's value
    if (local.value().v != expected) return 11;
    if (local.count() != 1) return 12;  // and nobody else's
    int visits = 0;
    bool visited_mine = false;
    local.for_each([&](Tracked& t) {
        ++visits;
        visited_mine = &t == mine;
    });
    if (visits != 1 || !visited_mine) return 13;

    Local<int> fresh;  // a new Local works
    if (fresh.get() != nullptr) return 14;
    fresh.value() = 7;
    if (fresh.value() != 7 || fresh.count() != 1) return 15;

    if (child_may_start_threads) {
        int thread_result = 0;
        std::thread t([&] {  // a thread started in the child can use Locals (the registry lock is free)
            if (local.get() != nullptr) {
                thread_result = 16;
                return;
            }
            local.emplace(99);
            fresh.value() = 8;
            if (local.count() != 2 || fresh.count() != 2) thread_result = 17;
        });
        t.join();
        if (thread_result != 0) return thread_result;
    }
    if (local.count() != 1 || fresh.count() != 1) return 18;  // that thread's values went with it
    if (local.get() != mine || fresh.value() != 7) return 19;
    return 0;
}

struct ForkApp : ctxlocal::AppHooks {
    std::string name = "fork-app";
};
struct ForkRequest {
    std::string path;
};
using web = ctxlocal::Contexts<ForkApp, ForkRequest>;

/// Request teardowns run, in this process (each child starts with the parent's count).
std::atomic<long> g_teardowns{0};

/// The context checks every Fork.Stress child runs. The forking thread has "/parent" pushed with
/// g["who"] = "parent"; the other threads of the parent were pushing and popping their own. Returns 0, or
/// the number of the first failed check.
int child_context_checks(ForkApp& app) {
    // Only the forking thread's context survived, intact.
    if (!web::has_request_context() || web::request->path != "/parent") return 40;
    if (web::request_context_depth() != 1 || web::app_context_depth() != 1) return 41;
    if (web::g->get_or<std::string>("who", "") != "parent") return 42;
    // Push and pop a request context on top of it (teardown runs), and a scoped one.
    const long teardowns = g_teardowns.load();
    {
        web::RequestContext child{app, ForkRequest{"/child"}};
        auto guard = child.scope();
        if (web::request->path != "/child" || web::request_context_depth() != 2) return 43;
        if (web::g->get_or<std::string>("who", "") != "parent") return 44;  // same app context, same g
    }
    if (g_teardowns.load() != teardowns + 1) return 45;
    if (web::request->path != "/parent" || web::request_context_depth() != 1) return 46;
    {
        web::AppContext ctx{app};
        auto guard = ctx.scope();  // a fresh app context: a fresh, empty g
        if (web::g->get_or<std::string>("who", "none") != "none" || web::app_context_depth() != 2) return 47;
    }
    if (child_may_start_threads) {
        int thread_result = 0;
        std::thread t([&] {  // a new thread starts with no context and can serve a request
            if (web::has_request_context() || web::has_app_context()) {
                thread_result = 48;
                return;
            }
            const std::string seen =
                web::handle(app, ForkRequest{"/child-thread"}, [] { return web::request->path; });
            if (seen != "/child-thread" || web::has_request_context()) thread_result = 49;
        });
        t.join();
        if (thread_result != 0) return thread_result;
        if (g_teardowns.load() != teardowns + 2) return 50;
    }
    if (web::request->path != "/parent") return 51;
    return 0;
}

/// n threads that each give `local` a value (i + 1) and keep it until release(): constructed once they
/// all hold it.
class ValueHolders {
public:
    ValueHolders(Local<Tracked>& local, int n) : ready_(n) {
        for (int i = 0; i < n; ++i) {
            threads_.emplace_back([this, &local, i] {
                local.emplace(i + 1);
                ready_.count_down();
                release_.wait();
            });
        }
        ready_.wait();
    }
    ~ValueHolders() { release(); }
    ValueHolders(const ValueHolders&) = delete;
    ValueHolders& operator=(const ValueHolders&) = delete;
    /// Lets the threads exit (destroying their values) and joins them.
    void release() {
        release_.open();
        test_support::join_all(threads_);
    }

private:
    Latch ready_;
    Gate release_;
    std::vector<std::thread> threads_;
};

}  // namespace

TEST_CASE("Fork.Child.keeps_only_forking_threads_values" * doctest::timeout(30)) {
    const int n = test_support::thread_count();
    Local<Tracked> local;
    ValueHolders holders(local, n);
    local.emplace(100);
    g_tracked_dtors = 0;

    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int code = child_checks(local, 100);
        // The other threads' values were dropped, not destroyed: their destructors did not run. (The
        // child's own thread in child_checks destroyed exactly one value at its exit.)
        if (code == 0 && g_tracked_dtors != (child_may_start_threads ? 1 : 0)) code = 20;
        _exit(code);
    }
    CHECK(wait_for_child(pid) == 0);
    // The parent is unaffected.
    CHECK(local.count() == static_cast<std::size_t>(n + 1));
    CHECK(g_tracked_dtors == 0);
    holders.release();
    CHECK(local.count() == 1);
}

TEST_CASE("Fork.ForEach.fork_inside_callback" * doctest::timeout(30)) {
    constexpr int n = 2;
    Local<Tracked> local;
    ValueHolders holders(local, n);
    local.emplace(100);

    pid_t pid = -1;
    int visits = 0;
    local.for_each([&](Tracked&) {
        ++visits;
        if (pid == -1) {
            pid = fork();  // the child continues from here, holding the registry lock of for_each
            if (pid == 0) visits = 0;
        }
    });
    if (pid == 0) {
        // Back in the child, after for_each returned: it visited nothing after the fork (the other
        // threads' tables are gone), and it released the lock (child_checks starts a thread that needs it).
        int code = visits != 0 ? 30 : 0;
        if (code == 0) code = child_checks(local, 100);
        _exit(code);
    }
    REQUIRE(pid > 0);
    CHECK(visits == n + 1);  // the parent carried on visiting every value
    CHECK(wait_for_child(pid) == 0);
    CHECK(local.count() == static_cast<std::size_t>(n + 1));
    holders.release();
    std::thread([&] { local.emplace(5); }).join();  // the parent's lock is free too
    CHECK(local.count() == 1);
}

TEST_CASE("Fork.Stress.child_never_deadlocks" * doctest::timeout(60) *
          doctest::skip(sanitizer_allocator_forks_unsafely)) {
    // Up to 100 forks, as many as fit in 5 s past the first 10 (valgrind runs this about 30x slower).
    constexpr int max_forks = 100, min_forks = 10;
    const auto budget_end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    Local<Tracked> shared;
    shared.emplace(-1);
    ForkApp app;  // teardown callbacks are registered before any thread serves
    app.teardown_request([](std::exception_ptr) { ++g_teardowns; });
    // The forking thread's own request context, which every child must find intact.
    web::RequestContext parent{app, ForkRequest{"/parent"}};
    auto parent_guard = parent.scope();
    web::g->set("who", std::string("parent"));

    std::atomic<bool> stop{false};
    std::atomic<long> visits{0}, locals_made{0}, threads_started{0}, requests{0}, scopes{0};
    std::atomic<int> background_failures{0};
    std::vector<std::thread> background;
    // (a) for_each, over and over, on the Local the children check.
    for (int i = 0; i < 2; ++i) {
        background.emplace_back([&, i] {
            shared.emplace(1000 + i);
            while (!stop) {
                shared.for_each([&](Tracked&) { ++visits; });
            }
        });
    }
    // (b) Locals created, given values, and destroyed.
    background.emplace_back([&] {
        while (!stop) {
            auto l = std::make_unique<Local<Tracked>>();
            l->emplace(1);
            shared.count();
            l.reset();
            ++locals_made;
        }
    });
    // (c) threads that set values, serve a request and exit.
    background.emplace_back([&] {
        Local<Tracked> per_thread;
        while (!stop) {
            std::thread([&] {
                shared.emplace(2000);
                per_thread.emplace(1);
                web::handle(app, ForkRequest{"/short-lived"},
                            [] { web::g->set("who", std::string("short")); });
            }).join();
            ++threads_started;
        }
    });
    // (d) requests served with web::handle, using g and a Local inside.
    for (int i = 0; i < 2; ++i) {
        background.emplace_back([&, i] {
            const std::string path = "/handle/" + std::to_string(i);
            while (!stop) {
                web::handle(app, ForkRequest{path}, [&] {
                    web::g->set("who", path);
                    shared.emplace(3000 + i);
                    if (web::request->path != path || web::g->get<std::string>("who") != path)
                        ++background_failures;
                });
                ++requests;
            }
        });
    }
    // (e) request contexts pushed and popped through scope(), nested, with an app context in between.
    background.emplace_back([&] {
        while (!stop) {
            web::RequestContext outer{app, ForkRequest{"/outer"}};
            auto outer_guard = outer.scope();
            {
                web::AppContext ctx{app};
                auto app_guard = ctx.scope();
                web::RequestContext inner{app, ForkRequest{"/inner"}};
                auto inner_guard = inner.scope();
                if (web::request->path != "/inner" || web::request_context_depth() != 2)
                    ++background_failures;
            }
            if (web::request->path != "/outer" || web::request_context_depth() != 1) ++background_failures;
            ++scopes;
        }
    });

    std::vector<int> failures;
    int forks = 0;
    for (; forks < max_forks && (forks < min_forks || std::chrono::steady_clock::now() < budget_end);
         ++forks) {
        const int code = run_in_child([&] {
            const int code = child_checks(shared, -1);
            return code != 0 ? code : child_context_checks(app);
        });
        if (code != 0) failures.push_back(code);
    }
    // Every background kind must have run at least once, whatever the schedule, before they stop.
    const bool all_ran = test_support::wait_until(
        [&] { return visits > 0 && locals_made > 0 && threads_started > 0 && requests > 0 && scopes > 0; },
        std::chrono::seconds(30));
    stop = true;
    test_support::join_all(background);
    std::string codes;
    for (int code : failures) codes += std::to_string(code) + " ";
    INFO("codes of failed children (-1: deadlocked, killed after "
         << child_timeout_seconds << " s; 128+N: killed by signal N): " << codes);
    INFO("forks: " << forks);
    CHECK(failures.empty());
    CHECK(background_failures == 0);
    CHECK(all_ran);
    CHECK(visits > 0);
    CHECK(locals_made > 0);
    CHECK(threads_started > 0);
    CHECK(requests > 0);
    CHECK(scopes > 0);
    CHECK(shared.count() == 1);
    // The parent's own context is untouched.
    CHECK(web::request->path == "/parent");
    CHECK(web::request_context_depth() == 1);
    CHECK(web::g->get<std::string>("who") == "parent");
}

namespace {

/// Values whose destructor, the first time one runs (at its thread's exit), forks. The child carries on
/// inside that destructor, in the middle of the thread's exit teardown, and checks that ctxlocal is
/// consistent there: it destroys the Local of the value being destroyed and the Local of the value queued
/// behind it, then makes and uses a new Local. It reports through `report` and ends with exec.
struct ForksInDestructor {
    static inline std::atomic<bool> forked{false};
    static inline Local<ForksInDestructor>* locals[2] = {nullptr, nullptr};
    static inline pid_t child = -1;
    static inline int report[2] = {-1, -1};
    int index = -1;
    ~ForksInDestructor() {
        if (index < 0 || forked.exchange(true)) return;
        const pid_t pid = fork();
        if (pid != 0) {
            child = pid;
            return;
        }
        close(report[0]);
        delete locals[1 - index];  // its value is queued behind this one: it is taken over here
        delete locals[index];      // its value is this one, being destroyed on this thread
        unsigned char code = 0;
        Local<int> fresh;
        if (fresh.get() != nullptr) code = 60;
        if (code == 0 && (fresh.value() = 5, fresh.count() != 1)) code = 61;
        if (write(report[1], &code, 1) != 1) _exit(251);
        execl("/bin/true", "true", static_cast<char*>(nullptr));
        _exit(250);
    }
};

}  // namespace

TEST_CASE("Fork.ThreadExit.fork_from_a_value_destructor_leaves_the_child_consistent" * doctest::timeout(30)) {
    REQUIRE(pipe(ForksInDestructor::report) == 0);
    ForksInDestructor::locals[0] = new Local<ForksInDestructor>();
    ForksInDestructor::locals[1] = new Local<ForksInDestructor>();
    std::thread([] {
        ForksInDestructor::locals[0]->value().index = 0;
        ForksInDestructor::locals[1]->value().index = 1;
    }).join();  // its exit forks from inside the first value destructor
    close(ForksInDestructor::report[1]);
    REQUIRE(ForksInDestructor::child > 0);
    const int status = wait_for_child(ForksInDestructor::child);
    unsigned char code = 255;
    const bool reported = read(ForksInDestructor::report[0], &code, 1) == 1;
    close(ForksInDestructor::report[0]);
    CHECK(status == 0);  // -1: the child hung (a Local's destructor waited forever)
    CHECK(reported);
    CHECK(static_cast<int>(code) == 0);
    // The parent finished the exit normally and both Locals are still its own to destroy.
    CHECK(ForksInDestructor::locals[0]->count() == 0);
    delete ForksInDestructor::locals[0];
    delete ForksInDestructor::locals[1];
}
