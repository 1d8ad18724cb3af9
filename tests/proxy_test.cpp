// Tests for ctxlocal::LocalProxy<T> (include/ctxlocal/proxy.hpp): what each kind of source binds, unbound
// use and its message, copies, concurrent use, and a namespace-scope proxy free of initialisation-order
// problems.
#include <ctxlocal/proxy.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include <ctxlocal/errors.hpp>
#include <ctxlocal/local.hpp>
#include <ctxlocal/local_stack.hpp>

#include "support/sync.hpp"

namespace {

struct User {
    std::string name;
    int logins = 0;
    int bump() { return ++logins; }
};

using test_support::Gate;

thread_local int* t_bound_int = nullptr;
int* bound_int() { return t_bound_int; }

}  // namespace

// A proxy's conversion to bool is explicit: `int x = proxy;`-style accidents do not compile.
static_assert(!std::is_convertible_v<ctxlocal::LocalProxy<int>, bool>, "operator bool must be explicit");
static_assert(std::is_constructible_v<bool, ctxlocal::LocalProxy<int>>, "a proxy tests as a bool");
static_assert(std::is_trivially_copyable_v<ctxlocal::LocalProxy<int>>, "a proxy is cheap to copy");
static_assert(std::is_trivially_destructible_v<ctxlocal::LocalProxy<int>>, "a proxy owns nothing");
static_assert(std::is_same_v<decltype(std::declval<const ctxlocal::LocalProxy<int>&>().get()), int*>);
static_assert(std::is_same_v<decltype(std::declval<const ctxlocal::LocalProxy<int>&>().current()), int&>);

// ---------------------------------------------------------------------------------------------------------
// Namespace-scope proxies. `early` is dynamically initialised and defined before the Locals and proxies
// below, so its initialiser runs before theirs would if they were dynamically initialised: it sees them
// zero-initialised (a null unbound message, a null target) and, had the Local been dynamically initialised,
// that later initialisation would wipe the value set here. Both are checked in
// Proxy.Global.constant_initialised_usable_from_earlier_dynamic_initialiser.
namespace {

struct EarlyUse {
    bool messages_set = false;
    bool unbound_before = false;
    bool bound_after = false;
    int seen_local = 0;
    int seen_stack = 0;
    int seen_function = 0;
};

EarlyUse use_globals_early();
const EarlyUse early = use_globals_early();

#if defined(__clang__)
#define CTXLOCAL_TEST_CONSTINIT [[clang::require_constant_initialization]]
#elif defined(__GNUC__) && __GNUC__ >= 10
#define CTXLOCAL_TEST_CONSTINIT __constinit
#else
#define CTXLOCAL_TEST_CONSTINIT
#endif

CTXLOCAL_TEST_CONSTINIT ctxlocal::Local<int> g_local;
CTXLOCAL_TEST_CONSTINIT ctxlocal::LocalStack<int> g_stack;
thread_local int t_global_value = 0;
CTXLOCAL_TEST_CONSTINIT ctxlocal::LocalProxy<int> g_local_proxy{g_local, "g_local is not bound"};
CTXLOCAL_TEST_CONSTINIT ctxlocal::LocalProxy<int> g_stack_proxy{g_stack, "g_stack is empty"};
// A constexpr proxy (a literal type): the form the class comment recommends for globals.
constexpr ctxlocal::LocalProxy<int> g_constexpr_proxy{g_local, "constexpr proxy unbound"};
CTXLOCAL_TEST_CONSTINIT ctxlocal::LocalProxy<int> g_function_proxy{
    []() -> int* { return t_global_value != 0 ? &t_global_value : nullptr; }, "no global value"};

EarlyUse use_globals_early() {
    EarlyUse use;
    const char* m1 = g_local_proxy.unbound_message();
    const char* m2 = g_stack_proxy.unbound_message();
    const char* m3 = g_function_proxy.unbound_message();
    use.messages_set =
        m1 != nullptr && m2 != nullptr && m3 != nullptr && std::string_view(m1) == "g_local is not bound" &&
        std::string_view(m2) == "g_stack is empty" && std::string_view(m3) == "no global value";
    if (!use.messages_set) return use;  // zero-initialised proxies: using them would crash
    use.unbound_before = !g_local_proxy && !g_stack_proxy && !g_function_proxy;
    g_local.emplace(41);
    g_stack.push(42);
    t_global_value = 43;
    use.bound_after = static_cast<bool>(g_local_proxy) && static_cast<bool>(g_stack_proxy) &&
                      static_cast<bool>(g_function_proxy);
    if (!use.bound_after) return use;
    use.seen_local = *g_local_proxy;
    use.seen_stack = *g_stack_proxy;
    use.seen_function = *g_function_proxy;
    return use;
}

}  // namespace

