// Shutdown (d): thread_local objects whose destructors use Locals and request contexts as their thread ends.
//
// glibc runs a thread's C++ thread_local destructors before its pthread key destructors, and ctxlocal tears
// a thread's values down in a key destructor: so a thread_local destructor still sees the thread's values,
// may make new ones (destroyed right after, by the teardown), and may push and pop request contexts.
// Checked on worker threads (at thread exit) and on the main thread (at process exit, where thread_local
// destructors run first). A pthread key created after ctxlocal's runs after the teardown (glibc runs key
// destructors in key order): a Local used from its destructor has no value and refuses to make one, with
// unbound_error (checked, not a crash).
#include <pthread.h>
#include <ctxlocal/ctxlocal.hpp>

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "check.hpp"

using shutdown_test::check;

namespace {

struct App : ctxlocal::AppHooks {
    std::string name = "tls-app";
};
struct Request {
    std::string path;
};
using web = ctxlocal::Contexts<App, Request>;

constexpr int threads = 4;
// 3 in main after the workers, 1 in the late key check, 4 at exit.
shutdown_test::Summary summary{"shutdown_thread_local_test", 8};

std::atomic<int> destroyed{0};
struct Tracked {
    int v = 0;
    Tracked() = default;
    explicit Tracked(int x) : v(x) {}
    Tracked(const Tracked&) = delete;
    Tracked& operator=(const Tracked&) = delete;
    ~Tracked() { destroyed.fetch_add(1); }
};

ctxlocal::Local<Tracked> value;
ctxlocal::Local<Tracked> made_late;  // first made in a thread_local destructor
App* const app = new App;            // never destroyed

// What the worker threads' thread_local destructors found (a bit per failed check).
std::atomic<int> tls_failures{0};
std::atomic<int> tls_ran{0};

/// Uses the Locals and a request context from its destructor; `expected` is the thread's value.
struct UsesLocals {
    int expected;
    explicit UsesLocals(int e) : expected(e) {}
    UsesLocals(const UsesLocals&) = delete;
    UsesLocals& operator=(const UsesLocals&) = delete;
    ~UsesLocals() {
        int failures = 0;
        if (value.get() == nullptr || value.get()->v != expected) failures |= 1;  // still there
        value.value().v += 1000;
        made_late.emplace(expected);  // a new value, destroyed by the teardown that follows
        if (made_late.count() < 1) failures |= 2;
        const std::string path = "/tls/" + std::to_string(expected);
        const std::string seen = web::handle(*app, Request{path}, [] { return web::request->path; });
        if (seen != path || web::has_request_context()) failures |= 4;
        if (failures != 0) tls_failures.fetch_or(failures);
        tls_ran.fetch_add(1);
    }
};

// A pthread key created after ctxlocal's registry: its destructor runs after the thread's teardown.
pthread_key_t late_key;
std::atomic<int> late_key_ok{0};
std::atomic<int> late_key_ran{0};
void late_key_destructor(void*) {
    bool ok = value.get() == nullptr;  // the teardown destroyed the thread's value
    try {
        value.value();
        ok = false;  // must not make a value on a thread that is past its teardown
    } catch (const ctxlocal::unbound_error&) {
    }
    if (ok) late_key_ok.fetch_add(1);
    late_key_ran.fetch_add(1);
}

void worker(int i) {
    static thread_local UsesLocals before_first_use{i};  // constructed before the thread's first Local use
    (void)&before_first_use;
    value.emplace(i);
    thread_local UsesLocals after_first_use{i};  // constructed after it (destroyed first)
    (void)&after_first_use;
    // after_first_use's destructor adds 1000 and before_first_use's sees that value: make it agree.
    after_first_use.expected = i;
    before_first_use.expected = i + 1000;
    pthread_setspecific(late_key, &late_key);
}

// The main thread's: destroyed first thing in exit (before static destructors and atexit handlers).
struct MainThreadLocal {
    ~MainThreadLocal() {
        check(value.get() != nullptr && value.get()->v == -1,
              "main thread_local destructor at exit: the main thread's value intact");
        check(web::handle(*app, Request{"/main-exit"}, [] { return web::request->path; }) == "/main-exit",
              "main thread_local destructor at exit: a request context can be pushed and popped");
        made_late.emplace(-2);
        check(made_late.count() == 1, "main thread_local destructor at exit: made a new value");
    }
};

// Constructed after the Locals: destroyed before them, after the main thread's thread_local destructors.
struct AtExit {
    ~AtExit() {
        check(value.get() != nullptr && value.get()->v == -1 && made_late.get()->v == -2,
              "static destructor after the main thread_local destructor: values still there");
    }
} at_exit;

}  // namespace

int main() {
    value.emplace(-1);  // creates the registry (and its pthread key) before late_key
    pthread_key_create(&late_key, &late_key_destructor);
    std::vector<std::thread> pool;
    for (int i = 0; i < threads; ++i) pool.emplace_back(worker, i + 1);
    for (std::thread& t : pool) t.join();
    std::printf("       (thread_local destructors ran: %d, failures mask: %d)\n", tls_ran.load(),
                tls_failures.load());
    check(tls_ran == 2 * threads && tls_failures == 0,
          "worker thread_local destructors: saw the thread's value, made new ones, pushed and popped a "
          "request");
    // Per thread: its value, and the value made in a thread_local destructor (emplace in the second
    // destructor replaced the first's, destroying it: 1 more).
    check(destroyed == 3 * threads, "thread exit destroyed every value, those made by destructors too");
    check(value.count() == 1 && made_late.count() == 0, "only the main thread's value is left");
    check(late_key_ran == threads && late_key_ok == threads,
          "a later pthread key's destructor: no value, and value() refuses with unbound_error");
    static thread_local MainThreadLocal main_thread_local;
    (void)&main_thread_local;
    return 0;
}
