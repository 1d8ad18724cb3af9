// Tests of ctxlocal::Storage, Storage::Scope, wrap and ThreadLocal (include/ctxlocal/storage.hpp,
// local.hpp): a task's values follow the task across threads, the thread's own values are untouched,
// an empty capture shows nothing of the executing thread, and every misuse has a defined outcome.
#include <doctest/doctest.h>
#include <ctxlocal/local.hpp>
#include <ctxlocal/local_stack.hpp>
#include <ctxlocal/manager.hpp>
#include <ctxlocal/storage.hpp>

#include "support/sync.hpp"
#include "support/threads.hpp"
#include "support/watchdog.hpp"

#include <atomic>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using ctxlocal::Local;
using ctxlocal::Storage;
using ctxlocal::ThreadLocal;
using test_support::Counted;
using test_support::Gate;

namespace {

Local<std::string> user;
Local<int> number;

/// Misuse messages reported while a test runs (the handler is process-wide).
class MisuseCapture {
public:
    MisuseCapture() {
        std::lock_guard<std::mutex> lock(mutex);
        messages().clear();
        Storage::set_misuse_handler(&record);
    }
    ~MisuseCapture() { Storage::set_misuse_handler(nullptr); }
    MisuseCapture(const MisuseCapture&) = delete;
    MisuseCapture& operator=(const MisuseCapture&) = delete;
    std::vector<std::string> taken() {
        std::lock_guard<std::mutex> lock(mutex);
        return messages();
    }

private:
    static inline std::mutex mutex;
    static std::vector<std::string>& messages() {
        static std::vector<std::string> all;
        return all;
    }
    static void record(const char* message) {
        std::lock_guard<std::mutex> lock(mutex);
        messages().emplace_back(message);
    }
};

}  // namespace

TEST_CASE("Storage.Basics.current_is_null_outside_and_the_entered_storage_inside") {
    CHECK_FALSE(Storage::current());
    Storage task;
    CHECK(static_cast<bool>(task));
    Storage copy = task;
    CHECK(copy == task);
    CHECK(Storage() != task);
    task.run([&] {
        CHECK(Storage::current() == task);
        Storage inner;
        inner.run([&] { CHECK(Storage::current() == inner); });
        CHECK(Storage::current() == task);
    });
    CHECK_FALSE(Storage::current());
    Storage moved = std::move(copy);
    CHECK_FALSE(copy);  // NOLINT(bugprone-use-after-move): the moved-from state is the point
    CHECK(moved == task);
}

TEST_CASE("Storage.Isolation.an_empty_storage_shows_nothing_of_the_thread_and_leaving_restores_it") {
    user.value() = "thread";
    Storage task;
    task.run([] {
        CHECK(user.get() == nullptr);  // folly#2017: an empty capture hides the thread's own values
        user.value() = "task";
        CHECK(*user.get() == "task");
    });
    CHECK(*user.get() == "thread");  // untouched
    task.run([] { CHECK(*user.get() == "task"); });
    user.reset();
}

TEST_CASE("Storage.Hop.values_follow_the_storage_to_another_thread" * doctest::timeout(30)) {
    Storage task;
    task.run([] {
        user.value() = "ana";
        number.value() = 7;
    });
    std::string seen;
    int seen_number = 0;
    bool thread_clean_after = false;
    std::thread([&] {
        task.run([&] {
            seen = *user.get();
            seen_number = *number.get();
            number.value() = 8;
        });
        thread_clean_after = user.get() == nullptr && number.get() == nullptr;
    }).join();
    CHECK(seen == "ana");
    CHECK(seen_number == 7);
    CHECK(thread_clean_after);
    task.run([] { CHECK(*number.get() == 8); });  // what the other thread wrote is seen here
}

