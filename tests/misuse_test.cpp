// Misuse (README "Misuse and what it does"): for every way a user can misuse ctxlocal whose test elsewhere
// does not check all three, one test case that checks the exact exception type (not merely a base it can be
// caught as), the exact message, and the state afterwards: stack depths, bindings, values and counts.
// Misuses whose existing tests already check all three are not repeated here; the README table links them.
#include <doctest/doctest.h>
#include <pthread.h>
// CTXLOCAL_TEST_NO_FORK (set by tests/CMakeLists.txt on Windows, which has no fork) leaves out the cases
// that check std::terminate in a child process.
#if !defined(CTXLOCAL_TEST_NO_FORK)
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#endif
#include <ctxlocal/ctxlocal.hpp>

#include "support/incidents.hpp"
#include "support/sync.hpp"

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <typeinfo>
#include <utility>
#include <vector>

// Types live in a named namespace so that the messages that name them are predictable.
namespace misuse_test {

// ---------------------------------------------------------------------------------------------------------
// What a call threw: its dynamic type and its message.

struct Thrown {
    std::string type;  // the demangled dynamic type, or a marker
    std::string what;
};

/// Runs `f` and reports what it threw ("<nothing>" when it returned).
template <class F>
Thrown thrown_by(F&& f) {
    try {
        f();
    } catch (const std::exception& e) {
        return Thrown{ctxlocal::detail::demangle(typeid(e).name()), e.what()};
    } catch (int value) {
        return Thrown{"int", std::to_string(value)};
    } catch (...) {
        return Thrown{"<unknown>", ""};
    }
    return Thrown{"<nothing>", ""};
}

template <class E>
std::string name_of() {
    return ctxlocal::detail::type_name<E>();
}

/// The dynamic type and message of the exception an exception_ptr holds.
Thrown thrown_in(const std::exception_ptr& error) {
    return thrown_by([&] { std::rethrow_exception(error); });
}

/// CHECKs that `t` is exactly an E with message `message`.
#define CHECK_THROWN(t, E, message)                  \
    do {                                             \
        const ::misuse_test::Thrown thrown_ = (t);   \
        CHECK(thrown_.type == name_of<E>());         \
        CHECK(thrown_.what == std::string(message)); \
    } while (false)

// ---------------------------------------------------------------------------------------------------------
// Value types.

std::atomic<int> live{0};

/// Counts live instances.
struct Counted {
    int v;
    explicit Counted(int x = 0) : v(x) { ++live; }
    Counted(const Counted& o) : v(o.v) { ++live; }
    Counted& operator=(const Counted&) = default;
    ~Counted() { --live; }
};

struct NoDefault {
    int x;
    explicit NoDefault(int v) : x(v) {}
};

struct Refusal : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// Its constructor throws Refusal when asked to.
struct Picky {
    int v;
    Picky(int x, bool fail) : v(x) {
        if (fail) throw Refusal("Picky(" + std::to_string(x) + ") refused");
        ++live;
    }
    Picky(const Picky& o) : v(o.v) { ++live; }
    ~Picky() { --live; }
};

/// Its copy and move constructors throw Refusal while `armed`.
struct Touchy {
    static inline bool armed = false;
    int v;
    explicit Touchy(int x) : v(x) {}
    Touchy(const Touchy& o) : v(o.v) {
        if (armed) throw Refusal("Touchy copy refused");
    }
    Touchy(Touchy&& o) : v(o.v) {
        if (armed) throw Refusal("Touchy move refused");
    }
    Touchy& operator=(const Touchy&) = default;
};

struct Apple {
    int seeds = 0;
};
struct Orange {
    int segments = 0;
};

// ---------------------------------------------------------------------------------------------------------
// Contexts.

struct App : ctxlocal::AppHooks {
    explicit App(std::string n) : name(std::move(n)) {}
    std::string name;
};
struct Req {
    int id = 0;
};
using web = ctxlocal::Contexts<App, Req>;

/// What the calling thread has bound: compared before and after a misuse.
struct Snapshot {
    std::size_t apps;
    std::size_t requests;
    const App* app;
    const Req* request;
    const ctxlocal::Namespace* g;

    static Snapshot take() {
        return Snapshot{web::app_context_depth(), web::request_context_depth(), web::current_app.get(),
                        web::request.get(), web::g.get()};
    }
    bool operator==(const Snapshot& o) const {
        return apps == o.apps && requests == o.requests && app == o.app && request == o.request && g == o.g;
    }
};

bool stacks_empty() {
    return web::app_context_depth() == 0 && web::request_context_depth() == 0 && !web::has_app_context() &&
           !web::has_request_context() && web::g.get() == nullptr;
}

/// "id=7" for the request bound now, "id=none" when none.
std::string request_id_now() {
    const Req* r = web::request.get();
    return r == nullptr ? "id=none" : "id=" + std::to_string(r->id);
}

using test_support::Seen;
using IncidentCapture = test_support::IncidentCapture<web>;

std::string leaked_message(const std::string& name, const std::string& why) {
    return "ctxlocal: " + name + " was " + why + "; it was popped and its teardown ran";
}

using test_support::Gate;

}  // namespace misuse_test

using namespace misuse_test;

// =========================================================================================================
// Local

TEST_CASE("Misuse.Local.value_without_initialiser_of_non_default_constructible_type") {
    ctxlocal::Local<NoDefault> local;
    const std::string message =
        "ctxlocal::Local<misuse_test::NoDefault>: this thread has no value, and the Local has no initialiser "
        "and the type is not default-constructible; call emplace(...) first or give the Local an initialiser";
    int other_thread_value = 0;
    Gate other_has_value, may_exit;
    std::thread other([&] {
        local.emplace(7);
        other_has_value.open();
        may_exit.wait();
        other_thread_value = local.get() == nullptr ? -1 : local.get()->x;
    });
    other_has_value.wait();

    CHECK_THROWN(thrown_by([&] { (void)local.value(); }), ctxlocal::unbound_error, message);
    CHECK_THROWN(thrown_by([&] { (void)*local; }), ctxlocal::unbound_error, message);
    CHECK_THROWN(thrown_by([&] { (void)local->x; }), ctxlocal::unbound_error, message);
    // Nothing was created here, and the other thread's value is untouched.
    CHECK(local.get() == nullptr);
    CHECK(local.count() == 1);
    may_exit.open();
    other.join();
    CHECK(other_thread_value == 7);
    CHECK(local.count() == 0);
    // emplace is the way out.
    CHECK(local.emplace(3).x == 3);
    CHECK(local.value().x == 3);
}

