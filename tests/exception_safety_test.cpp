// Exception safety (issue 6): for every operation that can meet an exception — a throwing initialiser,
// constructor, copy, allocation or teardown callback — the state afterwards is exactly what the header
// comment promises. Allocation failures are injected by this executable's replacement of operator new
// (fail the Nth allocation on the calling thread, for N = 0, 1, 2, ... until the operation succeeds).
// libstdc++'s assertions are on in this file, so that an index out of a vector's bounds inside the
// library aborts instead of passing silently.
//
// clang-format off
// | Operation                                   | Promise (header comment)                                    | Test
// |---------------------------------------------|-------------------------------------------------------------|------------------------------------------------------------
// | Local::value(), initialiser throws          | rethrows it, creates nothing; the next value() calls it     | Local.InitThrows.creates_nothing_and_retries.Nthreads
// |                                             | again                                                       |
// | Local::value(), allocation fails            | throws bad_alloc, creates nothing; retrying works           | Local.AllocationFailure.value_creates_nothing
// | Local::emplace(), constructor throws        | the old value is kept unchanged (none made if none was)     | Local.EmplaceThrows.keeps_old_value
// | Local::emplace(), allocation fails          | the old value is kept unchanged                             | Local.AllocationFailure.emplace_keeps_old_value
// | thread exit, every allocation fails         | every value is destroyed, nothing allocated, no terminate   | Local.AllocationFailure.thread_exit_destroys_values_without_allocating
// | ~Local, every allocation fails              | every thread's value is destroyed, nothing allocated        | Local.AllocationFailure.destroying_a_local_allocates_nothing
// | Local::for_each(), callback throws          | the exception propagates, the visit stops (lock released)   | Local.ForEachThrows.propagates_and_stops
// | LocalStack::push(), element move throws     | the stack is unchanged                                      | LocalStack.PushThrows.stack_unchanged
// | LocalStack::push(), allocation fails        | the stack is unchanged                                      | LocalStack.AllocationFailure.push_leaves_stack_unchanged
// | LocalStack::emplace(), constructor throws   | the stack is unchanged                                      | LocalStack.EmplaceThrows.stack_unchanged
// | Namespace::set(), copy throws               | nothing changes (old value kept, no new name)               | Namespace.SetThrows.nothing_changes
// | Namespace::set(), allocation fails          | nothing changes                                             | Namespace.AllocationFailure.set_changes_nothing
// | Namespace::set(name, rvalue), alloc fails   | nothing changes; the argument is not moved from             | Namespace.AllocationFailure.set_of_a_move_only_value_keeps_the_argument
// | Namespace::emplace(), constructor throws    | nothing changes (old value kept, no new name)               | Namespace.EmplaceThrows.nothing_changes
// | Namespace::pop(), copying the value throws  | the name stays set to its value, in its place               | Namespace.PopThrows.name_stays_set
// | AppContext/RequestContext::push(), alloc    | if it throws, nothing changed                               | Contexts.AllocationFailure.push_changes_nothing
// | RequestContext::pop(), one callback throws  | popped anyway, every callback ran, that exception rethrown  | Contexts.TeardownThrows.one_callback_rethrown_after_full_pop
// | pop(), request and app callbacks throw      | popped, every callback ran, teardown_error holds all, in    | Contexts.TeardownThrows.several_callbacks_teardown_error
// |                                             | order                                                       |
// | AppContext::pop(), callbacks throw          | popped (g destroyed), every callback ran, errors rethrown   | Contexts.TeardownThrows.app_context_pop
// | run(f), f returns, teardown throws          | popped, the teardown error is thrown                        | Contexts.TeardownThrows.run_throws_teardown_error
// | run(f), f throws, teardown throws           | f's exception propagates and reached teardown; teardown     | Contexts.TeardownThrows.run_keeps_callers_exception
// |                                             | errors go to the incident handler (suppressed_teardown_error)|
// | scope() guard, normal exit, teardown throws | the guard's destructor throws what pop() throws; popped     | Contexts.TeardownThrows.scope_guard_throws_on_normal_exit
// | scope() guard, unwinding, teardown throws   | teardown gets null; errors go to the incident handler; the  | Contexts.TeardownThrows.scope_guard_reports_while_unwinding
// |                                             | propagating exception is unchanged                          |
// | handle(), handler returns, teardown throws  | stacks empty, then the teardown errors are thrown           | Contexts.TeardownThrows.handle_throws_after_popping
// | handle(), handler and teardown throw        | handler's exception rethrown and given to teardown; each    | Contexts.TeardownThrows.handle_keeps_handlers_exception
// |                                             | teardown error is an incident; stacks empty                 |
// clang-format on
#ifndef _GLIBCXX_ASSERTIONS
#define _GLIBCXX_ASSERTIONS 1
#endif
#if defined(__GNUC__) && !defined(__clang__)
// The replacement operator delete below frees with std::free what operator new got from std::malloc;
// GCC flags every inlined new/delete pair as mismatched.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <doctest/doctest.h>
#include <ctxlocal/ctxlocal.hpp>