TEST_CASE("Storage.Nested.same_storage_and_other_storages_restore_exactly") {
    number.value() = 1;
    Storage a, b;
    {
        Storage::Scope in_a(a);
        number.value() = 2;
        {
            Storage::Scope again(a);  // nested entry of the same Storage is allowed
            CHECK(*number.get() == 2);
            {
                Storage::Scope in_b(b);
                CHECK(number.get() == nullptr);
                number.value() = 3;
            }
            CHECK(*number.get() == 2);
        }
        CHECK(*number.get() == 2);
    }
    CHECK(*number.get() == 1);
    b.run([] { CHECK(*number.get() == 3); });
    number.reset();
}

TEST_CASE("Storage.Nested.the_table_may_grow_while_entered_twice") {
    Storage task;
    Storage::Scope outer(task);
    {
        Storage::Scope inner(task);
        std::vector<std::unique_ptr<Local<int>>> many;  // more Locals than the first table holds
        for (int i = 0; i < 100; ++i) {
            many.push_back(std::make_unique<Local<int>>());
            many.back()->value() = i;
        }
        for (int i = 0; i < 100; ++i) CHECK(*many[i]->get() == i);
    }
    number.value() = 5;  // the outer scope still runs on the (grown) table
    CHECK(Storage::current() == task);
}

TEST_CASE("Storage.Misuse.entering_a_storage_entered_on_another_thread_throws" * doctest::timeout(30)) {
    Storage task;
    Gate inside, done;
    std::thread holder([&] {
        task.run([&] {
            number.value() = 1;
            inside.open();
            done.wait();
        });
    });
    inside.wait();
    number.value() = 42;
    std::string message;
    try {
        Storage::Scope scope(task);
    } catch (const ctxlocal::context_error& e) {
        message = e.what();
    }
    CHECK(message.find("it is entered on another thread right now") != std::string::npos);
    CHECK_FALSE(Storage::current());  // nothing changed here
    CHECK(*number.get() == 42);
    CHECK_THROWS_AS(task.run([] {}), ctxlocal::context_error);
    done.open();
    holder.join();
    task.run([] { CHECK(*number.get() == 1); });  // usable once the other thread left it
    number.reset();
}

TEST_CASE("Storage.Misuse.run_and_scope_on_a_null_handle_throw") {
    Storage null = Storage::null();
    CHECK_FALSE(null);
    bool called = false;
    CHECK_THROWS_WITH_AS(null.run([&] { called = true; }), doctest::Contains("the Storage is null"),
                         ctxlocal::context_error);
    CHECK_FALSE(called);
    CHECK_THROWS_AS(Storage::Scope{null}, ctxlocal::context_error);
    CHECK_FALSE(Storage::current());
}

TEST_CASE("Storage.Exceptions.propagate_and_the_thread_is_restored") {
    number.value() = 1;
    Storage task;
    CHECK_THROWS_AS(task.run([] {
        number.value() = 2;
        throw std::runtime_error("boom");
    }),
                    std::runtime_error);
    CHECK(*number.get() == 1);
    CHECK_FALSE(Storage::current());
    task.run([] { CHECK(*number.get() == 2); });
    number.reset();
}

TEST_CASE("Storage.Run.returns_references_and_values") {
    Storage task;
    int x = 0;
    int& r = task.run([&]() -> int& { return x; });
    CHECK(&r == &x);
    CHECK(task.run([](int a, int b) { return a + b; }, 2, 3) == 5);
}

namespace {
/// A value whose destructor records what it sees: which Storage is entered, on which thread, and whether
/// the other Witness of the same task is still alive.
struct Witness {
    Local<Witness>* other = nullptr;
    Storage* seen_storage = nullptr;
    bool* saw_other = nullptr;
    std::thread::id* seen_thread = nullptr;
    ~Witness() {
        if (seen_storage == nullptr) return;
        *seen_storage = Storage::current();
        *saw_other = other->get() != nullptr;
        *seen_thread = std::this_thread::get_id();
    }
};
}  // namespace