TEST_CASE("Misuse.Local.use_after_destruction") {
    using L = ctxlocal::Local<Counted>;
    const std::string message =
        "ctxlocal::Local<misuse_test::Counted>: used after it was destroyed (check the destruction order of "
        "globals)";
    live = 0;
    alignas(L) unsigned char storage[sizeof(L)];
    L* local = new (storage) L();
    local->emplace(1);
    Gate has_value, destroyed;
    Thrown other_thread_value, other_thread_emplace;
    bool other_thread_get_null = false;
    std::thread other([&] {
        local->emplace(2);
        has_value.open();
        destroyed.wait();
        other_thread_get_null = local->get() == nullptr;
        other_thread_value = thrown_by([&] { (void)local->value(); });
        other_thread_emplace = thrown_by([&] { (void)local->emplace(3); });
    });
    has_value.wait();
    CHECK(live.load() == 2);

    local->~L();  // destroys every thread's value; the storage stays, so later uses reach the Local's guard
    CHECK(live.load() == 0);

    CHECK_THROWN(thrown_by([&] { (void)local->value(); }), ctxlocal::unbound_error, message);
    CHECK_THROWN(thrown_by([&] { (void)local->emplace(4); }), ctxlocal::unbound_error, message);
    CHECK(local->get() == nullptr);
    CHECK_FALSE(local->has_value());
    CHECK(local->count() == 0);
    local->reset();  // a no-op
    int visits = 0;
    local->for_each([&](Counted&) { ++visits; });
    CHECK(visits == 0);
    CHECK(live.load() == 0);  // nothing stored, nothing leaked

    destroyed.open();
    other.join();
    CHECK(other_thread_get_null);
    CHECK_THROWN(other_thread_value, ctxlocal::unbound_error, message);
    CHECK_THROWN(other_thread_emplace, ctxlocal::unbound_error, message);
    CHECK(live.load() == 0);

    // A new Local (possibly in the freed slot) starts empty on every thread.
    L fresh;
    CHECK(fresh.get() == nullptr);
    CHECK(fresh.count() == 0);
}

TEST_CASE("Misuse.Local.used_after_destroyed_with_initialiser") {
    // A Local whose initialiser has state (it allocates it): after destruction the initialiser is gone, so
    // value() must refuse before calling it.
    using L = ctxlocal::Local<Counted>;
    const std::string message =
        "ctxlocal::Local<misuse_test::Counted>: used after it was destroyed (check the destruction order of "
        "globals)";
    live = 0;
    auto calls = std::make_shared<int>(0);
    alignas(L) unsigned char storage[sizeof(L)];
    L* local = new (storage) L([calls] {
        ++*calls;
        return Counted(*calls);
    });
    CHECK(local->value().v == 1);
    CHECK(*calls == 1);
    CHECK(calls.use_count() == 2);  // the initialiser holds a copy
    local->~L();
    CHECK(calls.use_count() == 1);  // the initialiser was freed with the Local
    CHECK(live.load() == 0);
    CHECK_THROWN(thrown_by([&] { (void)local->value(); }), ctxlocal::unbound_error, message);
    CHECK_THROWN(thrown_by([&] { (void)local->emplace(4); }), ctxlocal::unbound_error, message);
    CHECK(*calls == 1);  // never called again
    CHECK(local->get() == nullptr);
    CHECK(live.load() == 0);
    // The same from another thread, which never had a value.
    Thrown other;
    std::thread([&] { other = thrown_by([&] { (void)local->value(); }); }).join();
    CHECK_THROWN(other, ctxlocal::unbound_error, message);
    CHECK(*calls == 1);
}

namespace misuse_test {
ctxlocal::Local<Counted>* self_reading = nullptr;
ctxlocal::Local<Orange>* middle = nullptr;
}  // namespace misuse_test

TEST_CASE("Misuse.Local.initialiser_reads_its_own_value") {
    const std::string message =
        "ctxlocal::Local<misuse_test::Counted>: its initialiser asked for the value it is making (value() "
        "called from inside the initialiser on the same thread)";
    live = 0;
    int calls = 0;
    // Directly: the initialiser calls value() on its own Local.
    ctxlocal::Local<Counted> local([&] {
        ++calls;
        return Counted(self_reading->value().v + 1);
    });
    self_reading = &local;
    CHECK_THROWN(thrown_by([&] { (void)local.value(); }), ctxlocal::unbound_error, message);
    CHECK(calls == 1);
    CHECK(local.get() == nullptr);  // nothing stored
    CHECK(live.load() == 0);
    // The refusal is for the duration of the initialiser only: emplace works, and value() then reads it.
    CHECK(local.emplace(5).v == 5);
    CHECK(local.value().v == 5);
    CHECK(calls == 1);
    local.reset();

    // Through another Local: local's initialiser reads `orange`, whose initialiser reads local again.
    ctxlocal::Local<Orange> orange([] { return Orange{self_reading->value().v}; });
    middle = &orange;
    ctxlocal::Local<Counted> outer([&] {
        ++calls;
        return Counted(middle->value().segments);
    });
    self_reading = &outer;
    CHECK_THROWN(thrown_by([&] { (void)outer.value(); }), ctxlocal::unbound_error, message);
    CHECK(outer.get() == nullptr);
    CHECK(orange.get() == nullptr);
    CHECK(live.load() == 0);

    // Another thread initialising the same Local at the same time is not recursion: it gets its own value.
    ctxlocal::Local<Counted> shared([&] { return Counted(9); });
    int other_value = 0;
    ctxlocal::Local<Orange> reads_shared([&] {
        std::thread([&] { other_value = shared.value().v; }).join();
        return Orange{shared.value().v};
    });
    CHECK(reads_shared.value().segments == 9);
    CHECK(other_value == 9);
    shared.reset();
    self_reading = nullptr;
    middle = nullptr;
}

namespace misuse_test {

/// A pthread key destructor that runs after ctxlocal's thread-exit teardown (re-arming itself until the
/// teardown has happened) and records what using a Local there does.
struct LateUse {
    pthread_key_t key{};
    ctxlocal::Local<Counted>* local = nullptr;
    int rearmed = 0;
    bool get_was_null = false;
    Thrown value;
    Thrown emplace;
};

void late_key_destructor(void* arg) {
    auto* s = static_cast<LateUse*>(arg);
    if (s->local->get() != nullptr && s->rearmed < 3) {
        ++s->rearmed;
        pthread_setspecific(s->key, s);
        return;
    }
    s->get_was_null = s->local->get() == nullptr;
    s->value = thrown_by([&] { (void)s->local->value(); });
    s->emplace = thrown_by([&] { (void)s->local->emplace(5); });
}

}  // namespace misuse_test

TEST_CASE("Misuse.Local.value_on_a_thread_past_its_exit_teardown") {
    const std::string message =
        "ctxlocal: cannot create a value on this thread: its values were already destroyed at thread exit (a "
        "later thread-exit handler tried to use a Local)";
    live = 0;
    ctxlocal::Local<Counted> local;
    local.emplace(1);  // the main thread's value must survive
    LateUse late;
    late.local = &local;
    REQUIRE(pthread_key_create(&late.key, &late_key_destructor) == 0);
    std::thread t([&] {
        local.emplace(2);
        pthread_setspecific(late.key, &late);
    });
    t.join();
    pthread_key_delete(late.key);
    CHECK(late.get_was_null);
    CHECK_THROWN(late.value, ctxlocal::unbound_error, message);
    CHECK_THROWN(late.emplace, ctxlocal::unbound_error, message);
    CHECK(live.load() == 1);  // the exited thread's value was destroyed, nothing new was made
    CHECK(local.count() == 1);
    REQUIRE(local.get() != nullptr);
    CHECK(local.get()->v == 1);
}

namespace misuse_test {

struct Immortal;
ctxlocal::Local<Immortal>* immortal_home = nullptr;
std::mutex immortal_mutex;
std::vector<Thrown> immortal_refusals;

/// Re-creates itself in its Local from its destructor, every time.
struct Immortal {
    Counted counted;
    ~Immortal() {
        if (immortal_home == nullptr) return;
        const Thrown t = thrown_by([] { (void)immortal_home->value(); });
        if (t.type != "<nothing>") {
            std::lock_guard<std::mutex> lock(immortal_mutex);
            immortal_refusals.push_back(t);
        }
    }
};

}  // namespace misuse_test

