// Steady-state allocation guarantees: once a thread has done an operation before (the warm-up), doing it
// again allocates nothing. The documented promises tested here:
// - LocalStack: "a push/pop pair allocates nothing in steady state" (local_stack.hpp);
// - AppContext / RequestContext push: "May allocate on a thread's first pushes; never in steady state", and
//   Contexts: "Push/pop allocate nothing once a thread's stacks have been as deep before" (context.hpp);
// - reads: Local::get() "never allocates"; `request->field` "is a thread-local read and two loads";
//   LocalProxy::get() "Never throws, never allocates".
//
// How: this file replaces the global allocation functions (every form of operator new and operator
// delete) with ones that count the calling thread's allocations in a thread_local counter, then forward
// to malloc/free. Each test does one warm-up iteration, then kIterations more, and CHECKs that the counter
// did not move. The control case checks that the counter does count (a `new int` counts 1), so a broken
// counter fails the test instead of making every other case pass vacuously.
//
// web::handle(): an rvalue Request is bound where it is, an lvalue Request is copied on the stack, and a
// std::shared_ptr<Request> made beforehand is shared (a reference count increment): each case checks 0
// allocations per call.
//
// Where counting cannot work, the operations still run but their counts are not checked, and each test
// says so with a MESSAGE:
// - ThreadSanitizer's runtime defines every operator new itself, in the same static archive as symbols it
//   needs, so replacing them fails to link: under TSan this file does not replace them.
//   (AddressSanitizer's are replaceable: under ASan the counting runs and is checked.)
// - Under valgrind, memcheck may replace operator new itself, so that ours never runs: each test detects
//   that (a `new int` counted nothing) and, only when running under valgrind, skips its counting.
// In any other build a counter that does not count fails every test, the control first.
#include <doctest/doctest.h>
#include <ctxlocal/ctxlocal.hpp>
#include "support/environment.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

// ---------------------------------------------------------------------------------------------------------
// The counting allocation functions.

// ThreadSanitizer: its runtime's operator new cannot be replaced (see the top of the file).
#if defined(__SANITIZE_THREAD__)
#define CTXLOCAL_TEST_COUNTS_ALLOCATIONS 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CTXLOCAL_TEST_COUNTS_ALLOCATIONS 0
#endif
#endif
#ifndef CTXLOCAL_TEST_COUNTS_ALLOCATIONS
#define CTXLOCAL_TEST_COUNTS_ALLOCATIONS 1
#endif

namespace {

/// Allocations made by the calling thread. Static TLS of a trivial type: reading and bumping it never
/// allocates, and other threads (e.g. a sanitizer's) do not disturb the count of the test's thread.
thread_local std::uint64_t thread_allocations = 0;

}  // namespace

#if CTXLOCAL_TEST_COUNTS_ALLOCATIONS
// The replacements are never inlined: every new and delete of the program then goes through one symbol
// each. Under valgrind, which redirects these symbols to its own allocator, that keeps allocation and
// deallocation consistent (inlined copies would pair valgrind's operator new with our free(), or the
// reverse).
namespace {

void* counted_new(std::size_t n) {
    ++thread_allocations;
    if (n == 0) n = 1;
    if (void* p = std::malloc(n)) return p;
    throw std::bad_alloc();
}

void* counted_new_aligned(std::size_t n, std::align_val_t al) {
    ++thread_allocations;
    const auto a = static_cast<std::size_t>(al);
    if (n == 0) n = 1;
    n = (n + a - 1) / a * a;  // aligned_alloc wants a multiple of the alignment
    if (void* p = std::aligned_alloc(a, n)) return p;
    throw std::bad_alloc();
}

}  // namespace