TEST_CASE("Storage.Release.last_handle_destroys_values_with_the_storage_entered" * doctest::timeout(30)) {
    const int live = Counted::live.load();
    Local<Counted> counted;
    Local<Witness> first, second;
    Storage seen[2] = {Storage::null(), Storage::null()};
    bool saw_other[2] = {false, false};
    std::thread::id seen_thread[2];
    {
        Storage task;
        task.run([&] {
            counted.value();
            Local<Witness>* locals[2] = {&first, &second};
            for (int i = 0; i < 2; ++i) {
                Witness& w = locals[i]->value();
                w.other = locals[1 - i];
                w.seen_storage = &seen[i];
                w.saw_other = &saw_other[i];
                w.seen_thread = &seen_thread[i];
            }
        });
        CHECK(Counted::live.load() == live + 1);
        CHECK(counted.count() == 1);
        std::thread([moved = std::move(task)]() mutable { Storage last = std::move(moved); }).join();
    }  // released on that thread
    CHECK(Counted::live.load() == live);
    CHECK(counted.count() == 0);
    CHECK(first.count() == 0);
    CHECK(second.count() == 0);
    // Each destructor ran with the Storage entered, on the releasing thread; the first one to run still
    // saw the other value of its task.
    CHECK(static_cast<bool>(seen[0]));
    CHECK(seen[0] == seen[1]);
    CHECK((seen_thread[0] == seen_thread[1]));
    CHECK((seen_thread[0] != std::this_thread::get_id()));
    CHECK(saw_other[0] != saw_other[1]);
    // The destructors took handles to the Storage being released: it stays usable, and empty.
    seen[0].run([&] { CHECK(first.get() == nullptr); });
}

TEST_CASE("Storage.Release.released_from_inside_its_own_scope_is_destroyed_when_the_scope_ends") {
    const int live = Counted::live.load();
    Local<Counted> counted;
    {
        auto task = std::make_unique<Storage>();
        Storage::Scope scope(*task);
        counted.value();
        task.reset();  // the last handle, released while the Scope still runs inside it
        CHECK(Counted::live.load() == live + 1);
        CHECK(counted.get() != nullptr);
    }
    CHECK(Counted::live.load() == live);
    CHECK(counted.get() == nullptr);
    CHECK_FALSE(Storage::current());
}

TEST_CASE("Storage.Destroy.local_destroyed_while_a_storage_holds_its_value") {
    const int live = Counted::live.load();
    auto* counted = new Local<Counted>();
    Storage task;
    task.run([&] { counted->value(); });
    delete counted;  // destroys the Storage's value too, once
    CHECK(Counted::live.load() == live);
    Local<Counted> fresh;  // may reuse the slot: the Storage shows no old value
    task.run([&] { CHECK(fresh.get() == nullptr); });
}

TEST_CASE("Storage.ForEach.for_each_and_count_include_live_storages") {
    Local<int> local;
    local.value() = 1;
    Storage a, b;
    a.run([&] { local.value() = 10; });
    b.run([&] { local.value() = 100; });
    CHECK(local.count() == 3);
    int sum = 0;
    local.for_each([&](int v) { sum += v; });
    CHECK(sum == 111);
    { Storage gone = std::move(b); }
    CHECK(local.count() == 2);
}

TEST_CASE("Storage.ThreadLocal.always_the_threads_own_value") {
    ThreadLocal<int> per_thread;
    per_thread.value() = 1;
    Storage task;
    task.run([&] {
        CHECK(*per_thread.get() == 1);
        per_thread.value() = 2;  // the thread's value, not the task's
        number.value() = 3;
    });
    CHECK(*per_thread.get() == 2);
    CHECK(number.get() == nullptr);
    std::thread([&] {
        task.run([&] {
            CHECK(per_thread.get() == nullptr);  // this thread has none, whatever the task holds
            per_thread.value() = 9;
            CHECK(*number.get() == 3);
        });
        CHECK(*per_thread.get() == 9);  // made inside the Storage, but the thread's own
    }).join();
    CHECK(*per_thread.get() == 2);
    CHECK(per_thread.count() == 1);
}