TEST_CASE("Misuse.Local.values_recreated_forever_at_thread_exit") {
    const std::string message =
        "ctxlocal: cannot create a value on this thread: it is exiting and its values' destructors kept "
        "creating new values for more than CTXLOCAL_MAX_EXIT_ROUNDS rounds";
    live = 0;
    immortal_refusals.clear();
    ctxlocal::Local<Immortal> home;
    immortal_home = &home;
    std::thread([&] { (void)home.value(); }).join();  // join() returns: the exit terminated
    immortal_home = nullptr;
    REQUIRE(immortal_refusals.size() == 1);  // refused once, in the last round; then the exit ended
    CHECK_THROWN(immortal_refusals[0], ctxlocal::unbound_error, message);
    CHECK(live.load() == 0);  // every value made during the exit was destroyed
    CHECK(home.count() == 0);
}

TEST_CASE("Misuse.Local.emplace_with_throwing_constructor") {
    live = 0;
    {
        ctxlocal::Local<Picky> local;
        CHECK_THROWN(thrown_by([&] { (void)local.emplace(1, true); }), Refusal, "Picky(1) refused");
        CHECK(local.get() == nullptr);  // none was made when there was none
        CHECK(local.count() == 0);
        Picky& old = local.emplace(2, false);
        CHECK_THROWN(thrown_by([&] { (void)local.emplace(3, true); }), Refusal, "Picky(3) refused");
        CHECK(local.get() == &old);  // the old value is kept: same object, same contents
        CHECK(old.v == 2);
        CHECK(local.count() == 1);
        CHECK(live.load() == 1);
    }
    CHECK(live.load() == 0);
}

// =========================================================================================================
// LocalStack

#if !defined(CTXLOCAL_TEST_NO_FORK)
namespace misuse_test {
/// Its destructor throws (noexcept(false)): a misuse, since values are destroyed on noexcept paths.
struct ThrowingDestructor {
    ~ThrowingDestructor() noexcept(false) { throw Refusal("destructor failed"); }
};

/// In a child process: runs `f`, and reports how the child ended (42: std::terminate was called).
template <class F>
int exit_code_of_child(F f) {
    std::cout.flush();  // or the child's exit could print what this process has buffered
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
        // Ends the child with 42 through exec, so that a leak checker running the test (valgrind) does not
        // report the value whose destructor never finished.
        std::set_terminate([] {
            execl("/bin/sh", "sh", "-c", "exit 42", static_cast<char*>(nullptr));
            _exit(43);
        });
        try {
            f();
        } catch (...) {
            _exit(1);  // the exception escaped: it must not
        }
        _exit(2);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}
}  // namespace misuse_test

TEST_CASE("Misuse.Local.value_destructor_that_throws_terminates") {
    // Destroying a value happens on noexcept paths (reset, replacement, thread exit, ~Local): a destructor
    // that throws ends the process through std::terminate. Each path checked in a child process.
    CHECK(exit_code_of_child([] {
              ctxlocal::Local<ThrowingDestructor> local;
              (void)local.value();
              local.reset();
          }) == 42);
    CHECK(exit_code_of_child([] {
              ctxlocal::Local<ThrowingDestructor> local;
              (void)local.value();
              local.emplace();  // replaces, destroying the old value
          }) == 42);
    CHECK(exit_code_of_child([] {
              ctxlocal::Local<ThrowingDestructor> local;
              std::thread([&] { (void)local.value(); }).join();
          }) == 42);
    CHECK(exit_code_of_child([] {
              auto* local = new ctxlocal::Local<ThrowingDestructor>();
              (void)local->value();
              delete local;
          }) == 42);
}
#endif  // !CTXLOCAL_TEST_NO_FORK

TEST_CASE("Misuse.LocalStack.pop_on_empty_stack") {
    ctxlocal::LocalStack<int> stack;
    Gate pushed, may_exit;
    std::size_t other_size = 0;
    std::thread other([&] {
        stack.push(10);
        stack.push(11);
        pushed.open();
        may_exit.wait();
        other_size = stack.size();
    });
    pushed.wait();

    // Never used on this thread: nothing thrown, nothing returned, no storage made.
    std::optional<int> popped = 42;
    CHECK(thrown_by([&] { popped = stack.pop(); }).type == "<nothing>");
    CHECK_FALSE(popped.has_value());
    CHECK(stack.top() == nullptr);
    CHECK(stack.size() == 0);
    CHECK(stack.local().get() == nullptr);

    // Emptied by pops: the same, and the storage and its capacity are kept.
    stack.push(1);
    stack.pop();
    const std::vector<int>* storage = stack.local().get();
    REQUIRE(storage != nullptr);
    const std::size_t capacity = storage->capacity();
    popped = 42;
    CHECK(thrown_by([&] { popped = stack.pop(); }).type == "<nothing>");
    CHECK_FALSE(popped.has_value());
    CHECK(stack.local().get() == storage);
    CHECK(storage->capacity() == capacity);
    CHECK(stack.size() == 0);

    // The other thread's stack is untouched.
    may_exit.open();
    other.join();
    CHECK(other_size == 2);
    stack.clear();
}

TEST_CASE("Misuse.LocalStack.push_whose_move_throws") {
    ctxlocal::LocalStack<Touchy> stack;
    stack.push(Touchy(1));
    stack.push(Touchy(2));
    const Touchy* top = stack.top();
    Touchy::armed = true;
    const Thrown t = thrown_by([&] { stack.push(Touchy(3)); });
    Touchy::armed = false;
    CHECK_THROWN(t, Refusal, "Touchy move refused");
    REQUIRE(stack.size() == 2);
    CHECK(stack.top()->v == 2);
    (void)top;  // may have moved if the vector reallocated; its value must not have changed
    CHECK(stack.pop()->v == 2);
    CHECK(stack.pop()->v == 1);
    CHECK(stack.empty());
    stack.clear();
}

TEST_CASE("Misuse.LocalStack.pop_whose_move_throws") {
    ctxlocal::LocalStack<Touchy> stack;
    stack.push(Touchy(1));
    stack.push(Touchy(2));
    Touchy::armed = true;
    const Thrown t = thrown_by([&] { (void)stack.pop(); });
    Touchy::armed = false;
    CHECK_THROWN(t, Refusal, "Touchy move refused");
    // The exception propagates and the stack is unchanged: the top element is still there.
    REQUIRE(stack.size() == 2);
    CHECK(stack.top()->v == 2);
    CHECK(stack.pop()->v == 2);
    CHECK(stack.pop()->v == 1);
    CHECK(stack.empty());
    stack.clear();
}

TEST_CASE("Misuse.LocalStack.emplace_with_throwing_constructor") {
    live = 0;
    {
        ctxlocal::LocalStack<Picky> stack;
        CHECK_THROWN(thrown_by([&] { (void)stack.emplace(0, true); }), Refusal, "Picky(0) refused");
        CHECK(stack.empty());
        Picky& bottom = stack.emplace(1, false);
        CHECK_THROWN(thrown_by([&] { (void)stack.emplace(2, true); }), Refusal, "Picky(2) refused");
        CHECK(stack.size() == 1);
        CHECK(stack.top() == &bottom);
        CHECK(bottom.v == 1);
        CHECK(live.load() == 1);
    }
    CHECK(live.load() == 0);
}

// =========================================================================================================
// LocalProxy

namespace misuse_test {
int* no_int() { return nullptr; }
}  // namespace misuse_test