#include "support/sync.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

// ---------------------------------------------------------------------------------------------------
// Allocation failure injection: operator new fails when the calling thread's countdown reaches zero.

// ThreadSanitizer's runtime always links its own operator new (whole-archive), so under TSan the
// allocation-failure cases are skipped; they run in the plain, clang and ASan builds.
#if defined(__SANITIZE_THREAD__)
#define CTXLOCAL_TEST_INJECT_ALLOCATION_FAILURES 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CTXLOCAL_TEST_INJECT_ALLOCATION_FAILURES 0
#endif
#endif
#ifndef CTXLOCAL_TEST_INJECT_ALLOCATION_FAILURES
#define CTXLOCAL_TEST_INJECT_ALLOCATION_FAILURES 1
#endif

namespace {
thread_local long allocations_until_failure = -1;  // -1: never fail
thread_local bool fail_every_allocation = false;
constexpr bool no_allocation_injection = CTXLOCAL_TEST_INJECT_ALLOCATION_FAILURES == 0;
}  // namespace

#if CTXLOCAL_TEST_INJECT_ALLOCATION_FAILURES

// Every replaceable form is replaced, so that a sanitizer runtime's own definitions (which come as one
// object with all of them) are not linked in next to ours.
namespace {
void* allocate(std::size_t size, std::size_t alignment = 0) {
    if (allocations_until_failure >= 0 && allocations_until_failure-- == 0) throw std::bad_alloc();
    if (fail_every_allocation) throw std::bad_alloc();
    if (size == 0) size = 1;
    if (alignment <= alignof(std::max_align_t)) {
        void* p = std::malloc(size);
        if (p == nullptr) throw std::bad_alloc();
        return p;
    }
    // Over-aligned, by hand (Windows has no std::aligned_alloc): the malloc'd block's address is kept just
    // below the aligned one, for release_aligned.
    void* raw = std::malloc(size + alignment + sizeof(void*));
    if (raw == nullptr) throw std::bad_alloc();
    const auto at = (reinterpret_cast<std::uintptr_t>(raw) + sizeof(void*) + alignment - 1) &
                    ~static_cast<std::uintptr_t>(alignment - 1);
    reinterpret_cast<void**>(at)[-1] = raw;
    return reinterpret_cast<void*>(at);
}
void release_aligned(void* p) noexcept {
    if (p != nullptr) std::free(static_cast<void**>(p)[-1]);
}
void* allocate_nothrow(std::size_t size, std::size_t alignment = 0) noexcept {
    try {
        return allocate(size, alignment);
    } catch (const std::bad_alloc&) {
        return nullptr;
    }
}
}  // namespace