TEST_CASE("Proxy.Global.constant_initialised_usable_from_earlier_dynamic_initialiser") {
    CHECK(early.messages_set);
    CHECK(early.unbound_before);
    CHECK(early.bound_after);
    CHECK(early.seen_local == 41);
    CHECK(early.seen_stack == 42);
    CHECK(early.seen_function == 43);
    // Still bound: no later (dynamic) initialisation reset the Local, the stack or the proxies.
    REQUIRE(g_local_proxy);
    CHECK(*g_local_proxy == 41);
    CHECK(g_local_proxy.get() == g_local.get());
    REQUIRE(g_constexpr_proxy);
    CHECK(g_constexpr_proxy.get() == g_local.get());
    REQUIRE(g_stack_proxy);
    CHECK(*g_stack_proxy == 42);
    CHECK(g_stack.size() == 1);
    g_local.reset();
    g_stack.clear();
    t_global_value = 0;
    CHECK_FALSE(g_local_proxy);
    CHECK_FALSE(g_stack_proxy);
    CHECK_FALSE(g_function_proxy);
    CHECK_FALSE(g_constexpr_proxy);
    CHECK_THROWS_WITH_AS(g_constexpr_proxy.current(), "constexpr proxy unbound", ctxlocal::unbound_error);
    CHECK_THROWS_WITH_AS(g_local_proxy.current(), "g_local is not bound", ctxlocal::unbound_error);
}

// ---------------------------------------------------------------------------------------------------------
// Sources

TEST_CASE("Proxy.FromLocal.bound_only_when_thread_has_value") {
    ctxlocal::Local<int> local;
    ctxlocal::LocalProxy<int> proxy{local};
    CHECK_FALSE(proxy);
    CHECK(proxy.get() == nullptr);
    CHECK_THROWS_AS(proxy.current(), ctxlocal::unbound_error);
    CHECK_FALSE(local.has_value());  // the proxy never creates a value
    CHECK(local.count() == 0);

    local.emplace(7);
    REQUIRE(proxy);
    CHECK(proxy.get() == local.get());
    CHECK(&proxy.current() == local.get());
    CHECK(*proxy == 7);
    *proxy = 8;  // writes through to the Local
    CHECK(*local.get() == 8);

    local.reset();
    CHECK_FALSE(proxy);
    CHECK(proxy.get() == nullptr);
}

TEST_CASE("Proxy.FromLocal.arrow_reaches_members") {
    ctxlocal::Local<User> local;
    ctxlocal::LocalProxy<User> user{local, "no user"};
    local.emplace(User{"ana", 0});
    CHECK(user->name == "ana");
    CHECK(user->bump() == 1);
    CHECK(local.get()->logins == 1);
    local.reset();
    CHECK_THROWS_WITH_AS((void)user->name, "no user", ctxlocal::unbound_error);
}