TEST_CASE("Misuse.Proxy.reading_an_unbound_proxy") {
    ctxlocal::Local<int> local;
    ctxlocal::LocalStack<int> stack;
    ctxlocal::Local<int*> pointer;
    const ctxlocal::LocalProxy<int> from_local{local};
    const ctxlocal::LocalProxy<int> from_stack{stack, "no int is pushed"};
    const ctxlocal::LocalProxy<int> from_pointer{pointer};
    const ctxlocal::LocalProxy<int> from_getter{&no_int, "no int here"};
    pointer.value() = nullptr;  // bound to a null pointer: still unbound

    const std::string fallback = "object is not bound";
    CHECK_THROWN(thrown_by([&] { (void)from_local.current(); }), ctxlocal::unbound_error, fallback);
    CHECK_THROWN(thrown_by([&] { (void)*from_local; }), ctxlocal::unbound_error, fallback);
    CHECK_THROWN(thrown_by([&] { (void)from_local.operator->(); }), ctxlocal::unbound_error, fallback);
    CHECK_THROWN(thrown_by([&] { (void)from_stack.current(); }), ctxlocal::unbound_error, "no int is pushed");
    CHECK_THROWN(thrown_by([&] { (void)*from_pointer; }), ctxlocal::unbound_error, fallback);
    CHECK_THROWN(thrown_by([&] { (void)*from_getter; }), ctxlocal::unbound_error, "no int here");

    // Reading created nothing.
    CHECK_FALSE(local.has_value());
    CHECK(local.count() == 0);
    CHECK(stack.local().get() == nullptr);
    CHECK(stack.size() == 0);
    REQUIRE(pointer.get() != nullptr);
    CHECK(*pointer.get() == nullptr);
    CHECK(pointer.count() == 1);
    CHECK_FALSE(from_local);
    CHECK_FALSE(from_stack);
    pointer.reset();
}

#if !defined(CTXLOCAL_TEST_NO_FORK)
TEST_CASE("Misuse.Proxy.getter_that_throws_terminates") {
    // LocalProxy::get() is noexcept: a getter that throws ends the process through std::terminate. Checked
    // in a child process.
    std::cout.flush();  // or the child's exit could print what this process has buffered
    std::fflush(nullptr);
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        std::set_terminate([] { _exit(42); });
        const ctxlocal::LocalProxy<int> proxy{+[]() -> int* { throw std::runtime_error("getter failed"); }};
        try {
            (void)proxy.current();
        } catch (...) {
            _exit(1);  // the exception escaped get(): it must not
        }
        _exit(2);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 42);
}
#endif  // !CTXLOCAL_TEST_NO_FORK

// =========================================================================================================
// Namespace

TEST_CASE("Misuse.Namespace.get_of_a_missing_name") {
    ctxlocal::Namespace ns;
    ns.set("present", 1);
    const std::string message =
        "ctxlocal::Namespace has no attribute 'absent'; set it first, or use get_if/get_or";
    CHECK_THROWN(thrown_by([&] { (void)ns.get<int>("absent"); }), ctxlocal::attribute_error, message);
    const ctxlocal::Namespace& view = ns;
    CHECK_THROWN(thrown_by([&] { (void)view.get<int>("absent"); }), ctxlocal::attribute_error, message);
    try {
        (void)ns.get<int>("absent");
    } catch (const ctxlocal::attribute_error& e) {
        CHECK(e.name() == "absent");
    }
    CHECK(ns.size() == 1);
    CHECK_FALSE(ns.contains("absent"));
    CHECK(ns.get<int>("present") == 1);
}

TEST_CASE("Misuse.Namespace.get_with_the_wrong_type") {
    ctxlocal::Namespace ns;
    ns.set("fruit", Apple{7});
    ns.set("n", 1);
    CHECK_THROWN(
        thrown_by([&] { (void)ns.get<Orange>("fruit"); }), ctxlocal::attribute_error,
        "ctxlocal::Namespace attribute 'fruit' holds a misuse_test::Apple, not a misuse_test::Orange");
    CHECK_THROWN(thrown_by([&] { (void)ns.get<std::string>("n"); }), ctxlocal::attribute_error,
                 "ctxlocal::Namespace attribute 'n' holds a int, not a std::string");
    try {
        (void)ns.get<Orange>("fruit");
    } catch (const ctxlocal::attribute_error& e) {
        CHECK(e.name() == "fruit");
    }
    CHECK(ns.size() == 2);
    REQUIRE(ns.get_if<Apple>("fruit") != nullptr);
    CHECK(ns.get<Apple>("fruit").seeds == 7);
    CHECK(ns.get<int>("n") == 1);
}

TEST_CASE("Misuse.Namespace.get_or_with_the_wrong_type") {
    ctxlocal::Namespace ns;
    ns.set("lang", std::string("de"));
    CHECK_THROWN(thrown_by([&] { (void)ns.get_or<int>("lang", 0); }), ctxlocal::attribute_error,
                 "ctxlocal::Namespace attribute 'lang' holds a std::string, not a int");
    CHECK(ns.size() == 1);
    CHECK(ns.get<std::string>("lang") == "de");
}

TEST_CASE("Misuse.Namespace.pop_of_a_missing_name") {
    ctxlocal::Namespace ns;
    ns.set("b", 2);
    CHECK_THROWN(thrown_by([&] { (void)ns.pop<int>("nope"); }), ctxlocal::attribute_error,
                 "ctxlocal::Namespace has no attribute 'nope'; set it first, or use get_if/get_or");
    CHECK(ns.size() == 1);
    CHECK(ns.get<int>("b") == 2);
}

TEST_CASE("Misuse.Namespace.pop_with_the_wrong_type") {
    ctxlocal::Namespace ns;
    ns.set("fruit", Apple{9});
    ns.set("other", 1);
    const std::string message =
        "ctxlocal::Namespace attribute 'fruit' holds a misuse_test::Apple, not a misuse_test::Orange";
    CHECK_THROWN(thrown_by([&] { (void)ns.pop<Orange>("fruit"); }), ctxlocal::attribute_error, message);
    CHECK_THROWN(thrown_by([&] { (void)ns.pop<Orange>("fruit", Orange{}); }), ctxlocal::attribute_error,
                 message);
    CHECK(ns.size() == 2);
    CHECK(std::vector<std::string>(ns.begin(), ns.end()) == std::vector<std::string>{"fruit", "other"});
    CHECK(ns.get<Apple>("fruit").seeds == 9);
}

TEST_CASE("Misuse.Namespace.setdefault_with_the_wrong_type") {
    ctxlocal::Namespace ns;
    ns.set("fruit", Apple{3});
    CHECK_THROWN(
        thrown_by([&] { (void)ns.setdefault("fruit", Orange{}); }), ctxlocal::attribute_error,
        "ctxlocal::Namespace attribute 'fruit' holds a misuse_test::Apple, not a misuse_test::Orange");
    CHECK(ns.size() == 1);
    CHECK(ns.get<Apple>("fruit").seeds == 3);
}

TEST_CASE("Misuse.Namespace.set_whose_copy_throws") {
    ctxlocal::Namespace ns;
    ns.set("a", 1);
    ns.set("t", Touchy(7));
    const Touchy source(8);
    Touchy::armed = true;
    const Thrown replacing = thrown_by([&] { ns.set("t", source); });
    const Thrown adding = thrown_by([&] { ns.set("new", source); });
    Touchy::armed = false;
    CHECK_THROWN(replacing, Refusal, "Touchy copy refused");
    CHECK_THROWN(adding, Refusal, "Touchy copy refused");
    CHECK(ns.size() == 2);
    CHECK_FALSE(ns.contains("new"));
    CHECK(ns.get<Touchy>("t").v == 7);
    CHECK(std::vector<std::string>(ns.begin(), ns.end()) == std::vector<std::string>{"a", "t"});
}

