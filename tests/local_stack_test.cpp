// Tests for ctxlocal::LocalStack<T> (include/ctxlocal/local_stack.hpp): werkzeug's LocalStack behaviours,
// per-thread isolation, element lifetimes (pop and clear destroy, thread exit destroys), capacity reuse
// without allocation, exception safety and move-only elements.
#include <ctxlocal/local_stack.hpp>

#include <doctest/doctest.h>

#include "support/sync.hpp"

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

// ---------------------------------------------------------------------------------------------------------
// Allocation counting. The global operator new is replaced for this executable; it counts only on a thread
// that has set t_counting, so other threads and doctest's own bookkeeping outside the measured region are
// never counted. Clang's ThreadSanitizer runtime defines operator new itself (a replacement does not link),
// so under ThreadSanitizer the allocation tests are skipped; every other build runs them.
#if defined(__SANITIZE_THREAD__)
#define CTXLOCAL_TEST_COUNT_ALLOCATIONS 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CTXLOCAL_TEST_COUNT_ALLOCATIONS 0
#endif
#endif
#ifndef CTXLOCAL_TEST_COUNT_ALLOCATIONS
#define CTXLOCAL_TEST_COUNT_ALLOCATIONS 1
#endif

namespace {
thread_local bool t_counting = false;
thread_local std::size_t t_allocations = 0;

/// Counts the allocations the calling thread makes while it is alive.
class AllocationCounter {
public:
    AllocationCounter() noexcept {
        t_allocations = 0;
        t_counting = true;
    }
    ~AllocationCounter() { t_counting = false; }
    AllocationCounter(const AllocationCounter&) = delete;
    AllocationCounter& operator=(const AllocationCounter&) = delete;
    std::size_t stop() noexcept {
        t_counting = false;
        return t_allocations;
    }
};

constexpr bool no_allocation_counting = CTXLOCAL_TEST_COUNT_ALLOCATIONS == 0;
}  // namespace

#if CTXLOCAL_TEST_COUNT_ALLOCATIONS
namespace {
// Out of line, so that GCC does not pair an inlined free() with the replaceable operator new in its
// -Wmismatched-new-delete analysis.
[[gnu::noinline]] void* counted_malloc(std::size_t n) noexcept {
    if (t_counting) ++t_allocations;
    return std::malloc(n == 0 ? 1 : n);
}
[[gnu::noinline]] void counted_free(void* p) noexcept { std::free(p); }
}  // namespace