TEST_CASE("Proxy.FromStack.follows_top") {
    ctxlocal::LocalStack<int> stack;
    ctxlocal::LocalProxy<int> proxy{stack};
    CHECK_FALSE(proxy);
    stack.push(1);
    REQUIRE(proxy);
    CHECK(*proxy == 1);
    stack.push(2);
    CHECK(*proxy == 2);
    CHECK(proxy.get() == stack.top());
    stack.pop();
    CHECK(*proxy == 1);
    CHECK(proxy.get() == stack.top());
    stack.pop();
    CHECK_FALSE(proxy);
    CHECK(proxy.get() == nullptr);
    CHECK_THROWS_WITH_AS(proxy.current(), "object is not bound", ctxlocal::unbound_error);
    stack.clear();
}

TEST_CASE("Proxy.FromLocalPointer.bound_when_pointer_non_null") {
    ctxlocal::Local<int*> pointer;
    ctxlocal::LocalProxy<int> proxy{pointer};
    int x = 1;
    int y = 2;
    CHECK_FALSE(proxy);  // no value at all
    CHECK_FALSE(pointer.has_value());
    pointer.emplace(nullptr);
    CHECK_FALSE(proxy);  // a null pointer is unbound
    CHECK(proxy.get() == nullptr);
    CHECK_THROWS_AS(proxy.current(), ctxlocal::unbound_error);
    pointer.emplace(&x);
    REQUIRE(proxy);
    CHECK(proxy.get() == &x);
    CHECK(*proxy == 1);
    *pointer.get() = &y;  // re-pointing the Local re-binds the proxy
    CHECK(proxy.get() == &y);
    *proxy = 20;
    CHECK(y == 20);
    pointer.reset();
    CHECK_FALSE(proxy);
}

TEST_CASE("Proxy.FromFunction.bound_when_getter_returns_non_null") {
    SUBCASE("function pointer") {
        ctxlocal::LocalProxy<int> proxy{&bound_int, "no int"};
        int x = 5;
        CHECK_FALSE(proxy);
        t_bound_int = &x;
        REQUIRE(proxy);
        CHECK(proxy.get() == &x);
        CHECK(*proxy == 5);
        t_bound_int = nullptr;
        CHECK_FALSE(proxy);
        CHECK_THROWS_WITH_AS(*proxy, "no int", ctxlocal::unbound_error);
    }
    SUBCASE("capture-less lambda") {
        ctxlocal::LocalProxy<int> proxy{[]() -> int* { return t_bound_int; }};
        int x = 6;
        CHECK_FALSE(proxy);
        t_bound_int = &x;
        REQUIRE(proxy);
        CHECK(&proxy.current() == &x);
        t_bound_int = nullptr;
        CHECK(proxy.get() == nullptr);
    }
}

TEST_CASE("Proxy.FromCallable.stateful_lambda") {
    std::vector<int> items;
    int calls = 0;
    const auto getter = [&items, &calls]() -> int* {
        ++calls;
        return items.empty() ? nullptr : &items.back();
    };
    ctxlocal::LocalProxy<int> proxy{getter, "no items"};
    CHECK_FALSE(proxy);
    items.push_back(3);
    REQUIRE(proxy);
    CHECK(*proxy == 3);
    CHECK(proxy.get() == &items.back());
    const int before = calls;
    (void)proxy.get();
    CHECK(calls == before + 1);  // the getter runs on every use: nothing is cached
    items.clear();
    CHECK_THROWS_WITH_AS(proxy.current(), "no items", ctxlocal::unbound_error);
}

TEST_CASE("Proxy.FromCallable.derived_pointer_binds_base_proxy") {
    struct Base {
        int id = 1;
    };
    struct Derived : Base {
        Derived() { id = 2; }
    };
    Derived d;
    Derived* bound = &d;
    const auto getter = [&bound]() { return bound; };
    ctxlocal::LocalProxy<Base> proxy{getter};
    REQUIRE(proxy);
    CHECK(proxy->id == 2);
    bound = nullptr;
    CHECK_FALSE(proxy);
}