// =========================================================================================================
// Contexts

TEST_CASE("Misuse.Contexts.pop_on_a_thread_where_it_is_not_pushed") {
    App app{"main"};
    int teardowns = 0;
    app.teardown_request([&](std::exception_ptr) { ++teardowns; });
    app.teardown_appcontext([&](std::exception_ptr) { ++teardowns; });
    web::AppContext actx{app};
    web::RequestContext rctx{app, Req{1}};
    actx.push();
    rctx.push();
    const Snapshot before = Snapshot::take();
    Thrown app_on_empty_thread, request_on_empty_thread, request_on_busy_thread;
    bool busy_thread_unchanged = false;
    std::thread([&] {
        app_on_empty_thread = thrown_by([&] { actx.pop(); });
        request_on_empty_thread = thrown_by([&] { rctx.pop(); });
        web::AppContext own{app};
        own.push();
        const Snapshot own_before = Snapshot::take();
        request_on_busy_thread = thrown_by([&] { rctx.pop(); });
        busy_thread_unchanged = Snapshot::take() == own_before;
        own.pop();
    }).join();
    CHECK_THROWN(app_on_empty_thread, ctxlocal::context_error,
                 "Cannot pop this context (" + actx.describe() + "), there is no active context.");
    CHECK_THROWN(request_on_empty_thread, ctxlocal::context_error,
                 "Cannot pop this context (" + rctx.describe() + "), there is no active context.");
    CHECK_THROWN(request_on_busy_thread, ctxlocal::context_error,
                 "Cannot pop this context (" + rctx.describe() + "), it is not pushed.");
    CHECK(busy_thread_unchanged);
    CHECK(teardowns == 1);              // only the other thread's own AppContext tore down
    CHECK(Snapshot::take() == before);  // this thread's contexts are untouched
    CHECK(web::request->id == 1);
    rctx.pop();
    actx.pop();
    CHECK(teardowns == 3);
    CHECK(stacks_empty());
}

TEST_CASE("Misuse.Contexts.pop_names_an_implicit_app_context_that_is_active") {
    // An implicit application context is the newest frame only while its own teardown runs (its request is
    // already popped): a callback popping another context then sees it named in the refusal.
    App app{"main"};
    App other{"other"};
    web::AppContext below{other};
    web::RequestContext rctx{app, Req{4}};
    Thrown refused;
    Snapshot inside_before{}, inside_after{};
    app.teardown_appcontext([&](std::exception_ptr) {
        inside_before = Snapshot::take();
        refused = thrown_by([&] { below.pop(); });
        inside_after = Snapshot::take();
    });
    below.push();
    rctx.push();  // another App: pushes an implicit application context
    rctx.pop();
    CHECK_THROWN(refused, ctxlocal::context_error,
                 "Cannot pop this context (" + below.describe() +
                     "), it is not the active context (<implicit AppContext of " + rctx.describe() + ">).");
    CHECK(inside_after == inside_before);
    CHECK(inside_before.apps == 2);
    CHECK(web::app_context_depth() == 1);  // `below` is still pushed
    CHECK(&*web::current_app == &other);
    below.pop();
    CHECK(stacks_empty());
}

TEST_CASE("Misuse.Teardown.several_callbacks_throw") {
    App app{"main"};
    std::vector<std::string> ran;
    app.teardown_request([&](std::exception_ptr) {
        ran.push_back("r1");
        throw Refusal("r1 failed");
    });
    app.teardown_request([&](std::exception_ptr) {
        ran.push_back("r2");
        throw std::logic_error("r2 failed");
    });
    app.teardown_appcontext([&](std::exception_ptr) {
        ran.push_back("a1");
        throw Refusal("a1 failed");
    });
    app.teardown_appcontext([&](std::exception_ptr) { ran.push_back("a2"); });
    web::RequestContext rctx{app, Req{1}};
    rctx.push();
    live = 0;
    web::g->set("k", Counted(1));
    CHECK(live.load() == 1);
    std::vector<std::exception_ptr> errors;
    const Thrown t = thrown_by([&] {
        try {
            rctx.pop();
        } catch (const ctxlocal::teardown_error& e) {
            errors = e.errors();
            throw;
        }
    });
    CHECK_THROWN(t, ctxlocal::teardown_error,
                 "ctxlocal: 3 teardown callbacks threw (the context was popped and every callback ran): r2 "
                 "failed; r1 failed; a1 failed");
    REQUIRE(errors.size() == 3);  // every exception, in the order thrown, with its own type
    CHECK_THROWN(thrown_in(errors[0]), std::logic_error, "r2 failed");
    CHECK_THROWN(thrown_in(errors[1]), Refusal, "r1 failed");
    CHECK_THROWN(thrown_in(errors[2]), Refusal, "a1 failed");
    CHECK(ran == std::vector<std::string>{"r2", "r1", "a2", "a1"});  // every callback ran
    CHECK(stacks_empty());                                           // popped regardless
    CHECK(live.load() == 0);                                         // its g was destroyed
    CHECK_THROWN(thrown_by([&] { rctx.pop(); }), ctxlocal::context_error,
                 "Cannot pop this context (" + rctx.describe() + "), there is no active context.");
}

TEST_CASE("Misuse.Contexts.register_teardown_from_teardown") {
    App app{"main"};
    App other{"other"};
    std::vector<std::string> ran;
    Thrown request_cb, appcontext_cb;
    app.teardown_request([&](std::exception_ptr) {
        ran.push_back("r");
        request_cb =
            thrown_by([&] { app.teardown_request([&](std::exception_ptr) { ran.push_back("x"); }); });
        // Another App's list is not running: registering there is allowed.
        other.teardown_appcontext([&](std::exception_ptr) { ran.push_back("other a"); });
    });
    app.teardown_appcontext([&](std::exception_ptr) {
        ran.push_back("a");
        appcontext_cb =
            thrown_by([&] { app.teardown_appcontext([&](std::exception_ptr) { ran.push_back("y"); }); });
    });
    {
        web::RequestContext rctx{app, Req{3}};
        rctx.push();
        rctx.pop();  // the refusals are caught inside the callbacks: the pop itself succeeds
    }
    CHECK_THROWN(request_cb, ctxlocal::error,
                 "ctxlocal: AppHooks::teardown_request() called from a teardown callback of the same "
                 "application; register every callback before the application serves");
    CHECK_THROWN(appcontext_cb, ctxlocal::error,
                 "ctxlocal: AppHooks::teardown_appcontext() called from a teardown callback of the same "
                 "application; register every callback before the application serves");
    CHECK(ran == std::vector<std::string>{"r", "a"});
    CHECK(app.teardown_request_callbacks().size() == 1);  // nothing was registered
    CHECK(app.teardown_appcontext_callbacks().size() == 1);
    CHECK(other.teardown_appcontext_callbacks().size() == 1);
    CHECK(stacks_empty());
    // Outside teardown, registering works again.
    app.teardown_request([&](std::exception_ptr) { ran.push_back("r2"); });
    CHECK(app.teardown_request_callbacks().size() == 2);
}

