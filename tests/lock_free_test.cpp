// The read path takes no lock (include/ctxlocal/detail/registry.hpp, "Design": "The read path is
// therefore: load the pointer, compare the id with the capacity, load the slot. No lock").
//
// How: thread A holds the registry lock from outside the library, by blocking inside the callback of
// `Local::for_each` (for_each holds the registry lock while its callback runs; see Registry::visit).
// While A is blocked, thread B runs the reads. A read that took the registry lock would wait for A, so B
// finishing while A still blocks proves the read took no lock. The wait is bounded (kPatience): a
// regression fails the CHECK instead of hanging, and A is then released so that the test still ends.
//
// The control cases run an operation that does take the lock (`count()`, `emplace()` of a first value,
// a first `LocalStack::push`) the same way, and check that it does NOT finish while A holds the lock, then
// does finish once A lets go: this proves that A really holds the lock, so the lock-free cases could fail.
#include <doctest/doctest.h>
#include <ctxlocal/ctxlocal.hpp>

#include "support/sync.hpp"

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

namespace {

using namespace std::chrono_literals;

/// How long to wait for something that must happen (generous: sanitizers and valgrind are slow).
constexpr std::chrono::milliseconds kPatience = 10s;
/// How long a control operation is given to (wrongly) finish while A holds the lock. If the lock were not
/// held it would finish in microseconds; while it is held it cannot finish at all, so this cannot flake.
constexpr std::chrono::milliseconds kControlWait = 300ms;

// ---------------------------------------------------------------------------------------------------------
// Types for the Contexts reads.

struct App : ctxlocal::AppHooks {
    explicit App(std::string n) : name(std::move(n)) {}
    std::string name;
};

struct Req {
    int id = 0;
};

using web = ctxlocal::Contexts<App, Req>;

// ---------------------------------------------------------------------------------------------------------
// The harness.

/// A one-shot signal between two threads, with a bounded wait.
using Event = test_support::Gate;

/// Thread A: holds the registry lock from construction until release() (or destruction), by blocking in a
/// `Local::for_each` callback. for_each visits only threads that have a value, so A first gives its own
/// probe Local a value (that takes the lock briefly, before A holds it for good).
class RegistryLockHolder {
public:
    RegistryLockHolder()
        : thread_([this] {
              ctxlocal::Local<int> probe;
              probe.value() = 1;
              probe.for_each([this](int&) {
                  held_.open();     // the registry lock is held from here...
                  release_.wait();  // ...until the test says so
              });
          }) {}
    RegistryLockHolder(const RegistryLockHolder&) = delete;
    RegistryLockHolder& operator=(const RegistryLockHolder&) = delete;
    ~RegistryLockHolder() {
        release();
        thread_.join();
    }