TEST_CASE("Proxy.FromCallable.temporary_getter_rejected_at_compile_time") {
    int x = 1;
    auto getter = [&x]() { return &x; };
    using Getter = decltype(getter);
    // The proxy refers to a stateful getter; a temporary would dangle, so it does not compile.
    static_assert(!std::is_constructible_v<ctxlocal::LocalProxy<int>, Getter>);
    static_assert(!std::is_constructible_v<ctxlocal::LocalProxy<int>, Getter&&>);
    static_assert(std::is_constructible_v<ctxlocal::LocalProxy<int>, Getter&>);
    static_assert(std::is_constructible_v<ctxlocal::LocalProxy<int>, const Getter&>);
    // A capture-less lambda is stored as a function pointer, so a temporary is fine.
    static_assert(std::is_constructible_v<ctxlocal::LocalProxy<int>, int* (*)()>);
    ctxlocal::LocalProxy<int> proxy{getter};
    CHECK(proxy.get() == &x);
}

// ---------------------------------------------------------------------------------------------------------
// Unbound use

TEST_CASE("Proxy.Unbound.default_message") {
    ctxlocal::Local<User> local;
    ctxlocal::LocalProxy<User> proxy{local};
    CHECK(std::string_view(proxy.unbound_message()) == "object is not bound");
    CHECK(std::string_view(ctxlocal::LocalProxy<User>::default_unbound_message) == "object is not bound");
    CHECK_THROWS_WITH_AS(proxy.current(), "object is not bound", ctxlocal::unbound_error);
    CHECK_THROWS_WITH_AS(*proxy, "object is not bound", ctxlocal::unbound_error);
    CHECK_THROWS_WITH_AS((void)proxy->name, "object is not bound", ctxlocal::unbound_error);
}

TEST_CASE("Proxy.Unbound.given_message_exactly") {
    ctxlocal::LocalStack<User> stack;
    ctxlocal::LocalProxy<User> proxy{stack, "Working outside of request context."};
    CHECK(std::string_view(proxy.unbound_message()) == "Working outside of request context.");
    CHECK_THROWS_WITH_AS(proxy.current(), "Working outside of request context.", ctxlocal::unbound_error);
    CHECK_THROWS_WITH_AS(*proxy, "Working outside of request context.", ctxlocal::unbound_error);
    CHECK_THROWS_WITH_AS((void)proxy->name, "Working outside of request context.", ctxlocal::unbound_error);
}

TEST_CASE("Proxy.Unbound.error_is_a_ctxlocal_error_and_runtime_error") {
    ctxlocal::Local<int> local;
    ctxlocal::LocalProxy<int> proxy{local, "nothing here"};
    CHECK_THROWS_AS(proxy.current(), ctxlocal::error);
    CHECK_THROWS_AS(proxy.current(), std::runtime_error);
}

TEST_CASE("Proxy.Unbound.falsy_and_get_null_without_throwing") {
    ctxlocal::Local<int> local;
    ctxlocal::LocalStack<int> stack;
    ctxlocal::Local<int*> pointer;
    const ctxlocal::LocalProxy<int> proxies[] = {
        ctxlocal::LocalProxy<int>{local}, ctxlocal::LocalProxy<int>{stack},
        ctxlocal::LocalProxy<int>{pointer}, ctxlocal::LocalProxy<int>{&bound_int}};
    for (const auto& proxy : proxies) {
        CHECK_FALSE(static_cast<bool>(proxy));
        CHECK(!proxy);
        int* got = reinterpret_cast<int*>(1);
        CHECK_NOTHROW(got = proxy.get());
        CHECK(got == nullptr);
    }
    static_assert(noexcept(proxies[0].get())&& noexcept(static_cast<bool>(proxies[0])));
}

// ---------------------------------------------------------------------------------------------------------
// Copies