TEST_CASE("Misuse.Teardown.callback_throws_something_not_derived_from_std_exception") {
    App app{"main"};
    int ran = 0;
    app.teardown_request([&](std::exception_ptr) {
        ++ran;
        throw 7;
    });
    web::RequestContext rctx{app, Req{1}};
    rctx.push();
    // One: rethrown as it is.
    CHECK_THROWN(thrown_by([&] { rctx.pop(); }), int, "7");
    CHECK(ran == 1);
    CHECK(stacks_empty());

    // With another: listed by a placeholder.
    app.teardown_appcontext([&](std::exception_ptr) {
        ++ran;
        throw Refusal("a1 failed");
    });
    rctx.push();
    std::vector<std::exception_ptr> errors;
    const Thrown t = thrown_by([&] {
        try {
            rctx.pop();
        } catch (const ctxlocal::teardown_error& e) {
            errors = e.errors();
            throw;
        }
    });
    CHECK_THROWN(t, ctxlocal::teardown_error,
                 "ctxlocal: 2 teardown callbacks threw (the context was popped and every callback ran): (an "
                 "exception not derived from std::exception); a1 failed");
    REQUIRE(errors.size() == 2);
    CHECK_THROWN(thrown_in(errors[0]), int, "7");
    CHECK(ran == 3);
    CHECK(stacks_empty());
}

TEST_CASE("Misuse.Teardown.callback_throws_where_nothing_can_be_thrown") {
    IncidentCapture capture;
    App app{"main"};
    int ran = 0;
    app.teardown_appcontext([&](std::exception_ptr) {
        ++ran;
        throw Refusal("a failed");
    });
    // A context destroyed while pushed: its destructor pops it and reports the callback's error.
    std::string name;
    {
        web::AppContext doomed{app};
        name = doomed.describe();
        doomed.push();
    }
    CHECK(ran == 1);
    CHECK(stacks_empty());
    std::vector<Seen> seen = IncidentCapture::all();
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].kind == ctxlocal::Incident::Kind::leaked_context);
    CHECK(seen[0].message == leaked_message(name, "destroyed while still pushed"));
    CHECK(seen[1].kind == ctxlocal::Incident::Kind::suppressed_teardown_error);
    CHECK(seen[1].message ==
          "ctxlocal: a teardown callback threw while a context destroyed while still pushed was popped: a "
          "failed");
    CHECK_THROWN(thrown_in(seen[1].error), Refusal, "a failed");

    // A Storage released with a context still pushed in it: popped (reported) and its callback's error
    // reported, on the releasing thread.
    IncidentCapture::clear();
    std::string stale_name;
    {
        ctxlocal::Storage task;
        web::AppContext stale{app};
        stale_name = stale.describe();
        task.run([&] { stale.push(); });
        CHECK(ran == 1);
        CHECK(web::app_context_depth() == 0);  // pushed in the Storage, not on the thread
        task = ctxlocal::Storage::null();      // the last handle: the hook pops `stale` here
        CHECK(ran == 2);
    }
    CHECK(stacks_empty());
    seen = IncidentCapture::all();
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].kind == ctxlocal::Incident::Kind::leaked_context);
    CHECK(seen[0].message ==
          leaked_message(stale_name, "left pushed in a Storage whose last handle was released"));
    CHECK(seen[1].kind == ctxlocal::Incident::Kind::suppressed_teardown_error);
    CHECK(seen[1].message ==
          "ctxlocal: a teardown callback threw while a released Storage's contexts were popped: a failed");
}

TEST_CASE("Misuse.Teardown.callback_leaves_a_context_pushed") {
    App app{"main"};
    App other{"other"};
    std::vector<std::string> ran;
    web::AppContext leftover{other};
    other.teardown_appcontext([&](std::exception_ptr) { ran.push_back("other a"); });
    app.teardown_request([&](std::exception_ptr) {
        ran.push_back("r " + request_id_now());
        leftover.push();  // and never pops it
    });
    app.teardown_appcontext([&](std::exception_ptr) { ran.push_back("a " + request_id_now()); });
    web::RequestContext rctx{app, Req{5}};
    rctx.push();
    CHECK_THROWN(thrown_by([&] { rctx.pop(); }), ctxlocal::context_error,
                 "ctxlocal: a teardown callback left " + leftover.describe() + " pushed; it was popped");
    // The leftover was popped (with its own teardown) before the rest of the teardown ran.
    CHECK(ran == std::vector<std::string>{"r id=5", "other a", "a id=none"});
    CHECK(stacks_empty());
    CHECK_THROWN(thrown_by([&] { leftover.pop(); }), ctxlocal::context_error,
                 "Cannot pop this context (" + leftover.describe() + "), there is no active context.");
}

TEST_CASE("Misuse.Contexts.context_destroyed_while_pushed") {
    IncidentCapture capture;
    App app{"main"};
    App other{"other"};
    std::vector<std::string> ran;
    app.teardown_request([&](std::exception_ptr) { ran.push_back("r " + request_id_now()); });
    app.teardown_appcontext([&](std::exception_ptr) { ran.push_back("a"); });
    other.teardown_appcontext([&](std::exception_ptr) { ran.push_back("other a"); });
    web::AppContext base{other};
    base.push();
    web::AppContext newer{other};
    std::string destroyed_name;
    {
        web::RequestContext doomed{app, Req{8}};  // pushes an implicit application context for `app`
        destroyed_name = doomed.describe();
        doomed.push();
        newer.push();  // pushed after it, still alive
        CHECK(web::app_context_depth() == 3);
    }  // doomed is destroyed while pushed: it, and `newer` above it, are popped at once, newest first
    CHECK(ran == std::vector<std::string>{"other a", "r id=8", "a"});
    CHECK(web::app_context_depth() == 1);
    CHECK(web::request_context_depth() == 0);
    CHECK(&*web::current_app == &other);
    const std::string why = "destroyed while still pushed";
    const std::vector<Seen> seen = IncidentCapture::all();
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].kind == ctxlocal::Incident::Kind::leaked_context);
    CHECK(seen[0].message ==
          leaked_message(newer.describe(), "pushed after " + destroyed_name + ", which was " + why));
    CHECK(seen[1].kind == ctxlocal::Incident::Kind::leaked_context);
    CHECK(seen[1].message == leaked_message(destroyed_name, why));
    // `newer` is no longer pushed.
    CHECK_THROWN(thrown_by([&] { newer.pop(); }), ctxlocal::context_error,
                 "Cannot pop this context (" + newer.describe() + "), it is not pushed.");
    base.pop();
    CHECK(stacks_empty());

    // An AppContext destroyed while pushed, alone.
    IncidentCapture::clear();
    ran.clear();
    std::string app_name;
    {
        web::AppContext doomed_app{app};
        app_name = doomed_app.describe();
        doomed_app.push();
    }
    CHECK(ran == std::vector<std::string>{"a"});
    CHECK(stacks_empty());
    const std::vector<Seen> seen_app = IncidentCapture::all();
    REQUIRE(seen_app.size() == 1);
    CHECK(seen_app[0].message == leaked_message(app_name, why));
}