TEST_CASE("Storage.ThreadLocal.first_value_of_a_thread_made_inside_a_storage" * doctest::timeout(30)) {
    ThreadLocal<int> per_thread;
    Storage task;
    std::thread([&] {
        task.run([&] { per_thread.value() = 4; });  // the thread had no record before this
        CHECK(*per_thread.get() == 4);
        CHECK(number.get() == nullptr);
    }).join();
}

TEST_CASE("Storage.Stacks.local_stack_and_manager_follow_the_storage") {
    ctxlocal::LocalStack<int> stack;
    ctxlocal::LocalManager manager{stack};
    stack.push(1);
    Storage task;
    task.run([&] {
        CHECK(stack.empty());
        stack.push(2);
    });
    CHECK(*stack.top() == 1);
    task.run([&] {
        CHECK(*stack.top() == 2);
        manager.cleanup();
        CHECK(stack.empty());
    });
    CHECK(*stack.top() == 1);
    manager.cleanup();
}

TEST_CASE("Storage.Misuse.scopes_destroyed_out_of_order") {
    MisuseCapture misuse;
    number.value() = 1;
    Storage a, b;
    auto outer = std::make_unique<Storage::Scope>(a);
    number.value() = 2;
    auto inner = std::make_unique<Storage::Scope>(b);
    number.value() = 3;
    outer.reset();  // leaves b first, then a
    CHECK_FALSE(Storage::current());
    CHECK(*number.get() == 1);
    inner.reset();  // does nothing
    CHECK_FALSE(Storage::current());
    CHECK(*number.get() == 1);
    const std::vector<std::string> messages = misuse.taken();
    REQUIRE(messages.size() == 1);
    CHECK(messages[0].find("destroyed while Scopes entered after it were still alive") != std::string::npos);
    // Both Storages are left: another thread can enter them.
    std::thread([&] {
        a.run([] { CHECK(*number.get() == 2); });
        b.run([] { CHECK(*number.get() == 3); });
    }).join();
    number.reset();
}

TEST_CASE("Storage.Misuse.a_65th_nested_scope_throws_and_changes_nothing" * doctest::timeout(30)) {
    number.value() = 1;
    std::vector<Storage> storages(65);
    std::vector<std::unique_ptr<Storage::Scope>> scopes;
    for (int i = 0; i < 64; ++i) {
        scopes.push_back(std::make_unique<Storage::Scope>(storages[static_cast<std::size_t>(i)]));
        number.value() = 100 + i;
    }
    CHECK_THROWS_WITH_AS(Storage::Scope{storages[64]}, doctest::Contains("64 Storage scopes"),
                         ctxlocal::context_error);
    CHECK(Storage::current() == storages[63]);
    CHECK(*number.get() == 163);
    while (!scopes.empty()) scopes.pop_back();  // innermost first
    CHECK_FALSE(Storage::current());
    CHECK(*number.get() == 1);
    // The refused Storage was not marked entered: another thread enters it.
    std::thread([&] { storages[64].run([] { CHECK_FALSE(number.has_value()); }); }).join();
    number.reset();
}