TEST_CASE("Proxy.Copy.keeps_forwarding") {
    SUBCASE("Local source") {
        ctxlocal::Local<int> local;
        ctxlocal::LocalProxy<int> original{local, "copied message"};
        ctxlocal::LocalProxy<int> copy = original;
        CHECK_FALSE(copy);
        local.emplace(9);  // bound after the copy was made
        REQUIRE(copy);
        CHECK(copy.get() == local.get());
        ctxlocal::LocalProxy<int> assigned{&bound_int};
        assigned = original;
        CHECK(assigned.get() == local.get());
        local.reset();
        CHECK_THROWS_WITH_AS(copy.current(), "copied message", ctxlocal::unbound_error);
    }
    SUBCASE("stateful getter: the copy outlives the original proxy") {
        int value = 4;
        int* bound = &value;
        const auto getter = [&bound]() { return bound; };
        auto original = std::make_unique<ctxlocal::LocalProxy<int>>(getter);
        ctxlocal::LocalProxy<int> copy = *original;
        original.reset();
        REQUIRE(copy);
        CHECK(copy.get() == &value);
        bound = nullptr;
        CHECK_FALSE(copy);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Concurrency

TEST_CASE("Proxy.Concurrent.each_thread_sees_its_own_binding" * doctest::timeout(30)) {
    for (int threads : {1, 2, 8}) {
        CAPTURE(threads);
        ctxlocal::Local<int> local;
        ctxlocal::LocalStack<int> stack;
        const ctxlocal::LocalProxy<int> local_proxy{local};
        const ctxlocal::LocalProxy<int> stack_proxy{stack};
        Gate gate;
        std::atomic<int> mismatches{0};
        std::atomic<int> unbound_at_start{0};
        std::atomic<int> unbound_at_end{0};
        local.emplace(-1);  // the main thread's binding: never visible to the workers
        stack.push(-1);
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t) {
            pool.emplace_back([&, id = t + 1] {
                if (!local_proxy && !stack_proxy) ++unbound_at_start;
                local.emplace(id);
                stack.push(id * 100);
                const ctxlocal::LocalProxy<int> copy = local_proxy;  // a copy made on this thread
                gate.wait();
                for (int i = 0; i < 2000; ++i) {
                    if (*local_proxy != id || *copy != id || *stack_proxy != id * 100) ++mismatches;
                    if (i % 100 == 0) {
                        stack.push(id * 100 + i);
                        if (*stack_proxy != id * 100 + i) ++mismatches;
                        stack.pop();
                    }
                }
                local.reset();
                stack.clear();
                if (!local_proxy && !stack_proxy) ++unbound_at_end;
            });
        }
        gate.open();
        test_support::join_all(pool);
        CHECK(unbound_at_start == threads);
        CHECK(unbound_at_end == threads);
        CHECK(mismatches == 0);
        CHECK(*local_proxy == -1);
        CHECK(*stack_proxy == -1);
        local.reset();
        stack.clear();
    }
}

namespace {
struct Pinned {  // neither copyable nor movable, like a mutex-holding `g` type
    explicit Pinned(int v) : value(v) {}
    Pinned(const Pinned&) = delete;
    Pinned& operator=(const Pinned&) = delete;
    int value;
};
}  // namespace

TEST_CASE("Proxy.NonMovable.local_and_pointer_sources_work_for_a_pinned_type") {
    // LocalStack<T> needs a movable T; a proxy over a Local<T> or Local<T*> must not.
    static_assert(!std::is_move_constructible_v<Pinned>);
    ctxlocal::Local<Pinned> local([] { return Pinned(7); });
    const ctxlocal::LocalProxy<Pinned> from_local{local};
    CHECK_FALSE(from_local);
    local.value();
    CHECK(from_local->value == 7);

    Pinned other(9);
    ctxlocal::Local<Pinned*> pointer;
    const ctxlocal::LocalProxy<Pinned> from_pointer{pointer};
    pointer.value() = &other;
    CHECK(&from_pointer.current() == &other);
}