TEST_CASE("Misuse.Contexts.null_shared_ptr_request") {
    App app{"main"};
    const std::string message = "ctxlocal: RequestContext needs a request, got a null shared_ptr";
    CHECK_THROWN(thrown_by([&] { web::RequestContext rctx(app, std::shared_ptr<Req>()); }),
                 ctxlocal::context_error, message);
    CHECK(stacks_empty());

    IncidentCapture capture;
    bool called = false;
    CHECK_THROWN(thrown_by([&] { web::handle(app, std::shared_ptr<Req>(), [&] { called = true; }); }),
                 ctxlocal::context_error, message);
    CHECK_FALSE(called);
    CHECK(stacks_empty());
    CHECK(IncidentCapture::all().empty());
}

TEST_CASE("Misuse.Contexts.copy_current_request_context_outside_a_request") {
    const std::string message =
        "copy_current_request_context(): Working outside of request context. Call it while a request is "
        "bound "
        "(inside web::handle(...) or a pushed web::RequestContext), so that there is a request to copy.";
    bool called = false;
    auto f = [&] { called = true; };
    CHECK_THROWN(thrown_by([&] { (void)web::copy_current_request_context(f); }), ctxlocal::context_error,
                 message);
    CHECK(stacks_empty());
    App app{"main"};
    web::AppContext actx{app};
    actx.push();  // an application context is not enough
    web::g->set("k", 1);
    const Snapshot before = Snapshot::take();
    CHECK_THROWN(thrown_by([&] { (void)web::copy_current_request_context(f); }), ctxlocal::context_error,
                 message);
    CHECK(Snapshot::take() == before);
    CHECK(web::g->get<int>("k") == 1);
    CHECK_FALSE(called);
    actx.pop();
    CHECK(stacks_empty());
}

TEST_CASE("Misuse.Contexts.scope_guard_discarded") {
    App app{"main"};
    int teardowns = 0;
    app.teardown_request([&](std::exception_ptr) { ++teardowns; });
    web::RequestContext rctx{app, Req{1}};
    (void)rctx.scope();  // [[nodiscard]]: without the cast the compiler warns; the guard dies at once
    CHECK(teardowns == 1);
    CHECK(stacks_empty());
}

TEST_CASE("Misuse.Contexts.run_whose_f_pops_the_context") {
    App app{"main"};
    int teardowns = 0;
    app.teardown_request([&](std::exception_ptr) { ++teardowns; });
    app.teardown_appcontext([&](std::exception_ptr) { ++teardowns; });
    web::RequestContext rctx{app, Req{1}};
    bool f_finished = false;
    CHECK_THROWN(thrown_by([&] {
                     rctx.run([&] {
                         rctx.pop();
                         f_finished = true;
                     });
                 }),
                 ctxlocal::context_error,
                 "Cannot pop this context (" + rctx.describe() + "), there is no active context.");
    CHECK(f_finished);
    CHECK(teardowns == 2);  // once, by f's pop
    CHECK(stacks_empty());
}

TEST_CASE("Misuse.Contexts.run_whose_f_leaves_a_context_pushed") {
    IncidentCapture capture;
    App app{"main"};
    int teardowns = 0;
    app.teardown_appcontext([&](std::exception_ptr) { ++teardowns; });
    web::AppContext actx{app};
    web::AppContext inner{app};
    // f returns normally: run() throws, and both stay pushed (a refused pop changes nothing).
    CHECK_THROWN(thrown_by([&] { actx.run([&] { inner.push(); }); }), ctxlocal::context_error,
                 "Cannot pop this context (" + actx.describe() + "), it is not the active context (" +
                     inner.describe() + ").");
    CHECK(web::app_context_depth() == 2);
    CHECK(teardowns == 0);
    inner.pop();
    actx.pop();
    CHECK(teardowns == 2);
    CHECK(stacks_empty());

    // f throws: its exception propagates, the refused pop is reported, both stay pushed.
    CHECK_THROWN(thrown_by([&] {
                     actx.run([&] {
                         inner.push();
                         throw Refusal("f failed");
                     });
                 }),
                 Refusal, "f failed");
    CHECK(web::app_context_depth() == 2);
    const std::vector<Seen> seen = IncidentCapture::all();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].kind == ctxlocal::Incident::Kind::suppressed_teardown_error);
    CHECK(seen[0].message == "popping " + actx.describe() +
                                 " while another exception propagated failed: Cannot pop this context (" +
                                 actx.describe() + "), it is not the active context (" + inner.describe() +
                                 ").");
    inner.pop();
    actx.pop();
    CHECK(stacks_empty());
}

TEST_CASE("Misuse.Contexts.scope_whose_body_leaves_a_context_pushed") {
    IncidentCapture capture;
    App app{"main"};
    int teardowns = 0;
    app.teardown_appcontext([&](std::exception_ptr) { ++teardowns; });
    web::AppContext actx{app};
    web::AppContext inner{app};
    // Normal exit: the guard's destructor throws what the refused pop() throws; both stay pushed.
    CHECK_THROWN(thrown_by([&] {
                     auto guard = actx.scope();
                     inner.push();
                 }),
                 ctxlocal::context_error,
                 "Cannot pop this context (" + actx.describe() + "), it is not the active context (" +
                     inner.describe() + ").");
    CHECK(web::app_context_depth() == 2);
    CHECK(teardowns == 0);
    CHECK(IncidentCapture::all().empty());
    inner.pop();
    actx.pop();
    CHECK(teardowns == 2);

    // Exit by an exception: that exception propagates, the refused pop is reported, both stay pushed.
    CHECK_THROWN(thrown_by([&] {
                     auto guard = actx.scope();
                     inner.push();
                     throw Refusal("body failed");
                 }),
                 Refusal, "body failed");
    CHECK(web::app_context_depth() == 2);
    const std::vector<Seen> seen = IncidentCapture::all();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].kind == ctxlocal::Incident::Kind::suppressed_teardown_error);
    CHECK(seen[0].message == "popping " + actx.describe() +
                                 " while another exception propagated failed: Cannot pop this context (" +
                                 actx.describe() + "), it is not the active context (" + inner.describe() +
                                 ").");
    inner.pop();
    actx.pop();
    CHECK(stacks_empty());
}

TEST_CASE("Misuse.Contexts.thread_exits_with_contexts_pushed") {
    IncidentCapture capture;
    App app{"main"};
    std::atomic<int> teardowns{0};
    app.teardown_request([&](std::exception_ptr) { ++teardowns; });
    app.teardown_appcontext([&](std::exception_ptr) { ++teardowns; });
    web::AppContext actx{app};
    web::RequestContext rctx{app, Req{3}};
    live = 0;
    std::thread([&] {
        actx.push();
        web::g->set("k", Counted(1));
        rctx.push();
    }).join();                     // exits with both pushed
    CHECK(teardowns.load() == 0);  // no teardown ran
    CHECK(live.load() == 0);       // the thread's g was destroyed with its stacks
    CHECK(IncidentCapture::all().empty());
    CHECK(stacks_empty());  // other threads are unaffected
    rctx.run([] {});        // and the contexts stay usable
    CHECK(teardowns.load() == 2);
}