TEST_CASE("Storage.Misuse.scope_destroyed_on_another_thread" * doctest::timeout(30)) {
    MisuseCapture misuse;
    Storage task;
    std::unique_ptr<Storage::Scope> scope;
    bool entering_thread_inside_after = false;
    bool entering_thread_clean_at_end = false;
    Gate made, destroyed;
    std::thread entering([&] {
        {
            Storage::Scope enclosing(Storage{});
            scope = std::make_unique<Storage::Scope>(task);
            made.open();
            destroyed.wait();
            entering_thread_inside_after = Storage::current() == task;
        }  // leaving the enclosing Scope leaves the abandoned entry too
        entering_thread_clean_at_end = !Storage::current();
    });
    made.wait();
    scope.reset();  // on the wrong thread: changes nothing here
    CHECK_FALSE(Storage::current());
    destroyed.open();
    entering.join();
    CHECK(entering_thread_inside_after);  // the entering thread was not touched from here
    CHECK(entering_thread_clean_at_end);
    const std::vector<std::string> messages = misuse.taken();
    REQUIRE(messages.size() >= 1);
    CHECK(messages[0].find("destroyed on another thread") != std::string::npos);
    task.run([] {});  // not entered anywhere any more
}

TEST_CASE("Storage.ThreadExit.a_thread_that_exits_inside_a_storage_leaves_it" * doctest::timeout(30)) {
    Storage task;
    std::thread([&] {
        alignas(Storage::Scope) static unsigned char never_destroyed[sizeof(Storage::Scope)];
        new (never_destroyed) Storage::Scope(task);  // a Scope the thread never leaves
        number.value() = 5;
    }).join();
    task.run([] { CHECK(*number.get() == 5); });  // left at that thread's exit: enterable here
}

TEST_CASE("Wrap.Capture.runs_inside_the_current_storage_on_any_thread" * doctest::timeout(30)) {
    Storage task;
    auto job = task.run([] {
        user.value() = "ana";
        return ctxlocal::wrap([](int add) { return *user.get() + " " + std::to_string(add); });
    });
    CHECK(job.storage() == task);
    std::string seen;
    std::thread([&] { seen = job(1); }).join();
    CHECK(seen == "ana 1");
    auto copy = job;  // copyable, sharing the Storage
    CHECK(copy(2) == "ana 2");
}

TEST_CASE("Wrap.Empty.no_current_storage_runs_in_a_fresh_one_that_shows_nothing" * doctest::timeout(30)) {
    user.value() = "capturing thread";
    auto job = ctxlocal::wrap([] {
        const bool saw_nothing = user.get() == nullptr;
        number.value() += 1;
        return saw_nothing ? *number.get() : -1;
    });
    user.reset();
    std::thread([&] {
        user.value() = "executing thread";
        CHECK(job() == 1);  // neither the capturing nor the executing thread's values
        CHECK(job() == 2);  // one fresh Storage for every call of the callable
        CHECK(*user.get() == "executing thread");
    }).join();
}

TEST_CASE("Wrap.Concurrent.copies_called_on_two_threads_at_once_refuse_the_second" * doctest::timeout(30)) {
    Gate inside, release;
    auto job = ctxlocal::wrap([&](bool block) {
        if (block) {
            inside.open();
            release.wait();
        }
    });
    auto copy = job;
    std::thread first([&] { job(true); });
    inside.wait();
    CHECK_THROWS_AS(copy(false), ctxlocal::context_error);
    release.open();
    first.join();
    copy(false);  // fine once the first call has left
}

TEST_CASE("Storage.Concurrent.handles_copied_and_released_on_many_threads" * doctest::timeout(60)) {
    const int threads = test_support::thread_count() + 2;
    const int live = Counted::live.load();
    Local<Counted> counted;
    std::vector<std::thread> pool;
    std::atomic<int> failures{0};
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            for (int i = 0; i < 300; ++i) {
                Storage mine;
                mine.run([&] {
                    counted.value().value = t;
                    number.value() = i;
                });
                std::vector<Storage> copies(4, mine);
                std::thread([copies, t, i, &failures, &counted]() mutable {
                    for (Storage& s : copies) {
                        s.run([&] {
                            if (counted.get()->value != t || *number.get() != i) ++failures;
                        });
                    }
                    copies.clear();
                }).join();
            }
        });
    }
    test_support::join_all(pool);
    CHECK(failures.load() == 0);
    CHECK(Counted::live.load() == live);
    CHECK(counted.count() == 0);
}