    /// True once A is inside the for_each callback, i.e. holds the registry lock (bounded wait).
    bool wait_until_held() { return held_.wait_for(kPatience); }
    void release() { release_.open(); }

private:
    Event held_;
    Event release_;
    std::thread thread_;
};

/// Passed to the body that runs on thread B: marks where the set-up ends and the operation under test
/// starts and ends.
class Gate {
public:
    /// B's set-up is done; waits (without timeout: the harness always opens the gate) until the test has
    /// made A take the lock.
    void setup_done_wait_for_lock() {
        setup_done_.open();
        go_.wait();
    }
    /// B's operation under test has finished.
    void operation_done() { operation_done_.open(); }

private:
    template <class Body>
    friend struct Harness;
    Event setup_done_;
    Event go_;
    Event operation_done_;
};

/// What happened to B's operation.
struct Outcome {
    bool setup_done = false;          // B finished its set-up (before A took the lock)
    bool lock_held = false;           // A reported that it holds the registry lock
    bool done_while_held = false;     // B's operation finished while A still held the lock
    bool done_after_release = false;  // B's operation had finished once A let go (or earlier)
};

/// Runs `body(Gate&)` on thread B: B does its set-up (free to take the lock: A does not hold it yet) and
/// calls gate.setup_done_wait_for_lock(); then A takes the registry lock, and B runs its operation and
/// calls gate.operation_done(). Waits up to `wait_while_held` for that while A holds the lock, then
/// releases A and waits up to kPatience more. Every thread is joined on every path (B's remaining work and
/// its thread exit may need the lock, which is why A is released before B is joined).
template <class Body>
struct Harness {
    static Outcome run(Body body, std::chrono::milliseconds wait_while_held) {
        Outcome out;
        Gate gate;
        std::thread b([&] { body(gate); });
        out.setup_done = gate.setup_done_.wait_for(kPatience);
        {
            RegistryLockHolder a;
            out.lock_held = out.setup_done && a.wait_until_held();
            gate.go_.open();  // open the gate on every path, so that B always ends
            if (out.lock_held) out.done_while_held = gate.operation_done_.wait_for(wait_while_held);
            a.release();
        }  // A is joined here: the lock is free
        out.done_after_release = gate.operation_done_.wait_for(kPatience);
        b.join();
        return out;
    }
};

template <class Body>
Outcome run_while_registry_locked(Body body, std::chrono::milliseconds wait_while_held) {
    return Harness<Body>::run(std::move(body), wait_while_held);
}

/// The checks of a case whose operation must take no lock.
void check_lock_free(const Outcome& out) {
    REQUIRE(out.setup_done);
    REQUIRE(out.lock_held);
    CHECK_MESSAGE(out.done_while_held,
                  "the operation did not finish within 10 s while another thread held the registry lock: it "
                  "waited for the lock");
    CHECK(out.done_after_release);
}

/// The checks of a control case whose operation must take the lock.
void check_takes_lock(const Outcome& out) {
    REQUIRE(out.setup_done);
    REQUIRE(out.lock_held);
    CHECK_MESSAGE(!out.done_while_held,
                  "the control operation finished while thread A held the registry lock: A does not really "
                  "hold it, so the lock-free cases prove nothing");
    CHECK(out.done_after_release);
}

// ---------------------------------------------------------------------------------------------------------
// Lock-free reads.

// Guarantee: Local<T>::get(), value() of an existing value and has_value() take no lock, both for a Local
// the thread has a value in and for Locals it has none in (never used at all, or used by other threads
// only). Local::operator* and operator-> are value().
TEST_CASE("LockFree.Local.get_value_has_value" * doctest::timeout(60)) {
    ctxlocal::Local<int> local;
    ctxlocal::Local<std::string> text;
    ctxlocal::Local<int> never_used;    // no slot id at all
    ctxlocal::Local<int> used_by_main;  // has a slot id; B has no value in it
    used_by_main.value() = 5;

    int got = 0, value = 0, via_star = 0;
    std::size_t via_arrow = 0;
    bool has = false, get_null_unused = false, has_unused = true, get_null_other = false, has_other = true;
    const Outcome out = run_while_registry_locked(
        [&](Gate& gate) {
            local.emplace(41);  // set-up: stores a value, takes the lock (A does not hold it yet)
            text.emplace("hello");
            gate.setup_done_wait_for_lock();
            // Under test, while A holds the registry lock:
            got = *local.get();
            value = ++local.value();  // 42: value() of an existing value
            via_star = *local;
            via_arrow = text->size();
            has = local.has_value();
            get_null_unused = never_used.get() == nullptr;
            has_unused = never_used.has_value();
            get_null_other = used_by_main.get() == nullptr;
            has_other = used_by_main.has_value();
            gate.operation_done();
        },
        kPatience);
    check_lock_free(out);
    // The reads read what they should (B is joined: its writes are visible).
    CHECK(got == 41);
    CHECK(value == 42);
    CHECK(via_star == 42);
    CHECK(via_arrow == 5);
    CHECK(has);
    CHECK(get_null_unused);
    CHECK_FALSE(has_unused);
    CHECK(get_null_other);
    CHECK_FALSE(has_other);
}

// Guarantee: LocalStack::top(), size() and empty() take no lock.
TEST_CASE("LockFree.LocalStack.top_size_empty" * doctest::timeout(60)) {
    ctxlocal::LocalStack<int> stack;
    ctxlocal::LocalStack<int> other;  // B never pushes on it
    int top = 0;
    std::size_t size = 0;
    bool empty = true, other_top_null = false, other_empty = false;
    const Outcome out = run_while_registry_locked(
        [&](Gate& gate) {
            stack.push(1);  // set-up: the first push makes B's storage (takes the lock)
            stack.push(2);
            gate.setup_done_wait_for_lock();
            top = *stack.top();
            size = stack.size();
            empty = stack.empty();
            other_top_null = other.top() == nullptr;
            other_empty = other.empty();
            gate.operation_done();
            stack.clear();
        },
        kPatience);
    check_lock_free(out);
    CHECK(top == 2);
    CHECK(size == 2);
    CHECK_FALSE(empty);
    CHECK(other_top_null);
    CHECK(other_empty);
}

// Guarantee: dereferencing a LocalProxy (operator*, operator->, get(), operator bool) takes no lock, for
// each kind of source: a Local, a LocalStack, a Local<T*>.
TEST_CASE("LockFree.LocalProxy.dereference" * doctest::timeout(60)) {
    struct Point {
        int x = 0;
    };
    ctxlocal::Local<Point> local;
    ctxlocal::LocalStack<Point> stack;
    ctxlocal::Local<Point*> pointer;
    const ctxlocal::LocalProxy<Point> from_local{local};
    const ctxlocal::LocalProxy<Point> from_stack{stack};
    const ctxlocal::LocalProxy<Point> from_pointer{pointer};

    Point pointee{3};
    int a = 0, b = 0, c = 0;
    bool bound = false, get_ok = false;
    const Outcome out = run_while_registry_locked(
        [&](Gate& gate) {
            local.emplace(Point{1});
            stack.push(Point{2});
            pointer.emplace(&pointee);
            gate.setup_done_wait_for_lock();
            a = from_local->x;
            b = (*from_stack).x;
            c = from_pointer.current().x;
            bound = static_cast<bool>(from_local) && static_cast<bool>(from_stack);
            get_ok = from_pointer.get() == &pointee;
            gate.operation_done();
            stack.clear();
        },
        kPatience);
    check_lock_free(out);
    CHECK(a == 1);
    CHECK(b == 2);
    CHECK(c == 3);
    CHECK(bound);
    CHECK(get_ok);
}

// Guarantee: with a request context already bound on the thread, reading web::request, web::current_app
// and web::g (and has_request_context(), has_app_context(), the depths) takes no lock.
TEST_CASE("LockFree.Contexts.request_current_app_g" * doctest::timeout(60)) {
    App app{"shop"};
    int id = 0, g_value = 0;
    std::string app_name;
    bool has_request = false, has_app = false;
    std::size_t app_depth = 0, request_depth = 0;
    const Outcome out = run_while_registry_locked(
        [&](Gate& gate) {
            // Set-up: the first push on this thread makes its context state (takes the lock).
            const web::RequestContext ctx{app, Req{7}};
            auto guard = ctx.scope();
            web::g->set("n", 9);
            gate.setup_done_wait_for_lock();
            id = web::request->id;
            app_name = web::current_app->name;  // copies the name: allocates, but takes no registry lock
            g_value = web::g->get<int>("n");
            has_request = web::has_request_context();
            has_app = web::has_app_context();
            app_depth = web::app_context_depth();
            request_depth = web::request_context_depth();
            gate.operation_done();
        },
        kPatience);
    check_lock_free(out);
    CHECK(id == 7);
    CHECK(app_name == "shop");
    CHECK(g_value == 9);
    CHECK(has_request);
    CHECK(has_app);
    CHECK(app_depth == 1);
    CHECK(request_depth == 1);
}

// Guarantee: on a thread that has never stored anything (its table is the shared empty one), the reads
// still take no lock and find nothing bound.
TEST_CASE("LockFree.fresh_thread_reads_nothing_without_lock" * doctest::timeout(60)) {
    ctxlocal::Local<int> local;
    local.value() = 1;  // main's value: the Local has a slot id, B has none
    ctxlocal::LocalStack<int> stack;
    stack.push(1);
    const ctxlocal::LocalProxy<int> proxy{local};
    bool get_null = false, has = true, top_null = false, proxy_bound = true, request = true, app = true;
    bool reads_null = false;
    const Outcome out = run_while_registry_locked(
        [&](Gate& gate) {
            gate.setup_done_wait_for_lock();
            get_null = local.get() == nullptr;
            has = local.has_value();
            top_null = stack.top() == nullptr;
            proxy_bound = static_cast<bool>(proxy);
            request = web::has_request_context();
            app = web::has_app_context();
            reads_null = web::request.get() == nullptr && web::current_app.get() == nullptr &&
                         web::g.get() == nullptr && !web::request;
            gate.operation_done();
        },
        kPatience);
    check_lock_free(out);
    CHECK(get_null);
    CHECK_FALSE(has);
    CHECK(top_null);
    CHECK_FALSE(proxy_bound);
    CHECK_FALSE(request);
    CHECK_FALSE(app);
    CHECK(reads_null);  // request, current_app and g read through their proxies: nothing bound
    stack.clear();
}

// ---------------------------------------------------------------------------------------------------------
// Controls: operations that take the lock wait for A. Without these, the cases above could not fail.

// Control: Local::count() takes the registry lock ("Takes the registry lock"): it does not finish while A
// holds it, and finishes once A lets go.
TEST_CASE("LockFree.Control.count_waits_for_the_lock" * doctest::timeout(60)) {
    ctxlocal::Local<int> local;
    std::size_t count = 0;
    const Outcome out = run_while_registry_locked(
        [&](Gate& gate) {
            local.emplace(1);
            gate.setup_done_wait_for_lock();
            count = local.count();
            gate.operation_done();
        },
        kControlWait);
    check_takes_lock(out);
    CHECK(count == 1);
}

// Control: storing a first value (emplace, value() creating, a first LocalStack::push) takes the registry
// lock: none finishes while A holds it; each finishes once A lets go.
TEST_CASE("LockFree.Control.storing_a_value_waits_for_the_lock" * doctest::timeout(60)) {
    ctxlocal::Local<int> local;
    ctxlocal::LocalStack<int> stack;
    local.value() = 0;  // give the Locals slot ids on main, so that B's operation is only the store
    stack.push(0);
    int stored = 0;

    SUBCASE("emplace of a new value") {
        const Outcome out = run_while_registry_locked(
            [&](Gate& gate) {
                gate.setup_done_wait_for_lock();
                stored = local.emplace(5);
                gate.operation_done();
            },
            kControlWait);
        check_takes_lock(out);
        CHECK(stored == 5);
    }
    SUBCASE("value() creating the thread's value") {
        const Outcome out = run_while_registry_locked(
            [&](Gate& gate) {
                gate.setup_done_wait_for_lock();
                stored = (local.value() = 6);
                gate.operation_done();
            },
            kControlWait);
        check_takes_lock(out);
        CHECK(stored == 6);
    }
    SUBCASE("first LocalStack::push on the thread") {
        const Outcome out = run_while_registry_locked(
            [&](Gate& gate) {
                gate.setup_done_wait_for_lock();
                stack.push(7);
                stored = *stack.top();
                gate.operation_done();
            },
            kControlWait);
        check_takes_lock(out);
        CHECK(stored == 7);
    }
    stack.clear();
}

}  // namespace