void* operator new(std::size_t n) {
    if (void* p = counted_malloc(n)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
    if (void* p = counted_malloc(n)) return p;
    throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted_malloc(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted_malloc(n); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { counted_free(p); }
#endif

namespace {

using test_support::Counted;

/// Its constructor throws while `fail` is set.
struct Fragile {
    static inline bool fail = false;
    int value;
    explicit Fragile(int v) : value(v) {
        if (fail) throw std::runtime_error("Fragile: constructor failed");
    }
};

using test_support::Gate;

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// werkzeug's LocalStack behaviours

TEST_CASE("LocalStack.Push.top_is_last_pushed") {
    ctxlocal::LocalStack<int> stack;
    stack.push(1);
    REQUIRE(stack.top() != nullptr);
    CHECK(*stack.top() == 1);
    stack.push(2);
    REQUIRE(stack.top() != nullptr);
    CHECK(*stack.top() == 2);
    CHECK(stack.size() == 2);
    stack.clear();
}

TEST_CASE("LocalStack.Pop.returns_elements_last_in_first_out") {
    ctxlocal::LocalStack<int> stack;
    stack.push(1);
    stack.push(2);
    stack.push(3);
    CHECK(stack.pop() == std::optional<int>(3));
    CHECK(stack.pop() == std::optional<int>(2));
    CHECK(*stack.top() == 1);
    CHECK(stack.pop() == std::optional<int>(1));
    CHECK(stack.empty());
}

TEST_CASE("LocalStack.Pop.empty_returns_nullopt") {
    ctxlocal::LocalStack<int> stack;
    SUBCASE("never used") {
        std::optional<int> popped = 42;
        CHECK_NOTHROW(popped = stack.pop());
        CHECK_FALSE(popped.has_value());
    }
    SUBCASE("emptied by pops") {
        stack.push(1);
        CHECK(stack.pop().has_value());
        std::optional<int> popped = 42;
        CHECK_NOTHROW(popped = stack.pop());
        CHECK_FALSE(popped.has_value());
    }
    SUBCASE("cleared") {
        stack.push(1);
        stack.clear();
        std::optional<int> popped = 42;
        CHECK_NOTHROW(popped = stack.pop());
        CHECK_FALSE(popped.has_value());
    }
    stack.clear();
}

TEST_CASE("LocalStack.Pop.is_noexcept_for_nothrow_movable_elements") {
    ctxlocal::LocalStack<int> ints;
    ctxlocal::LocalStack<std::unique_ptr<int>> pointers;
    static_assert(noexcept(ints.pop()), "pop() must not throw for int");
    static_assert(noexcept(pointers.pop()), "pop() must not throw for std::unique_ptr");
    static_assert(
        noexcept(ints.top())&& noexcept(ints.size())&& noexcept(ints.empty())&& noexcept(ints.clear()),
        "top/size/empty/clear never throw");
    CHECK_FALSE(ints.pop().has_value());
}

TEST_CASE("LocalStack.Top.nullptr_when_empty") {
    ctxlocal::LocalStack<int> stack;
    const ctxlocal::LocalStack<int>& view = stack;
    CHECK(stack.top() == nullptr);
    CHECK(view.top() == nullptr);
    stack.push(5);
    CHECK(stack.top() != nullptr);
    CHECK(view.top() == stack.top());
    stack.pop();
    CHECK(stack.top() == nullptr);
    CHECK(view.top() == nullptr);
}

TEST_CASE("LocalStack.Size.counts_the_calling_threads_elements") {
    ctxlocal::LocalStack<int> stack;
    CHECK(stack.size() == 0);
    CHECK(stack.empty());
    for (int i = 1; i <= 5; ++i) {
        stack.push(i);
        CHECK(stack.size() == static_cast<std::size_t>(i));
        CHECK_FALSE(stack.empty());
    }
    for (int i = 4; i >= 0; --i) {
        stack.pop();
        CHECK(stack.size() == static_cast<std::size_t>(i));
    }
    CHECK(stack.empty());
}

TEST_CASE("LocalStack.Read.never_creates_storage") {
    ctxlocal::LocalStack<int> stack;
    CHECK(stack.top() == nullptr);
    CHECK(stack.size() == 0);
    CHECK(stack.empty());
    CHECK_FALSE(stack.pop().has_value());
    stack.clear();
    CHECK_FALSE(stack.local().has_value());
    CHECK(stack.local().count() == 0);
}

TEST_CASE("LocalStack.Top.is_mutable_in_place") {
    ctxlocal::LocalStack<int> stack;
    stack.push(1);
    *stack.top() = 10;
    CHECK(stack.pop() == std::optional<int>(10));
}

TEST_CASE("LocalStack.Emplace.returns_reference_to_new_top") {
    ctxlocal::LocalStack<std::pair<int, int>> stack;
    stack.push({0, 0});
    std::pair<int, int>& top = stack.emplace(3, 4);
    CHECK(&top == stack.top());
    CHECK(top == std::make_pair(3, 4));
    CHECK(stack.size() == 2);
    top.first = 30;
    CHECK(stack.pop() == std::optional<std::pair<int, int>>({30, 4}));
    stack.clear();
}

// ---------------------------------------------------------------------------------------------------------
// Element lifetimes

TEST_CASE("LocalStack.Push.one_live_object_per_element") {
    Counted::live = 0;
    {
        ctxlocal::LocalStack<Counted> stack;
        stack.push(Counted(1));
        CHECK(Counted::live == 1);
        stack.emplace(2);
        CHECK(Counted::live == 2);
        Counted c(3);
        stack.push(c);
        CHECK(Counted::live == 4);  // three elements and c
    }
    CHECK(Counted::live == 0);
}

TEST_CASE("LocalStack.Pop.destroys_removed_element") {
    Counted::live = 0;
    ctxlocal::LocalStack<Counted> stack;
    stack.emplace(1);
    stack.emplace(2);
    REQUIRE(Counted::live == 2);
    SUBCASE("result dropped at once") {
        stack.pop();
        CHECK(Counted::live == 1);
    }
    SUBCASE("result kept, then dropped") {
        {
            std::optional<Counted> popped = stack.pop();
            REQUIRE(popped.has_value());
            CHECK(popped->value == 2);
            CHECK(Counted::live == 2);  // the result, and the element below it
        }
        CHECK(Counted::live == 1);
    }
    CHECK(stack.size() == 1);
    CHECK(stack.top()->value == 1);
    stack.clear();
    CHECK(Counted::live == 0);
}

TEST_CASE("LocalStack.Clear.destroys_elements_and_releases_storage") {
    Counted::live = 0;
    ctxlocal::LocalStack<Counted> stack;
    for (int i = 0; i < 5; ++i) stack.emplace(i);
    REQUIRE(Counted::live == 5);
    REQUIRE(stack.local().has_value());
    stack.clear();
    CHECK(Counted::live == 0);
    CHECK_FALSE(stack.local().has_value());
    CHECK(stack.size() == 0);
    CHECK(stack.top() == nullptr);
    // The stack is usable again afterwards.
    stack.emplace(7);
    CHECK(stack.top()->value == 7);
    stack.clear();
    CHECK(Counted::live == 0);
}

TEST_CASE("LocalStack.Clear.leaves_other_threads_elements" * doctest::timeout(30)) {
    Counted::live = 0;
    ctxlocal::LocalStack<Counted> stack;
    stack.emplace(1);
    std::size_t size_after_clear = 99;
    bool storage_after_clear = true;
    std::thread([&] {
        stack.emplace(2);
        stack.emplace(3);
        stack.clear();
        size_after_clear = stack.size();
        storage_after_clear = stack.local().has_value();
    }).join();
    CHECK(size_after_clear == 0);
    CHECK_FALSE(storage_after_clear);
    CHECK(stack.size() == 1);
    REQUIRE(stack.top() != nullptr);
    CHECK(stack.top()->value == 1);
    CHECK(Counted::live == 1);
    stack.clear();
}

TEST_CASE("LocalStack.ThreadExit.destroys_threads_elements" * doctest::timeout(30)) {
    for (int threads : {1, 2, 8}) {
        CAPTURE(threads);
        Counted::live = 0;
        ctxlocal::LocalStack<Counted> stack;
        std::vector<std::thread> pool;
        std::atomic<int> pushed{0};
        for (int t = 0; t < threads; ++t) {
            pool.emplace_back([&stack, &pushed, t] {
                for (int i = 0; i < 3; ++i) stack.emplace(t);
                pushed += static_cast<int>(stack.size());
            });
        }
        test_support::join_all(pool);
        CHECK(pushed == 3 * threads);
        CHECK(Counted::live == 0);
        CHECK(stack.local().count() == 0);
    }
}

TEST_CASE("LocalStack.Destroy.destroys_every_threads_elements" * doctest::timeout(30)) {
    Counted::live = 0;
    auto stack = std::make_unique<ctxlocal::LocalStack<Counted>>();
    Gate pushed;
    Gate destroyed;
    std::thread worker([&] {
        stack->emplace(1);
        stack->emplace(2);
        pushed.open();
        destroyed.wait();  // stays alive (not exiting) while the stack is destroyed
    });
    pushed.wait();
    stack->emplace(3);
    REQUIRE(Counted::live == 3);
    stack.reset();
    CHECK(Counted::live == 0);  // the worker's elements too, although the worker is still running
    destroyed.open();
    worker.join();
    CHECK(Counted::live == 0);
}

// ---------------------------------------------------------------------------------------------------------
// Capacity and allocation

TEST_CASE("LocalStack.Pop.keeps_capacity") {
    ctxlocal::LocalStack<int> stack;
    for (int i = 0; i < 4; ++i) stack.push(i);
    const std::size_t capacity = stack.local().get()->capacity();
    const std::vector<int>* storage = stack.local().get();
    while (stack.pop()) {
    }
    REQUIRE(stack.local().get() == storage);
    CHECK(stack.local().get()->capacity() == capacity);
    stack.clear();
}

TEST_CASE("LocalStack.PushPop.steady_state_allocates_nothing" * doctest::skip(no_allocation_counting)) {
    {
        // The counter sees allocations on this thread: otherwise the zero below would prove nothing.
        AllocationCounter counter;
        void* volatile p = ::operator new(16);  // a direct call: never elided, unlike a new-expression
        const std::size_t seen = counter.stop();
        ::operator delete(p);
        REQUIRE(seen == 1);
    }
    ctxlocal::LocalStack<Counted> stack;
    stack.emplace(0);
    stack.pop();  // warm up: the thread's table, the vector and its first buffer exist now
    const std::size_t capacity = stack.local().get()->capacity();
    REQUIRE(capacity >= 1);

    AllocationCounter counter;
    bool all_popped = true;
    for (int i = 0; i < 1000; ++i) {
        stack.push(Counted(i));
        all_popped = stack.pop().has_value() && all_popped;
        stack.emplace(i);
        all_popped = stack.pop().has_value() && all_popped;
    }
    const std::size_t allocations = counter.stop();

    CHECK(all_popped);
    CHECK(allocations == 0);
    CHECK(stack.local().get()->capacity() == capacity);
    stack.clear();
}

TEST_CASE("LocalStack.Push.within_capacity_allocates_nothing" * doctest::skip(no_allocation_counting)) {
    ctxlocal::LocalStack<int> stack;
    stack.push(0);
    stack.local().get()->reserve(16);
    stack.pop();
    AllocationCounter counter;
    for (int i = 0; i < 16; ++i) stack.push(i);
    const std::size_t allocations = counter.stop();
    CHECK(allocations == 0);
    CHECK(stack.size() == 16);
    stack.clear();
}

// ---------------------------------------------------------------------------------------------------------
// Exception safety

TEST_CASE("LocalStack.Emplace.throwing_constructor_leaves_stack_unchanged") {
    ctxlocal::LocalStack<Fragile> stack;
    Fragile::fail = false;
    stack.emplace(1);
    stack.emplace(2);
    SUBCASE("within capacity") { stack.local().get()->reserve(8); }
    SUBCASE("at capacity (would reallocate)") { stack.local().get()->shrink_to_fit(); }
    const Fragile* top = stack.top();
    const std::size_t capacity = stack.local().get()->capacity();

    Fragile::fail = true;
    CHECK_THROWS_AS(stack.emplace(3), std::runtime_error);
    Fragile::fail = false;

    CHECK(stack.size() == 2);
    CHECK(stack.top() == top);
    CHECK(stack.top()->value == 2);
    CHECK(stack.local().get()->capacity() == capacity);
    CHECK(stack.pop()->value == 2);
    CHECK(stack.pop()->value == 1);
    stack.clear();
}

// ---------------------------------------------------------------------------------------------------------
// Move-only elements

TEST_CASE("LocalStack.MoveOnly.unique_ptr_push_top_pop") {
    ctxlocal::LocalStack<std::unique_ptr<int>> stack;
    stack.push(std::make_unique<int>(1));
    std::unique_ptr<int>& second = stack.emplace(new int(2));
    CHECK(*second == 2);
    REQUIRE(stack.top() != nullptr);
    CHECK(**stack.top() == 2);
    std::optional<std::unique_ptr<int>> popped = stack.pop();
    REQUIRE(popped.has_value());
    REQUIRE(*popped != nullptr);
    CHECK(**popped == 2);
    CHECK(**stack.top() == 1);
    CHECK(*stack.pop().value() == 1);
    CHECK_FALSE(stack.pop().has_value());
}

// ---------------------------------------------------------------------------------------------------------
// Isolation

TEST_CASE("LocalStack.Isolation.threads_see_only_their_own_elements" * doctest::timeout(30)) {
    for (int threads : {1, 2, 8}) {
        CAPTURE(threads);
        ctxlocal::LocalStack<int> stack;
        stack.push(-1);  // the main thread's element, never visible to the workers
        Gate gate;
        std::atomic<int> mismatches{0};
        std::atomic<int> started_empty{0};
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t) {
            pool.emplace_back([&, id = t + 1] {
                if (stack.empty() && stack.top() == nullptr) ++started_empty;
                gate.wait();
                for (int round = 0; round < 200; ++round) {
                    for (int i = 0; i < 5; ++i) stack.push(id * 1000 + i);
                    if (stack.size() != 5) ++mismatches;
                    for (int i = 4; i >= 0; --i) {
                        const std::optional<int> popped = stack.pop();
                        if (popped != std::optional<int>(id * 1000 + i)) ++mismatches;
                    }
                    if (!stack.empty()) ++mismatches;
                }
                stack.push(id);
                std::this_thread::yield();
                if (stack.top() == nullptr || *stack.top() != id || stack.size() != 1) ++mismatches;
            });
        }
        gate.open();
        test_support::join_all(pool);
        CHECK(started_empty == threads);
        CHECK(mismatches == 0);
        CHECK(stack.size() == 1);
        REQUIRE(stack.top() != nullptr);
        CHECK(*stack.top() == -1);
        stack.clear();
    }
}