void* operator new(std::size_t n) { return allocate(n); }
void* operator new[](std::size_t n) { return allocate(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return allocate_nothrow(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return allocate_nothrow(n); }
void* operator new(std::size_t n, std::align_val_t a) { return allocate(n, static_cast<std::size_t>(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return allocate(n, static_cast<std::size_t>(a)); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    return allocate_nothrow(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    return allocate_nothrow(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { release_aligned(p); }
void operator delete[](void* p, std::align_val_t) noexcept { release_aligned(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { release_aligned(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { release_aligned(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { release_aligned(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { release_aligned(p); }
#endif

namespace {

/// Calls `op()` with the 0th, 1st, 2nd... allocation failing until it succeeds; after each failure calls
/// `unchanged()` to check that the failed call changed nothing. Returns how many failures were injected.
template <class Op, class Check>
int sweep_allocation_failures(Op op, Check unchanged) {
    for (int n = 0; n < 10000; ++n) {
        allocations_until_failure = n;
        try {
            op();
            allocations_until_failure = -1;
            return n;
        } catch (const std::bad_alloc&) {
            allocations_until_failure = -1;
            unchanged();
        }
    }
    FAIL("the operation never succeeded");
    return -1;
}

struct Boom : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::atomic<int> live{0};

/// Counts live instances; the constructor throws on request.
struct Probe {
    int value;
    explicit Probe(int v, bool fail = false) : value(v) {
        if (fail) throw Boom("Probe(" + std::to_string(v) + ") failed");
        ++live;
    }
    Probe(const Probe& other) : value(other.value) { ++live; }
    ~Probe() { --live; }
};

/// Its move constructor throws while `armed` (a vector then cannot move it: LocalStack's push must).
struct Touchy {
    static inline bool armed = false;
    int value;
    explicit Touchy(int v) : value(v) {}
    Touchy(const Touchy& other) : value(other.value) {
        if (armed) throw Boom("Touchy copy failed");
    }
    Touchy(Touchy&& other) : value(other.value) {
        if (armed) throw Boom("Touchy move failed");
    }
};

void run_threads(int threads, const std::function<void(int)>& body) {
    std::vector<std::thread> pool;
    for (int i = 0; i < threads; ++i) pool.emplace_back(body, i);
    test_support::join_all(pool);
}

// ---------------------------------------------------------------------------------------------------
// Local

/// The even threads' initialiser (thread 0's too, so that one thread is a real case) throws until
/// released; each thread retries. The initialiser captures
/// state, so this covers the std::function path (the function-pointer path is tested below).
void init_throws_on_some_threads(int threads) {
    thread_local int attempts = 0;
    thread_local int index = -1;
    std::atomic<bool> refuse{true};
    std::atomic<int> arrived{0};
    std::atomic<bool> released{false};
    auto barrier = [&](int round) {
        ++arrived;
        while (arrived.load() < round * threads) std::this_thread::yield();
    };
    live = 0;
    {
        ctxlocal::Local<Probe> local{[&refuse] {
            ++attempts;
            if (refuse && index % 2 == 0) throw Boom("init refused");
            return Probe(index);
        }};
        run_threads(threads, [&](int i) {
            index = i;
            attempts = 0;
            if (i % 2 == 0) {
                CHECK_THROWS_AS((void)local.value(), Boom);
                CHECK(local.get() == nullptr);  // created nothing
                CHECK_THROWS_AS((void)local.value(), Boom);
                CHECK(attempts == 2);  // the second value() ran the initialiser again
            } else {
                CHECK(local.value().value == i);
            }
            barrier(1);
            if (i == 0) {
                // Only the threads whose initialiser succeeded hold a value.
                CHECK(local.count() == static_cast<std::size_t>(threads / 2));
                CHECK(live.load() == threads / 2);
                refuse = false;
                released = true;
            }
            while (!released) std::this_thread::yield();
            CHECK(local.value().value == i);  // the retry after the failure succeeds
            barrier(2);
        });
        CHECK(live.load() == 0);  // every thread's value died with its thread
    }
    CHECK(live.load() == 0);
}

}  // namespace

TEST_CASE("Local.InitThrows.creates_nothing_and_retries.1thread" * doctest::timeout(30)) {
    init_throws_on_some_threads(1);
}
TEST_CASE("Local.InitThrows.creates_nothing_and_retries.2threads" * doctest::timeout(30)) {
    init_throws_on_some_threads(2);
}
TEST_CASE("Local.InitThrows.creates_nothing_and_retries.6threads" * doctest::timeout(30)) {
    init_throws_on_some_threads(6);
}

TEST_CASE("Local.InitThrows.function_pointer_initialiser_creates_nothing") {
    static bool refuse = true;
    static int calls = 0;
    live = 0;
    {
        ctxlocal::Local<Probe> local{[] {
            ++calls;
            return Probe(5, refuse);
        }};
        CHECK_THROWS_AS((void)local.value(), Boom);
        CHECK(local.get() == nullptr);
        CHECK(local.count() == 0);
        CHECK(live.load() == 0);
        refuse = false;
        CHECK(local.value().value == 5);
        CHECK(calls == 2);
        CHECK(live.load() == 1);
    }
    CHECK(live.load() == 0);
}

TEST_CASE("Local.EmplaceThrows.keeps_old_value") {
    live = 0;
    {
        ctxlocal::Local<Probe> local;
        // No value yet: a throwing emplace makes none.
        CHECK_THROWS_AS((void)local.emplace(1, true), Boom);
        CHECK(local.get() == nullptr);
        CHECK(local.count() == 0);
        Probe& old = local.emplace(2);
        CHECK_THROWS_AS((void)local.emplace(3, true), Boom);
        CHECK(local.get() == &old);  // the same object...
        CHECK(old.value == 2);       // ...unchanged
        CHECK(live.load() == 1);
    }
    CHECK(live.load() == 0);
}

TEST_CASE("Local.AllocationFailure.value_creates_nothing" * doctest::skip(no_allocation_injection)) {
    live = 0;
    // Many fresh Locals, each on a fresh thread for the first few: covers taking a slot id (and the
    // registry's vectors growing), attaching a thread table and growing it, and allocating the value.
    std::vector<std::unique_ptr<ctxlocal::Local<Probe>>> locals;
    int injected = 0;
    for (int i = 0; i < 70; ++i) {
        locals.push_back(std::make_unique<ctxlocal::Local<Probe>>([] { return Probe(9); }));
        ctxlocal::Local<Probe>& local = *locals.back();
        auto body = [&] {
            const int before = live.load();
            injected += sweep_allocation_failures([&] { (void)local.value(); },
                                                  [&] {
                                                      CHECK(local.get() == nullptr);
                                                      CHECK(local.count() == 0);
                                                      CHECK(live.load() == before);
                                                  });
            REQUIRE(local.get() != nullptr);
            CHECK(local.get()->value == 9);
        };
        if (i < 3) {
            std::thread(body).join();
        } else {
            body();
        }
    }
    CHECK(injected > 70);  // the sweep did inject failures
    // Every Local still works and owns its own slot.
    for (std::size_t i = 0; i < locals.size(); ++i) locals[i]->value().value = static_cast<int>(i);
    for (std::size_t i = 0; i < locals.size(); ++i) CHECK(locals[i]->get()->value == static_cast<int>(i));
    locals.clear();
    CHECK(live.load() == 0);
}

TEST_CASE("Local.AllocationFailure.emplace_keeps_old_value" * doctest::skip(no_allocation_injection)) {
    live = 0;
    ctxlocal::Local<Probe> local;
    Probe& old = local.emplace(1);
    const int injected = sweep_allocation_failures([&] { (void)local.emplace(2); },
                                                   [&] {
                                                       CHECK(local.get() == &old);
                                                       CHECK(old.value == 1);
                                                       CHECK(live.load() == 1);
                                                   });
    CHECK(injected >= 1);
    CHECK(local.get()->value == 2);
    CHECK(live.load() == 1);
}

namespace {
/// Made first on a thread, so destroyed last of its thread_locals: from then on, through ctxlocal's
/// thread-exit teardown, every allocation on that thread fails.
struct FailAllocationsFromHere {
    ~FailAllocationsFromHere() { fail_every_allocation = true; }
};
}  // namespace

TEST_CASE("Local.AllocationFailure.thread_exit_destroys_values_without_allocating" *
          doctest::skip(no_allocation_injection) * doctest::timeout(30)) {
    live = 0;
    std::vector<std::unique_ptr<ctxlocal::Local<Probe>>> locals;  // enough that the thread's table grows
    for (int i = 0; i < 40; ++i) locals.push_back(std::make_unique<ctxlocal::Local<Probe>>());
    std::thread([&] {
        thread_local FailAllocationsFromHere fail_from_here;
        (void)&fail_from_here;
        for (auto& local : locals) local->emplace(1);
        CHECK(live == 40);
    }).join();  // std::terminate here if the teardown allocated
    CHECK(live == 0);
    for (auto& local : locals) CHECK(local->count() == 0);
}

TEST_CASE("Local.AllocationFailure.destroying_a_local_allocates_nothing" *
          doctest::skip(no_allocation_injection) * doctest::timeout(30)) {
    live = 0;
    constexpr int holders = 40;  // more values than one batch of the destroy loop
    auto* local = new ctxlocal::Local<Probe>();
    test_support::Latch ready(holders);
    test_support::Gate release;
    std::vector<std::thread> threads;
    for (int i = 0; i < holders; ++i) {
        threads.emplace_back([&, i] {
            local->emplace(i);
            ready.count_down();
            release.wait();
        });
    }
    ready.wait();
    local->emplace(-1);
    CHECK(live == holders + 1);
    fail_every_allocation = true;
    delete local;  // std::terminate here if it allocated
    fail_every_allocation = false;
    CHECK(live == 0);
    release.open();
    test_support::join_all(threads);
}

TEST_CASE("Local.ForEachThrows.propagates_and_stops" * doctest::timeout(30)) {
    ctxlocal::Local<int> local;
    std::atomic<int> ready{0};
    std::atomic<bool> done{false};
    std::vector<std::thread> holders;
    for (int i = 0; i < 3; ++i) {
        holders.emplace_back([&] {
            local.value() = 1;
            ++ready;
            while (!done) std::this_thread::yield();
        });
    }
    while (ready.load() < 3) std::this_thread::yield();
    int visits = 0;
    CHECK_THROWS_AS(local.for_each([&](int&) {
        ++visits;
        throw Boom("stop");
    }),
                    Boom);
    CHECK(visits == 1);  // the visit stopped at the throw
    // The registry lock was released: another thread can make a value.
    std::thread([&] { local.value() = 2; }).join();
    done = true;
    test_support::join_all(holders);
    CHECK(local.count() == 0);
}

// ---------------------------------------------------------------------------------------------------
// LocalStack

TEST_CASE("LocalStack.PushThrows.stack_unchanged") {
    ctxlocal::LocalStack<Touchy> stack;
    stack.push(Touchy(1));
    stack.push(Touchy(2));
    Touchy::armed = true;
    CHECK_THROWS_AS(stack.push(Touchy(3)), Boom);  // the prvalue is not moved; push's own move throws
    Touchy::armed = false;
    REQUIRE(stack.size() == 2);
    CHECK(stack.top()->value == 2);
    CHECK(stack.pop()->value == 2);
    CHECK(stack.pop()->value == 1);
}

TEST_CASE("LocalStack.EmplaceThrows.stack_unchanged") {
    live = 0;
    {
        ctxlocal::LocalStack<Probe> stack;
        CHECK_THROWS_AS((void)stack.emplace(0, true), Boom);
        CHECK(stack.empty());
        Probe& bottom = stack.emplace(1);
        CHECK_THROWS_AS((void)stack.emplace(2, true), Boom);
        CHECK(stack.size() == 1);
        CHECK(stack.top() == &bottom);
        CHECK(bottom.value == 1);
        CHECK(live.load() == 1);
    }
    CHECK(live.load() == 0);
}

TEST_CASE("LocalStack.AllocationFailure.push_leaves_stack_unchanged" *
          doctest::skip(no_allocation_injection)) {
    live = 0;
    {
        ctxlocal::LocalStack<Probe> stack;
        int injected = 0;
        for (int i = 0; i < 20; ++i) {  // crosses several capacity growths
            const std::size_t size = stack.size();
            const Probe* top = stack.top();
            const int top_value = top == nullptr ? -1 : top->value;
            injected += sweep_allocation_failures(
                [&] { stack.push(Probe(i)); },
                [&] {
                    REQUIRE(stack.size() == size);
                    CHECK((stack.top() == nullptr ? -1 : stack.top()->value) == top_value);
                    CHECK(live.load() == static_cast<int>(size));
                });
        }
        CHECK(injected > 0);
        for (int i = 19; i >= 0; --i) CHECK(stack.pop()->value == i);
    }
    CHECK(live.load() == 0);
}

// ---------------------------------------------------------------------------------------------------
// Namespace

TEST_CASE("Namespace.SetThrows.nothing_changes") {
    ctxlocal::Namespace ns;
    ns.set("a", 1);
    ns.set("t", Touchy(7));
    Touchy::armed = true;
    const Touchy source(8);
    CHECK_THROWS_AS(ns.set("t", source), Boom);    // replacing: the old value stays
    CHECK_THROWS_AS(ns.set("new", source), Boom);  // adding: no new name
    Touchy::armed = false;
    CHECK(ns.size() == 2);
    CHECK_FALSE(ns.contains("new"));
    CHECK(ns.get<Touchy>("t").value == 7);
    CHECK(ns.get<int>("a") == 1);
    std::vector<std::string> names(ns.begin(), ns.end());
    CHECK(names == std::vector<std::string>{"a", "t"});
}

TEST_CASE("Namespace.AllocationFailure.set_changes_nothing" * doctest::skip(no_allocation_injection)) {
    ctxlocal::Namespace ns;
    ns.set("a", std::string(100, 'a'));
    const std::string big(200, 'b');
    int injected = sweep_allocation_failures([&] { ns.set("a", big); },  // replace
                                             [&] {
                                                 CHECK(ns.size() == 1);
                                                 CHECK(ns.get<std::string>("a") == std::string(100, 'a'));
                                             });
    injected +=
        sweep_allocation_failures([&] { ns.set("a long name that does not fit inline", big); },  // add
                                  [&] {
                                      CHECK(ns.size() == 1);
                                      CHECK_FALSE(ns.contains("a long name that does not fit inline"));
                                  });
    CHECK(injected >= 2);
    CHECK(ns.size() == 2);
    CHECK(ns.get<std::string>("a") == big);
}

TEST_CASE("Namespace.AllocationFailure.set_of_a_move_only_value_keeps_the_argument" *
          doctest::skip(no_allocation_injection)) {
    /// Move-only and too large to be stored inline: storing it allocates.
    struct Cargo {
        std::unique_ptr<int> payload;
        char padding[64];
    };
    ctxlocal::Namespace ns;
    ns.set("n0", 0);
    ns.set("n1", 1);
    ns.set("n2", 2);
    ns.set("cargo", Cargo{std::make_unique<int>(1), {}});
    const std::vector<std::string> names(ns.begin(), ns.end());  // 4 names: adding a fifth grows the storage
    auto unchanged = [&] {
        CHECK(std::vector<std::string>(ns.begin(), ns.end()) == names);
        CHECK(*ns.get<Cargo>("cargo").payload == 1);
    };
    Cargo replacing{std::make_unique<int>(2), {}};
    int injected = sweep_allocation_failures([&] { ns.set("cargo", std::move(replacing)); },
                                             [&] {
                                                 unchanged();
                                                 REQUIRE(replacing.payload != nullptr);  // not moved from
                                                 CHECK(*replacing.payload == 2);
                                             });
    CHECK(*ns.get<Cargo>("cargo").payload == 2);
    ns.set("cargo", Cargo{std::make_unique<int>(1), {}});
    Cargo adding{std::make_unique<int>(3), {}};
    injected += sweep_allocation_failures(
        [&] { ns.set("a name longer than the small string buffer", std::move(adding)); },
        [&] {
            unchanged();
            REQUIRE(adding.payload != nullptr);  // not moved from
            CHECK(*adding.payload == 3);
        });
    CHECK(injected >= 4);  // the value when replacing; the name, the storage and the value when adding
    CHECK(ns.size() == names.size() + 1);
    CHECK(*ns.get<Cargo>("a name longer than the small string buffer").payload == 3);
}

TEST_CASE("Namespace.EmplaceThrows.nothing_changes") {
    live = 0;
    {
        ctxlocal::Namespace ns;
        ns.set("a", 1);
        ns.emplace<Probe>("p", 7);
        CHECK_THROWS_AS(ns.emplace<Probe>("p", 8, true), Boom);    // replacing: the old value stays
        CHECK_THROWS_AS(ns.emplace<Probe>("new", 8, true), Boom);  // adding: no new name
        CHECK(live.load() == 1);
        CHECK(ns.get<Probe>("p").value == 7);
        std::vector<std::string> names(ns.begin(), ns.end());
        CHECK(names == std::vector<std::string>{"a", "p"});
    }
    CHECK(live.load() == 0);
}

TEST_CASE("Namespace.PopThrows.name_stays_set") {
    ctxlocal::Namespace ns;
    ns.set("t", Touchy(7));
    ns.set("z", 1);
    Touchy::armed = true;  // Touchy's move may throw, so pop copies it: the copy throws
    CHECK_THROWS_AS((void)ns.pop<Touchy>("t"), Boom);
    Touchy::armed = false;
    CHECK(ns.get<Touchy>("t").value == 7);
    std::vector<std::string> names(ns.begin(), ns.end());
    CHECK(names == std::vector<std::string>{"t", "z"});
    CHECK(ns.pop<Touchy>("t").value == 7);
    CHECK_FALSE(ns.contains("t"));
}

// ---------------------------------------------------------------------------------------------------
// Contexts

namespace {

struct App : ctxlocal::AppHooks {};
struct Req {
    int id = 0;
};
using web = ctxlocal::Contexts<App, Req>;

struct Incidents {
    std::mutex mutex;
    std::vector<ctxlocal::Incident> seen;
};
Incidents incidents;

void record_incident(const ctxlocal::Incident& incident) {
    std::lock_guard<std::mutex> lock(incidents.mutex);
    incidents.seen.push_back(incident);
}

/// Installs record_incident for the test case and restores the default afterwards.
struct IncidentScope {
    IncidentScope() {
        std::lock_guard<std::mutex> lock(incidents.mutex);
        incidents.seen.clear();
        web::set_incident_handler(&record_incident);
    }
    ~IncidentScope() { web::set_incident_handler(nullptr); }
    std::vector<ctxlocal::Incident> take() {
        std::lock_guard<std::mutex> lock(incidents.mutex);
        std::vector<ctxlocal::Incident> out;
        out.swap(incidents.seen);
        return out;
    }
};

/// An App with request callbacks r1, r2 and app callbacks a1, a2; the named ones throw Boom(name).
/// Each logs "<name>" and whether it got an exception ("<name>!"), plus what it could see.
struct Recorder {
    App app;
    std::vector<std::string> log;
    std::vector<std::exception_ptr> errors_seen;
    std::vector<std::string> throwing;

    explicit Recorder(std::vector<std::string> throw_in = {}) : throwing(std::move(throw_in)) {
        add(true, "r1");
        add(true, "r2");
        add(false, "a1");
        add(false, "a2");
    }
    void add(bool request, std::string name) {
        auto fn = [this, request, name](std::exception_ptr error) {
            log.push_back(name);
            errors_seen.push_back(error);
            // Request teardown sees the request; app teardown sees the app and g but no request.
            CHECK(web::has_request_context() == request);
            CHECK(web::has_app_context());
            CHECK(web::g.get() != nullptr);
            for (const std::string& t : throwing) {
                if (t == name) throw Boom(name);
            }
        };
        if (request) {
            app.teardown_request(fn);
        } else {
            app.teardown_appcontext(fn);
        }
    }
};

const std::vector<std::string> full_order{"r2", "r1", "a2", "a1"};

void check_popped() {
    CHECK(web::app_context_depth() == 0);
    CHECK(web::request_context_depth() == 0);
    CHECK_FALSE(web::has_app_context());
    CHECK_FALSE(web::has_request_context());
}

std::vector<std::string> messages(const std::vector<std::exception_ptr>& errors) {
    std::vector<std::string> out;
    for (const std::exception_ptr& e : errors) out.push_back(ctxlocal::detail::message_of(e));
    return out;
}

}  // namespace

TEST_CASE("Contexts.AllocationFailure.push_changes_nothing" * doctest::skip(no_allocation_injection)) {
    // On a fresh thread, so that the first pushes allocate (the thread's state and frames).
    std::thread([] {
        App app;
        web::AppContext app_ctx{app};
        web::RequestContext req_ctx{app, Req{1}};
        int injected = sweep_allocation_failures([&] { app_ctx.push(); },
                                                 [&] {
                                                     CHECK(web::app_context_depth() == 0);
                                                     CHECK_FALSE(web::has_app_context());
                                                 });
        CHECK(web::current_app.get() == &app);
        App other;
        web::RequestContext other_req{other, Req{2}};  // pushes an implicit app context for `other`
        injected += sweep_allocation_failures([&] { other_req.push(); },
                                              [&] {
                                                  CHECK(web::app_context_depth() == 1);
                                                  CHECK(web::request_context_depth() == 0);
                                                  CHECK(web::current_app.get() == &app);
                                              });
        CHECK(injected >= 1);
        CHECK(web::app_context_depth() == 2);
        CHECK(web::request->id == 2);
        other_req.pop();
        app_ctx.pop();
        check_popped();
    }).join();
}

TEST_CASE("Contexts.AllocationFailure.teardown_errors_are_collected_without_allocating" *
          doctest::skip(no_allocation_injection)) {
    // A context destroyed while pushed is popped from its (noexcept) destructor; its callbacks' exceptions
    // are collected there. With every allocation failing, collecting them must not allocate (that would
    // end in std::terminate); the incidents, whose messages need memory, are dropped.
    App app;
    int ran = 0;
    for (int i = 0; i < 10; ++i) {  // more than are kept inline
        app.teardown_request([&](std::exception_ptr) {
            ++ran;
            throw 1;  // an int: the exception object comes from the runtime, not operator new
        });
    }
    {
        web::RequestContext doomed{app, Req{1}};
        doomed.push();
        fail_every_allocation = true;
    }  // std::terminate here if collecting the errors allocated
    fail_every_allocation = false;
    CHECK(ran == 10);
    check_popped();
}

TEST_CASE("Contexts.TeardownThrows.one_callback_rethrown_after_full_pop") {
    Recorder rec({"r1"});
    web::RequestContext ctx{rec.app, Req{1}};
    ctx.push();
    web::g->set("x", 1);
    CHECK_THROWS_WITH_AS(ctx.pop(), "r1", Boom);  // the exception itself, not a teardown_error
    CHECK(rec.log == full_order);                 // every callback ran, in order
    check_popped();
    CHECK_THROWS_AS(ctx.pop(), ctxlocal::context_error);  // really popped: nothing left to pop
}

TEST_CASE("Contexts.TeardownThrows.several_callbacks_teardown_error") {
    Recorder rec({"r2", "r1", "a1"});
    web::RequestContext ctx{rec.app, Req{1}};
    ctx.push();
    try {
        ctx.pop();
        FAIL("pop() did not throw");
    } catch (const ctxlocal::teardown_error& e) {
        CHECK(messages(e.errors()) == std::vector<std::string>{"r2", "r1", "a1"});  // in the order thrown
        const std::string what = e.what();
        CHECK(what.find("3 teardown callbacks threw") != std::string::npos);
        CHECK(what.find("r2; r1; a1") != std::string::npos);
    }
    CHECK(rec.log == full_order);
    check_popped();
}

TEST_CASE("Contexts.TeardownThrows.app_context_pop") {
    live = 0;
    Recorder rec({"a2", "a1"});
    web::AppContext ctx{rec.app};
    ctx.push();
    web::g->set("probe", Probe(1));
    CHECK(live.load() == 1);
    try {
        ctx.pop();
        FAIL("pop() did not throw");
    } catch (const ctxlocal::teardown_error& e) {
        CHECK(messages(e.errors()) == std::vector<std::string>{"a2", "a1"});
    }
    CHECK(rec.log == std::vector<std::string>{"a2", "a1"});
    CHECK(live.load() == 0);  // g was destroyed with the popped context
    check_popped();
}

TEST_CASE("Contexts.TeardownThrows.run_throws_teardown_error") {
    IncidentScope scope;
    Recorder rec({"a2"});
    web::RequestContext ctx{rec.app, Req{1}};
    CHECK_THROWS_WITH_AS(ctx.run([] { return 5; }), "a2", Boom);
    CHECK(rec.log == full_order);
    for (const std::exception_ptr& e : rec.errors_seen) CHECK(e == nullptr);  // f returned normally
    check_popped();
    CHECK(scope.take().empty());
}

TEST_CASE("Contexts.TeardownThrows.run_keeps_callers_exception") {
    IncidentScope scope;
    Recorder rec({"r2", "a1"});
    web::RequestContext ctx{rec.app, Req{1}};
    CHECK_THROWS_WITH_AS(ctx.run([]() -> int { throw std::logic_error("handler failed"); }), "handler failed",
                         std::logic_error);
    CHECK(rec.log == full_order);
    for (const std::exception_ptr& e : rec.errors_seen) {
        CHECK(ctxlocal::detail::message_of(e) == "handler failed");  // teardown got f's exception
    }
    check_popped();
    const std::vector<ctxlocal::Incident> seen = scope.take();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].kind == ctxlocal::Incident::Kind::suppressed_teardown_error);
    CHECK(seen[0].message.find("r2") != std::string::npos);
    CHECK(seen[0].message.find("a1") != std::string::npos);
    try {
        std::rethrow_exception(seen[0].error);
    } catch (const ctxlocal::teardown_error& e) {
        CHECK(messages(e.errors()) == std::vector<std::string>{"r2", "a1"});
    } catch (...) {
        FAIL("the incident does not carry the teardown_error");
    }
}

TEST_CASE("Contexts.TeardownThrows.scope_guard_throws_on_normal_exit") {
    IncidentScope scope;
    Recorder rec({"r1", "a2"});
    web::RequestContext ctx{rec.app, Req{1}};
    bool caught = false;
    try {
        auto guard = ctx.scope();
        CHECK(web::request->id == 1);
    } catch (const ctxlocal::teardown_error& e) {
        caught = true;
        CHECK(messages(e.errors()) == std::vector<std::string>{"r1", "a2"});
    }
    CHECK(caught);  // the guard's destructor threw
    CHECK(rec.log == full_order);
    check_popped();
    CHECK(scope.take().empty());
}

TEST_CASE("Contexts.TeardownThrows.scope_guard_reports_while_unwinding") {
    IncidentScope scope;
    Recorder rec({"r1"});
    web::RequestContext ctx{rec.app, Req{1}};
    try {
        auto guard = ctx.scope();
        throw std::logic_error("body failed");
    } catch (const std::logic_error& e) {
        CHECK(std::string(e.what()) == "body failed");  // the propagating exception is unchanged
    }
    CHECK(rec.log == full_order);
    for (const std::exception_ptr& e : rec.errors_seen) CHECK(e == nullptr);  // a guard cannot see it
    check_popped();
    const std::vector<ctxlocal::Incident> seen = scope.take();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].kind == ctxlocal::Incident::Kind::suppressed_teardown_error);
    CHECK(ctxlocal::detail::message_of(seen[0].error) == "r1");
}

TEST_CASE("Contexts.TeardownThrows.handle_throws_after_popping") {
    IncidentScope scope;
    Recorder rec({"r2", "a2"});
    bool ran = false;
    try {
        (void)web::handle(rec.app, Req{1}, [&](Req& r) {
            ran = true;
            return r.id;
        });
        FAIL("handle() did not throw");
    } catch (const ctxlocal::teardown_error& e) {
        CHECK(messages(e.errors()) == std::vector<std::string>{"r2", "a2"});
        check_popped();  // everything was popped before the throw
    }
    CHECK(ran);
    CHECK(rec.log == full_order);
    CHECK(scope.take().empty());
}

TEST_CASE("Contexts.TeardownThrows.handle_keeps_handlers_exception") {
    IncidentScope scope;
    Recorder rec({"r1", "a1"});
    CHECK_THROWS_WITH_AS(
        web::handle(rec.app, Req{1}, []() -> int { throw std::logic_error("handler failed"); }),
        "handler failed", std::logic_error);
    CHECK(rec.log == full_order);
    for (const std::exception_ptr& e : rec.errors_seen)
        CHECK(ctxlocal::detail::message_of(e) == "handler failed");
    check_popped();
    const std::vector<ctxlocal::Incident> seen = scope.take();
    REQUIRE(seen.size() == 2);  // one incident per teardown error
    CHECK(seen[0].kind == ctxlocal::Incident::Kind::suppressed_teardown_error);
    CHECK(seen[1].kind == ctxlocal::Incident::Kind::suppressed_teardown_error);
    CHECK(ctxlocal::detail::message_of(seen[0].error) == "r1");
    CHECK(ctxlocal::detail::message_of(seen[1].error) == "a1");
}