CTXLOCAL_NOINLINE void* operator new(std::size_t n) { return counted_new(n); }
CTXLOCAL_NOINLINE void* operator new[](std::size_t n) { return counted_new(n); }
CTXLOCAL_NOINLINE void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    try {
        return counted_new(n);
    } catch (...) {
        return nullptr;
    }
}
CTXLOCAL_NOINLINE void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
    try {
        return counted_new(n);
    } catch (...) {
        return nullptr;
    }
}
CTXLOCAL_NOINLINE void* operator new(std::size_t n, std::align_val_t a) { return counted_new_aligned(n, a); }
CTXLOCAL_NOINLINE void* operator new[](std::size_t n, std::align_val_t a) {
    return counted_new_aligned(n, a);
}
CTXLOCAL_NOINLINE void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    try {
        return counted_new_aligned(n, a);
    } catch (...) {
        return nullptr;
    }
}
CTXLOCAL_NOINLINE void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    try {
        return counted_new_aligned(n, a);
    } catch (...) {
        return nullptr;
    }
}
CTXLOCAL_NOINLINE void operator delete(void* p) noexcept { std::free(p); }
CTXLOCAL_NOINLINE void operator delete[](void* p) noexcept { std::free(p); }
CTXLOCAL_NOINLINE void operator delete(void* p, std::size_t) noexcept { std::free(p); }
CTXLOCAL_NOINLINE void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
CTXLOCAL_NOINLINE void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
CTXLOCAL_NOINLINE void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
CTXLOCAL_NOINLINE void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
CTXLOCAL_NOINLINE void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
CTXLOCAL_NOINLINE void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
CTXLOCAL_NOINLINE void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
CTXLOCAL_NOINLINE void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
    std::free(p);
}
CTXLOCAL_NOINLINE void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
    std::free(p);
}
#endif  // CTXLOCAL_TEST_COUNTS_ALLOCATIONS