TEST_CASE("Misuse.Handle.handler_leaves_contexts_pushed") {
    IncidentCapture capture;
    App app{"main"};
    App other{"other"};
    std::vector<std::string> ran;
    app.teardown_request([&](std::exception_ptr) { ran.push_back("r " + request_id_now()); });
    other.teardown_request([&](std::exception_ptr) { ran.push_back("other r " + request_id_now()); });
    other.teardown_appcontext([&](std::exception_ptr) { ran.push_back("other a"); });
    web::AppContext leaked_app{other};
    web::RequestContext leaked_request{other, Req{99}};
    const int result = web::handle(app, Req{1}, [&] {
        leaked_app.push();
        leaked_request.push();  // reuses leaked_app
        return 5;
    });
    CHECK(result == 5);  // the handler's result, not an exception
    CHECK(ran == std::vector<std::string>{"other r id=99", "other a", "r id=1"});  // newest first
    CHECK(stacks_empty());
    const std::vector<Seen> seen = IncidentCapture::all();
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].kind == ctxlocal::Incident::Kind::leaked_context);
    CHECK(seen[0].message == leaked_message(leaked_request.describe(), "left pushed by the handler"));
    CHECK(seen[0].error == nullptr);
    CHECK(seen[1].kind == ctxlocal::Incident::Kind::leaked_context);
    CHECK(seen[1].message == leaked_message(leaked_app.describe(), "left pushed by the handler"));
    CHECK_THROWN(thrown_by([&] { leaked_request.pop(); }), ctxlocal::context_error,
                 "Cannot pop this context (" + leaked_request.describe() + "), there is no active context.");
}

TEST_CASE("Misuse.Handle.contexts_left_pushed_before_handle") {
    // handle() leaves what the caller pushed as it found it: the request gets its own contexts and g.
    IncidentCapture capture;
    App app{"main"};
    App other{"other"};
    std::vector<std::string> ran;
    other.teardown_request([&](std::exception_ptr) { ran.push_back("other r " + request_id_now()); });
    other.teardown_appcontext([&](std::exception_ptr) { ran.push_back("other a"); });
    web::AppContext stale_app{app};
    web::RequestContext stale_request{other, Req{98}};
    stale_app.push();
    stale_request.push();
    web::g->set("k", 1);  // the g of stale_request's implicit application context
    const Snapshot before = Snapshot::take();
    std::string saw;
    web::handle(app, Req{7}, [&] {
        saw = request_id_now() + " " + std::to_string(web::app_context_depth()) + "/" +
              std::to_string(web::request_context_depth()) +
              (web::g->contains("k") ? " stale g" : " fresh g");
    });
    CHECK(saw == "id=7 3/2 fresh g");
    CHECK(ran.empty());
    CHECK(Snapshot::take() == before);
    CHECK(web::g->get<int>("k") == 1);
    CHECK(IncidentCapture::all().empty());
    stale_request.pop();
    stale_app.pop();
    CHECK(ran == std::vector<std::string>{"other r id=98", "other a"});
    CHECK(stacks_empty());
}

TEST_CASE("Misuse.Handle.handle_called_inside_a_handler") {
    // An internal redirect: the inner request is served with its own request and g; the outer request is
    // intact afterwards.
    IncidentCapture capture;
    App app{"main"};
    std::vector<std::string> ran;
    app.teardown_request([&](std::exception_ptr) { ran.push_back("r " + request_id_now()); });
    std::string inner_saw;
    std::size_t depth_after_inner = 99;
    std::string outer_after;
    const int result = web::handle(app, Req{1}, [&] {
        web::g->set("who", std::string("outer"));
        web::handle(app, Req{2}, [&] {
            inner_saw = request_id_now() + (web::g->contains("who") ? " outer g" : " own g");
            web::g->set("who", std::string("inner"));
        });
        depth_after_inner = web::request_context_depth();
        outer_after = request_id_now() + " " + web::g->get<std::string>("who");
        return 3;
    });
    CHECK(result == 3);
    CHECK(ran == std::vector<std::string>{"r id=2", "r id=1"});
    CHECK(inner_saw == "id=2 own g");
    CHECK(depth_after_inner == 1);
    CHECK(outer_after == "id=1 outer");
    CHECK(stacks_empty());
    CHECK(IncidentCapture::all().empty());
}

namespace misuse_test {
std::atomic<int> throwing_handler_calls{0};
void throwing_incident_handler(const ctxlocal::Incident&) {
    ++throwing_handler_calls;
    throw std::runtime_error("incident handler failed");
}
}  // namespace misuse_test

TEST_CASE("Misuse.Handle.handle_called_from_a_teardown_callback") {
    IncidentCapture capture;
    App app{"main"};
    std::vector<std::string> ran;
    Thrown in_request_teardown, in_app_teardown;
    web::RequestContext rctx{app, Req{4}};
    const auto refusal = [](const std::string& closing) {
        return "ctxlocal: handle() called from a teardown callback of the same application (" + closing +
               " is being popped); its teardown would call it again without end: serve the request with "
               "another App object, or after the teardown";
    };
    const std::string request_message = refusal(rctx.describe());
    app.teardown_request([&](std::exception_ptr) {
        ran.push_back("r " + request_id_now());
        const Snapshot before = Snapshot::take();
        in_request_teardown =
            thrown_by([&] { web::handle(app, Req{99}, [&] { ran.push_back("handler"); }); });
        CHECK(Snapshot::take() == before);  // nothing changed
    });
    app.teardown_appcontext([&](std::exception_ptr) {
        ran.push_back("a");
        in_app_teardown = thrown_by([&] { web::handle(app, Req{98}, [&] { ran.push_back("handler"); }); });
    });
    rctx.push();
    rctx.pop();  // the callbacks caught the refusals: the pop succeeds
    CHECK_THROWN(in_request_teardown, ctxlocal::context_error, request_message);
    CHECK_THROWN(in_app_teardown, ctxlocal::context_error,
                 refusal("<implicit AppContext of " + rctx.describe() + ">"));
    CHECK(ran == std::vector<std::string>{"r id=4", "a"});  // no handler ran, no teardown ran twice
    CHECK(stacks_empty());
    CHECK(IncidentCapture::all().empty());

    // Uncaught, the refusal is the teardown error pop() throws, after popping everything.
    App other{"other"};
    other.teardown_request([&](std::exception_ptr) { web::handle(other, Req{97}, [] {}); });
    web::RequestContext second{other, Req{5}};
    second.push();
    CHECK_THROWN(thrown_by([&] { second.pop(); }), ctxlocal::context_error, refusal(second.describe()));
    CHECK(stacks_empty());
    // handle() works again once teardown is over.
    App plain{"plain"};
    CHECK(web::handle(plain, Req{6}, [] { return web::request->id; }) == 6);
    CHECK(stacks_empty());

    // From a teardown callback of another App, handle() serves the request; the context being torn down
    // is intact around it.
    IncidentCapture::clear();
    App audit{"audit"};
    std::vector<std::string> log;
    App served{"served"};
    served.teardown_request([&](std::exception_ptr) {
        log.push_back("teardown " + request_id_now());
        log.push_back(web::handle(audit, Req{50}, [] { return "audit " + request_id_now(); }));
        log.push_back("still " + request_id_now());
    });
    web::RequestContext third{served, Req{7}};
    third.push();
    third.pop();
    CHECK(log == std::vector<std::string>{"teardown id=7", "audit id=50", "still id=7"});
    CHECK(stacks_empty());
    CHECK(IncidentCapture::all().empty());
}

TEST_CASE("Misuse.Handle.incident_handler_that_throws") {
    App app{"main"};
    web::AppContext leaked{app};
    throwing_handler_calls = 0;
    web::set_incident_handler(&throwing_incident_handler);
    Thrown t = thrown_by([&] { (void)web::handle(app, Req{1}, [&] { leaked.push(); }); });
    web::set_incident_handler(nullptr);
    CHECK(t.type == "<nothing>");  // the handler's exception was swallowed
    CHECK(throwing_handler_calls == 1);
    CHECK(stacks_empty());
}