namespace {

constexpr int kIterations = 1000;

// ---------------------------------------------------------------------------------------------------------
// Helpers.

/// Where results go, so that the compiler cannot drop the work (or an allocation) that made them.
volatile long sink = 0;

/// Keeps a value observable.
void keep(long value) { sink = sink + value; }

/// Allocates and frees one int with a new-expression the compiler cannot elide (the pointer escapes
/// through a volatile). Counts 1 when the counting operator new is in use.
void allocate_one_int() {
    int* volatile p = new int(1);
    delete p;
}

using test_support::under_valgrind;

/// True when our operator new is the one that runs.
bool counting_works() {
    const std::uint64_t before = thread_allocations;
    allocate_one_int();
    return thread_allocations - before == 1;
}

/// True when the test should check its counts. False, saying so with a MESSAGE, under ThreadSanitizer
/// (no counting operator new) and under valgrind with our operator new replaced by valgrind's. In any other
/// run a counter that does not count fails here.
bool can_count() {
    if (!CTXLOCAL_TEST_COUNTS_ALLOCATIONS) {
        MESSAGE(
            "built with ThreadSanitizer, whose operator new cannot be replaced: allocation counting skipped");
        return false;
    }
    if (counting_works()) return true;
    if (under_valgrind()) {
        MESSAGE("valgrind replaced the counting operator new: allocation counting skipped");
        return false;
    }
    FAIL("the counting operator new did not count a `new int`: the allocation checks would prove nothing");
    return false;
}

/// Runs `op` once (warm-up: a thread's first pushes may allocate), then kIterations times, and returns
/// how many allocations the kIterations calls made on this thread.
template <class Op>
std::uint64_t steady_state_allocations(Op&& op) {
    op();
    const std::uint64_t before = thread_allocations;
    for (int i = 0; i < kIterations; ++i) op();
    return thread_allocations - before;
}

/// CHECKs `expr` (a comparison of steady_state_allocations(...)) when the test counts (a local `counting`,
/// from can_count()); otherwise still evaluates it, so that the operations run (e.g. under
/// ThreadSanitizer), and checks nothing.
#define CHECK_ALLOCATIONS(expr) \
    do {                        \
        if (counting) {         \
            CHECK(expr);        \
        } else {                \
            (void)(expr);       \
        }                       \
    } while (false)

// ---------------------------------------------------------------------------------------------------------
// Types for the contexts.

/// An application without teardown callbacks (the short pop path).
struct App : ctxlocal::AppHooks {
    std::string name = "shop";
};

/// An application type that does not derive from AppHooks.
struct PlainApp {
    int id = 1;
};

struct Req {
    long field = 0;
    int id = 0;
};

using web = ctxlocal::Contexts<App, Req>;
using plain_web = ctxlocal::Contexts<PlainApp, Req>;

/// A trivially copyable stack element.
struct Frame {
    int a;
    double b;
    const void* c;
};
static_assert(std::is_trivially_copyable_v<Frame>);

// ---------------------------------------------------------------------------------------------------------
// Control.

// Guarantee of the harness: the counter counts every form of operator new, one per allocation, on the
// calling thread, and steady_state_allocations() sees allocations made in its loop. Without this the 0s
// below could come from a counter that never counts.
TEST_CASE("ContextAlloc.Control.counter_counts") {
    if (!can_count()) return;
    struct alignas(64) Wide {
        char bytes[64];
    };
    std::uint64_t before = thread_allocations;
    allocate_one_int();
    CHECK(thread_allocations - before == 1);

    before = thread_allocations;
    int* volatile array = new int[3];
    delete[] array;
    CHECK(thread_allocations - before == 1);

    before = thread_allocations;
    int* volatile nothrow = new (std::nothrow) int(2);
    delete nothrow;
    CHECK(thread_allocations - before == 1);

    before = thread_allocations;
    Wide* volatile wide = new Wide();
    CHECK(reinterpret_cast<std::uintptr_t>(static_cast<Wide*>(wide)) % 64 == 0);
    delete wide;
    CHECK(thread_allocations - before == 1);

    // The steady-state harness counts what its loop allocates (the warm-up call excluded).
    CHECK(steady_state_allocations(allocate_one_int) == static_cast<std::uint64_t>(kIterations));
    // And a library operation that does allocate is seen: emplace() makes a new value each time.
    ctxlocal::Local<int> local;
    CHECK(steady_state_allocations([&] { local.emplace(1); }) >= static_cast<std::uint64_t>(kIterations));
}

// ---------------------------------------------------------------------------------------------------------
// Local and LocalStack.

// Guarantee: LocalStack push+pop of a trivially copyable T allocates nothing once the thread's stack has
// been as deep before ("pop keeps the capacity").
TEST_CASE("ContextAlloc.LocalStack.push_pop_steady_state_is_zero") {
    const bool counting = can_count();
    ctxlocal::LocalStack<Frame> stack;
    long sum = 0;

    SUBCASE("one deep") {
        CHECK_ALLOCATIONS(steady_state_allocations([&] {
                              stack.push(Frame{1, 2.0, nullptr});
                              sum += stack.top()->a;
                              sum += stack.pop()->a;
                          }) == 0);
    }
    SUBCASE("three deep") {
        CHECK_ALLOCATIONS(steady_state_allocations([&] {
                              stack.push(Frame{1, 2.0, nullptr});
                              stack.emplace(Frame{2, 3.0, &sum});
                              stack.push(Frame{3, 4.0, nullptr});
                              for (int i = 0; i < 3; ++i) sum += stack.pop()->a;
                          }) == 0);
    }
    SUBCASE("int elements") {
        ctxlocal::LocalStack<int> ints;
        CHECK_ALLOCATIONS(steady_state_allocations([&] {
                              ints.push(4);
                              sum += *ints.pop();
                          }) == 0);
        ints.clear();
    }
    keep(sum);
    CHECK(stack.empty());
    stack.clear();
}

// Guarantee: Local::get() (and has_value(), value() of an existing value) never allocate, whether or not
// the thread has a value.
TEST_CASE("ContextAlloc.Local.get_is_zero") {
    const bool counting = can_count();
    ctxlocal::Local<int> with_value;
    ctxlocal::Local<int> without_value;
    ctxlocal::Local<std::string> text;
    with_value.value() = 3;
    text.value() = std::string(100, 'x');  // a heap-allocated string: reading it must not copy it
    long sum = 0;
    CHECK_ALLOCATIONS(steady_state_allocations([&] {
                          sum += *with_value.get();
                          sum += without_value.get() == nullptr ? 1 : 0;
                          sum += with_value.has_value() ? 1 : 0;
                          sum += with_value.value();
                          sum += static_cast<long>(text.get()->size());
                      }) == 0);
    keep(sum);
    CHECK(sum == (3 + 1 + 1 + 3 + 100) * (kIterations + 1));
}

// ---------------------------------------------------------------------------------------------------------
// Contexts.

// Guarantee: AppContext push+pop allocates nothing in steady state, through push()/pop(), scope() and
// run(), nested, for an App that does not derive from AppHooks, and with a teardown callback to run.
TEST_CASE("ContextAlloc.AppContext.push_pop_steady_state_is_zero") {
    const bool counting = can_count();
    App app;
    const web::AppContext ctx{app};
    long sum = 0;

    SUBCASE("push and pop") {
        CHECK_ALLOCATIONS(steady_state_allocations([&] {
                              ctx.push();
                              sum += static_cast<long>(web::current_app->name.size());
                              ctx.pop();
                          }) == 0);
    }
    SUBCASE("scope()") {
        CHECK_ALLOCATIONS(steady_state_allocations([&] {
                              auto guard = ctx.scope();
                              sum += web::has_app_context() ? 1 : 0;
                          }) == 0);
    }
    SUBCASE("run()") {
        CHECK_ALLOCATIONS(steady_state_allocations([&] { sum += ctx.run([] { return 1L; }); }) == 0);
    }
    SUBCASE("nested: the same context twice, and a second one") {
        App other_app;
        const web::AppContext other{other_app};
        CHECK_ALLOCATIONS(steady_state_allocations([&] {
                              ctx.push();
                              ctx.push();
                              other.push();
                              sum += static_cast<long>(web::app_context_depth());
                              other.pop();
                              ctx.pop();
                              ctx.pop();
                          }) == 0);
    }
    SUBCASE("an App without AppHooks") {
        PlainApp plain;
        const plain_web::AppContext plain_ctx{plain};
        CHECK_ALLOCATIONS(steady_state_allocations([&] {
                              plain_ctx.push();
                              sum += plain_web::current_app->id;
                              plain_ctx.pop();
                          }) == 0);
    }
    SUBCASE("with a teardown_appcontext callback registered (the full pop path)") {
        App hooked;
        long teardowns = 0;
        hooked.teardown_appcontext([&teardowns](std::exception_ptr) { ++teardowns; });  // allocates, here
        const web::AppContext hooked_ctx{hooked};
        CHECK_ALLOCATIONS(steady_state_allocations([&] {
                              hooked_ctx.push();
                              sum += static_cast<long>(web::current_app->name.size());
                              hooked_ctx.pop();
                          }) == 0);
        CHECK(teardowns == kIterations + 1);
    }
    keep(sum);
    CHECK_FALSE(web::has_app_context());
}

// Guarantee: RequestContext push+pop allocates nothing in steady state: with the implicit application
// context it pushes and pops, inside an active application context for the same App (no implicit one),
// through scope() and run(), nested, and with teardown callbacks to run on each pop.
TEST_CASE("ContextAlloc.RequestContext.push_pop_steady_state_is_zero") {
    const bool counting = can_count();
    App app;
    const web::RequestContext ctx{app, Req{5, 1}};  // allocates once, here (the shared request)
    long sum = 0;

    SUBCASE("push and pop, with the implicit application context") {
        CHECK_ALLOCATIONS(steady_state_allocations([&] {
                              ctx.push();
                              sum += web::request->field;
                              ctx.pop();
                          }) == 0);
    }
    SUBCASE("inside an active application context for the same App") {
        const web::AppContext app_ctx{app};
        app_ctx.push();
        CHECK_ALLOCATIONS(steady_state_allocations([&] {
                              ctx.push();
                              sum += web::request->field;
                              ctx.pop();
                          }) == 0);
        app_ctx.pop();
    }
    SUBCASE("scope()") {
        CHECK_ALLOCATIONS(steady_state_allocations([&] {
                              auto guard = ctx.scope();
                              sum += web::request->id;
                          }) == 0);
    }
    SUBCASE("run()") {
        CHECK_ALLOCATIONS(
            steady_state_allocations([&] { sum += ctx.run([] { return web::request->field; }); }) == 0);
    }
    SUBCASE("nested: two request contexts") {
        const web::RequestContext inner{app, Req{6, 2}};
        CHECK_ALLOCATIONS(steady_state_allocations([&] {
                              ctx.push();
                              inner.push();
                              sum += web::request->field;
                              inner.pop();
                              ctx.pop();
                          }) == 0);
    }
    SUBCASE("with teardown callbacks registered (the full pop path)") {
        // Registering allocates (std::function), before the measurement. The callbacks allocate nothing.
        App hooked;
        long teardowns = 0;
        hooked.teardown_request([&teardowns](std::exception_ptr) { ++teardowns; });
        hooked.teardown_appcontext([&teardowns](std::exception_ptr) { ++teardowns; });
        const web::RequestContext hooked_ctx{hooked, Req{7, 3}};
        CHECK_ALLOCATIONS(steady_state_allocations([&] {
                              hooked_ctx.push();
                              sum += web::request->field;
                              hooked_ctx.pop();
                          }) == 0);
        CHECK(teardowns == 2 * (kIterations + 1));  // both callbacks ran on every pop
    }
    keep(sum);
    CHECK_FALSE(web::has_request_context());
    CHECK_FALSE(web::has_app_context());
}

// Guarantee: web::handle() allocates nothing in steady state, whether the request is a std::shared_ptr<Req>
// made beforehand (shared), a Req rvalue (bound where it is) or a Req lvalue (copied on the stack): the
// push, the handler's reads and g, the pop and the check for leftover contexts.
TEST_CASE("ContextAlloc.handle.steady_state") {
    const bool counting = can_count();
    App app;
    long sum = 0;

    SUBCASE("a request made beforehand: 0 allocations") {
        const auto request = std::make_shared<Req>(Req{8, 3});
        CHECK_ALLOCATIONS(steady_state_allocations([&] {
                              sum += web::handle(app, request, [] { return web::request->field; });
                          }) == 0);
        CHECK(request.use_count() == 1);  // handle() shared it only for the call
    }
    SUBCASE("a request made beforehand, handler taking Req&: 0 allocations") {
        const auto request = std::make_shared<Req>(Req{8, 3});
        CHECK_ALLOCATIONS(steady_state_allocations([&] {
                              sum += web::handle(app, request, [](Req& r) {
                                  return r.field + static_cast<long>(web::current_app->name.size());
                              });
                          }) == 0);
    }
    SUBCASE("a request by rvalue: 0 allocations") {
        CHECK_ALLOCATIONS(steady_state_allocations([&] {
                              sum += web::handle(app, Req{9, 4}, [] { return web::request->field; });
                          }) == 0);
    }
    SUBCASE("a request by lvalue (copied): 0 allocations") {
        const Req request{9, 4};
        CHECK_ALLOCATIONS(steady_state_allocations([&] {
                              sum += web::handle(app, request, [] { return web::request->field; });
                          }) == 0);
    }
    SUBCASE("a handler that sets a small value in g: 0 allocations") {
        // g (a Namespace) keeps its emptied storage for the next request on the thread.
        CHECK_ALLOCATIONS(steady_state_allocations([&] {
                              sum += web::handle(app, Req{9, 4}, [] {
                                  web::g->set("n", 5L);
                                  return web::g->get<long>("n");
                              });
                          }) == 0);
    }
    SUBCASE("a handler that sets a string literal in g (stored as a std::string): 0 allocations") {
        CHECK_ALLOCATIONS(steady_state_allocations([&] {
                              sum += web::handle(app, Req{9, 4}, [] {
                                  web::g->set("user", "ana");
                                  return static_cast<long>(web::g->get<std::string>("user").size());
                              });
                          }) == 0);
    }
    keep(sum);
    CHECK_FALSE(web::has_request_context());
    CHECK_FALSE(web::has_app_context());
}

// Guarantee: with a request context bound, reading request->field, current_app->field and the bound
// state (has_request_context(), has_app_context(), LocalProxy::get()) allocates nothing.
TEST_CASE("ContextAlloc.reads.request_field_and_current_app_are_zero") {
    const bool counting = can_count();
    App app;
    app.name = std::string(100, 'n');  // heap-allocated: a read must not copy it
    const web::RequestContext ctx{app, Req{11, 5}};
    auto guard = ctx.scope();
    long sum = 0;
    CHECK_ALLOCATIONS(steady_state_allocations([&] {
                          sum += web::request->field;
                          sum += (*web::request).id;
                          sum += static_cast<long>(web::current_app->name.size());
                          sum += web::request.get() != nullptr ? 1 : 0;
                          sum += web::has_request_context() && web::has_app_context() ? 1 : 0;
                      }) == 0);
    keep(sum);
    CHECK(sum == (11 + 5 + 100 + 1 + 1) * (kIterations + 1));
}

}  // namespace
