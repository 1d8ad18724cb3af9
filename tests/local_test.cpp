// Tests of ctxlocal::Local<T> (include/ctxlocal/local.hpp): isolation, creation, replacement and release,
// for_each, thread exit, destruction and slot reuse, constant initialisation. fork() is in fork_test.cpp.
#include <doctest/doctest.h>
#include <pthread.h>
#include <ctxlocal/local.hpp>

#include "support/sync.hpp"
#include "support/threads.hpp"
#include "support/watchdog.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

using ctxlocal::Local;

namespace {

// ---------------------------------------------------------------------------------------------------
// Synchronisation helpers (C++17 has no latch or barrier).

using test_support::Barrier;
using test_support::Gate;
using test_support::Latch;

using test_support::join_all;
using test_support::thread_count;
using test_support::Watchdog;

// ---------------------------------------------------------------------------------------------------
// Counting value type: every construction and destruction is counted, and each destruction records
// the thread it was constructed on and the thread it ran on.

struct Stats {
    std::atomic<int> ctors{0};
    std::atomic<int> dtors{0};
    std::mutex mutex;
    std::vector<std::pair<std::thread::id, std::thread::id>> destroyed;  // (made on, destroyed on)

    void reset() {
        ctors = 0;
        dtors = 0;
        std::lock_guard<std::mutex> lock(mutex);
        destroyed.clear();
    }
    /// How many destructors ran on thread `t`.
    int destroyed_on(std::thread::id t) {
        std::lock_guard<std::mutex> lock(mutex);
        return static_cast<int>(
            std::count_if(destroyed.begin(), destroyed.end(), [&](const auto& d) { return d.second == t; }));
    }
    /// How many destructors ran on thread `on` for values made on thread `made`.
    int destroyed_on(std::thread::id made, std::thread::id on) {
        std::lock_guard<std::mutex> lock(mutex);
        return static_cast<int>(std::count_if(destroyed.begin(), destroyed.end(), [&](const auto& d) {
            return d.first == made && d.second == on;
        }));
    }
    /// How many destructors ran on a thread other than the one that made the value.
    int destroyed_elsewhere() {
        std::lock_guard<std::mutex> lock(mutex);
        return static_cast<int>(std::count_if(destroyed.begin(), destroyed.end(),
                                              [](const auto& d) { return d.first != d.second; }));
    }
};

Stats g_stats;

struct Counted {
    static constexpr int alive_mark = 0x0A11CE;
    int v;
    int mark = alive_mark;
    std::thread::id made_on = std::this_thread::get_id();

    Counted() : Counted(0) {}
    explicit Counted(int x) : v(x) { ++g_stats.ctors; }
    Counted(const Counted&) = delete;
    Counted& operator=(const Counted&) = delete;
    ~Counted() {
        mark = 0;
        {
            std::lock_guard<std::mutex> lock(g_stats.mutex);
            g_stats.destroyed.emplace_back(made_on, std::this_thread::get_id());
        }
        ++g_stats.dtors;
    }
};

}  // namespace

// ===================================================================================================
// Isolation

TEST_CASE("Local.Isolation.werkzeug_demo" * doctest::timeout(30)) {
    Local<int> b;
    b.value() = 1;
    bool thread_started_empty = false;
    int thread_saw = -1;
    std::thread t([&] {
        thread_started_empty = b.get() == nullptr;
        b.value() = 2;
        thread_saw = *b.get();
    });
    t.join();
    CHECK(thread_started_empty);
    CHECK(thread_saw == 2);
    REQUIRE(b.get() != nullptr);
    CHECK(*b.get() == 1);
}

TEST_CASE("Local.Isolation.threads_never_see_each_others_values" * doctest::timeout(30)) {
    const int n = thread_count();
    Local<long> local;
    std::atomic<int> wrong{0};
    std::atomic<int> started_with_value{0};
    Gate start;
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
        threads.emplace_back([&, i] {
            start.wait();
            if (local.has_value()) ++started_with_value;
            for (long k = 0; k < 2000; ++k) {
                const long mine = i * 1000000L + k;
                local.value() = mine;
                if (k % 16 == 0) std::this_thread::yield();
                if (local.get() == nullptr || *local.get() != mine || local.value() != mine) ++wrong;
                if (k % 64 == 63) local.reset();  // fresh allocations too, not only overwrites
            }
        });
    }
    start.open();
    join_all(threads);
    CHECK(started_with_value == 0);
    CHECK(wrong == 0);
    CHECK(local.get() == nullptr);  // the main thread never set a value
}

// ===================================================================================================
// get(), value(), initialisers

TEST_CASE("Local.Get.never_constructs") {
    g_stats.reset();
    Local<Counted> local;
    const Local<Counted>& const_local = local;
    CHECK(local.get() == nullptr);
    CHECK(const_local.get() == nullptr);
    CHECK_FALSE(local.has_value());
    CHECK(local.count() == 0);
    CHECK(g_stats.ctors == 0);

    Counted& made = local.value();
    CHECK(g_stats.ctors == 1);
    CHECK(local.get() == &made);
    CHECK(const_local.get() == &made);
    CHECK(local.has_value());
    CHECK(&local.value() == &made);  // value() does not make a second one
    CHECK(g_stats.ctors == 1);
}

TEST_CASE("Local.Value.value_initialises") {
    Local<int> i;
    CHECK(i.value() == 0);

    // A default-initialised aggregate would keep whatever the freed block held; value-initialisation
    // zeroes it. Fill, release, make again (the allocator usually hands back the same block).
    struct Block {
        int words[32];
    };
    Local<Block> block;
    for (int round = 0; round < 8; ++round) {
        Block& b = block.value();
        bool all_zero = true;
        for (int w : b.words) all_zero = all_zero && w == 0;
        CHECK(all_zero);
        for (int& w : b.words) w = 0x5A5A5A5A;
        block.reset();
    }
}

namespace {
int make_seven() { return 7; }
}  // namespace

TEST_CASE("Local.Init.function_pointer_and_captureless_lambda") {
    Local<int> from_pointer{&make_seven};
    Local<int> from_lambda{[] { return 5; }};
    Local<std::string> from_string_lambda{[] { return std::string("werkzeug"); }};
    CHECK_FALSE(from_pointer.has_value());  // the initialiser runs on first value(), not before
    CHECK(from_pointer.value() == 7);
    CHECK(from_lambda.value() == 5);
    CHECK(*from_string_lambda == "werkzeug");
    static_assert(std::is_nothrow_constructible_v<Local<int>, int (*)()>);
}

TEST_CASE("Local.Init.stateful_lambda" * doctest::timeout(30)) {
    int base = 40;
    auto shared = std::make_shared<int>(1000);
    Local<int> local{[&base, shared] { return base + *shared; }};
    CHECK(local.value() == 1040);
    base = 50;
    CHECK(local.value() == 1040);  // made once on this thread
    int other = 0;
    std::thread([&] { other = local.value(); }).join();
    CHECK(other == 1050);  // made lazily on the other thread, with the captured state of that moment
}

TEST_CASE("Local.Init.called_once_per_thread_on_that_thread" * doctest::timeout(30)) {
    const int n = thread_count();
    std::mutex mutex;
    std::vector<std::thread::id> init_ran_on;
    Local<int> local{[&] {
        std::lock_guard<std::mutex> lock(mutex);
        init_ran_on.push_back(std::this_thread::get_id());
        return static_cast<int>(init_ran_on.size());
    }};
    std::vector<std::thread::id> workers(static_cast<std::size_t>(n));
    std::atomic<int> unstable{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
        threads.emplace_back([&, i] {
            workers[static_cast<std::size_t>(i)] = std::this_thread::get_id();
            const int first = local.value();
            for (int k = 0; k < 100; ++k) {
                if (local.value() != first || *local != first) ++unstable;
            }
        });
    }
    join_all(threads);
    CHECK(unstable == 0);
    REQUIRE(init_ran_on.size() == static_cast<std::size_t>(n));
    std::sort(init_ran_on.begin(), init_ran_on.end());
    std::sort(workers.begin(), workers.end());
    CHECK(init_ran_on == workers);  // once per thread, each time on that thread
}

namespace {
struct NoDefault {
    int x;
    explicit NoDefault(int v) : x(v) {}
};
}  // namespace

TEST_CASE("Local.Value.not_default_constructible_throws_unbound_error") {
    Local<NoDefault> local;
    CHECK_THROWS_AS(local.value(), ctxlocal::unbound_error);
    CHECK_THROWS_AS(*local, ctxlocal::unbound_error);
    CHECK_THROWS_AS(local.operator->(), ctxlocal::unbound_error);
    std::string message;
    try {
        local.value();
    } catch (const ctxlocal::error& e) {  // unbound_error is a ctxlocal::error
        message = e.what();
    }
    INFO("message: " << message);
    CHECK(message.find("NoDefault") != std::string::npos);
    CHECK(message.find("emplace") != std::string::npos);
    // It created nothing.
    CHECK_FALSE(local.has_value());
    CHECK(local.count() == 0);
    // emplace is the way out.
    local.emplace(3);
    CHECK(local.value().x == 3);
    CHECK(local->x == 3);
    CHECK(local.count() == 1);
}

// ===================================================================================================
// emplace, reset, operators

TEST_CASE("Local.Emplace.replaces_and_destroys_old_exactly_once") {
    g_stats.reset();
    {
        Local<Counted> local;
        Counted& first = local.emplace(1);
        CHECK(first.v == 1);
        CHECK(local.get() == &first);
        Counted& second = local.emplace(2);
        CHECK(second.v == 2);
        CHECK(local.get() == &second);
        CHECK(local.value().v == 2);
        CHECK(g_stats.ctors == 2);
        CHECK(g_stats.dtors == 1);
        CHECK(local.count() == 1);
    }
    CHECK(g_stats.ctors == 2);
    CHECK(g_stats.dtors == 2);
}

namespace {
struct Picky {
    static inline int live = 0;
    int v;
    Picky(int x, bool fail) : v(x) {
        if (fail) throw std::runtime_error("Picky refused");
        ++live;
    }
    Picky(const Picky&) = delete;
    ~Picky() { --live; }
};
}  // namespace

TEST_CASE("Local.Emplace.throwing_constructor_keeps_old_value") {
    Picky::live = 0;
    Local<Picky> local;
    CHECK_THROWS_AS(local.emplace(1, true), std::runtime_error);
    CHECK_FALSE(local.has_value());
    CHECK(local.count() == 0);

    Picky* old = &local.emplace(1, false);
    CHECK_THROWS_AS(local.emplace(2, true), std::runtime_error);
    CHECK(local.get() == old);
    CHECK(local.get()->v == 1);
    CHECK(Picky::live == 1);  // neither destroyed nor leaked
    local.reset();
    CHECK(Picky::live == 0);
}

TEST_CASE("Local.Init.throwing_initialiser_creates_nothing_and_retries") {
    int attempts = 0;
    Local<int> local{[&attempts] {
        if (++attempts == 1) throw std::runtime_error("init failed");
        return 9;
    }};
    CHECK_THROWS_WITH_AS(local.value(), "init failed", std::runtime_error);
    CHECK_FALSE(local.has_value());
    CHECK(local.count() == 0);
    CHECK(local.value() == 9);  // retried
    CHECK(attempts == 2);
    CHECK(local.value() == 9);
    CHECK(attempts == 2);
}

TEST_CASE("Local.Reset.destroys_on_calling_thread_and_next_value_is_fresh" * doctest::timeout(30)) {
    g_stats.reset();
    Local<Counted> local;
    std::thread::id worker;
    int fresh_v = -1;
    bool empty_after_reset = false;
    std::thread t([&] {
        worker = std::this_thread::get_id();
        local.value().v = 5;
        local.reset();
        empty_after_reset = local.get() == nullptr && !local.has_value() && local.count() == 0;
        fresh_v = local.value().v;  // release, not overwrite: a new value-initialised object
        local.reset();
    });
    t.join();
    CHECK(empty_after_reset);
    CHECK(fresh_v == 0);
    CHECK(g_stats.ctors == 2);
    CHECK(g_stats.dtors == 2);
    CHECK(g_stats.destroyed_on(worker) == 2);
}

TEST_CASE("Local.Reset.without_value_is_a_no_op" * doctest::timeout(30)) {
    g_stats.reset();
    Local<Counted> never_used;
    never_used.reset();
    CHECK_FALSE(never_used.has_value());

    Local<Counted> local;
    local.value().v = 3;
    std::thread([&] { local.reset(); }).join();  // another thread has nothing to release
    REQUIRE(local.get() != nullptr);
    CHECK(local.get()->v == 3);
    local.reset();
    local.reset();
    CHECK(g_stats.ctors == 1);
    CHECK(g_stats.dtors == 1);
}

TEST_CASE("Local.Operators.star_and_arrow") {
    Local<std::string> s;
    CHECK((*s).empty());  // operator* creates like value()
    CHECK(s.has_value());
    *s = "abc";
    CHECK(s->size() == 3);
    CHECK(&*s == s.get());
    CHECK(s.operator->() == s.get());

    g_stats.reset();
    Local<Counted> c;
    c->v = 4;  // operator-> creates like value()
    CHECK(g_stats.ctors == 1);
    CHECK(c.value().v == 4);
}

// ===================================================================================================
// Pointer stability and many Locals

TEST_CASE("Local.Value.pointer_stable_while_table_grows") {
    Local<int> first;
    int* p = &first.value();
    *p = 7;
    std::vector<std::unique_ptr<Local<int>>> others;
    for (int i = 0; i < 300; ++i) {
        others.push_back(std::make_unique<Local<int>>());
        others.back()->value() = i;
        if (first.get() != p) break;
    }
    CHECK(first.get() == p);
    CHECK(*p == 7);
    bool others_intact = true;
    for (int i = 0; i < 300; ++i)
        others_intact = others_intact && others[static_cast<std::size_t>(i)]->value() == i;
    CHECK(others_intact);
}

TEST_CASE("Local.Many.independent_and_no_stale_values_after_reuse" * doctest::timeout(30)) {
    constexpr int count = 1000;
    std::vector<std::unique_ptr<Local<int>>> locals;
    for (int i = 0; i < count; ++i) locals.push_back(std::make_unique<Local<int>>());
    for (int i = 0; i < count; ++i) locals[static_cast<std::size_t>(i)]->value() = i + 1;

    // A second thread sets its own values in all of them and keeps them.
    Gate set_done_gate, main_done_gate;
    Latch set_done(1);
    std::atomic<int> helper_wrong{0};
    std::thread helper([&] {
        for (int i = 0; i < count; ++i) {
            if (locals[static_cast<std::size_t>(i)]->get() != nullptr) ++helper_wrong;
            locals[static_cast<std::size_t>(i)]->value() = -(i + 1);
        }
        set_done.count_down();
        main_done_gate.wait();
        // Destroyed ones were replaced by new Locals in the same slots: nothing stale.
        for (int i = 0; i < count; ++i) {
            const int* v = locals[static_cast<std::size_t>(i)]->get();
            if (i % 2 == 0 ? v != nullptr : (v == nullptr || *v != -(i + 1))) ++helper_wrong;
        }
    });
    set_done.wait();

    bool all_independent = true;
    for (int i = 0; i < count; ++i)
        all_independent = all_independent && *locals[static_cast<std::size_t>(i)]->get() == i + 1;
    CHECK(all_independent);

    for (int i = 0; i < count; i += 2) locals[static_cast<std::size_t>(i)].reset();  // destroy half
    for (int i = 0; i < count; i += 2) locals[static_cast<std::size_t>(i)] = std::make_unique<Local<int>>();
    bool new_ones_empty = true, new_ones_fresh = true, old_ones_kept = true;
    for (int i = 0; i < count; ++i) {
        Local<int>& l = *locals[static_cast<std::size_t>(i)];
        if (i % 2 == 0) {
            new_ones_empty = new_ones_empty && l.get() == nullptr && l.count() == 0;
            new_ones_fresh = new_ones_fresh && l.value() == 0;
        } else {
            old_ones_kept = old_ones_kept && l.get() != nullptr && *l.get() == i + 1 && l.count() == 2;
        }
    }
    main_done_gate.open();
    helper.join();
    CHECK(new_ones_empty);
    CHECK(new_ones_fresh);
    CHECK(old_ones_kept);
    CHECK(helper_wrong == 0);
}

// ===================================================================================================
// for_each and count

TEST_CASE("Local.ForEach.visits_every_thread" * doctest::timeout(30)) {
    const int n = thread_count();
    Local<int> local;
    Latch ready(n);
    Gate release;
    std::atomic<int> lost_update{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
        threads.emplace_back([&, i] {
            local.value() = i + 1;
            ready.count_down();
            release.wait();
            if (local.value() != i + 1 + 100) ++lost_update;  // for_each's f got the real value
        });
    }
    ready.wait();
    local.value() = 1000;  // the calling thread's value is visited too
    std::vector<int> seen;
    local.for_each([&](int& v) {
        seen.push_back(v);
        v += 100;
    });
    std::sort(seen.begin(), seen.end());
    std::vector<int> expected;
    for (int i = 0; i < n; ++i) expected.push_back(i + 1);
    expected.push_back(1000);
    CHECK(seen == expected);
    CHECK(local.count() == static_cast<std::size_t>(n + 1));
    CHECK(*local.get() == 1100);
    release.open();
    join_all(threads);
    CHECK(lost_update == 0);
    CHECK(local.count() == 1);  // the workers' values went with them
}

TEST_CASE("Local.ForEach.unused_local_visits_nothing" * doctest::timeout(30)) {
    Local<int> never_used;
    int calls = 0;
    never_used.for_each([&](int&) { ++calls; });
    CHECK(calls == 0);
    CHECK(never_used.count() == 0);

    Local<int> used_by_dead_threads;
    std::thread([&] { used_by_dead_threads.value() = 1; }).join();
    used_by_dead_threads.for_each([&](int&) { ++calls; });
    CHECK(calls == 0);
    CHECK(used_by_dead_threads.count() == 0);
}

TEST_CASE("Local.ForEach.callback_may_use_locals_reentrantly" * doctest::timeout(30)) {
    Watchdog watchdog("Local.ForEach.callback_may_use_locals_reentrantly");
    g_stats.reset();
    const int n = 2;
    Local<int> local;
    Local<int> other;
    Local<Counted> victim;
    Latch ready(n);
    Gate release;
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
        threads.emplace_back([&, i] {
            local.value() = i + 1;
            ready.count_down();
            release.wait();
        });
    }
    ready.wait();
    local.value() = 100;
    victim.value();
    int visits = 0;
    bool inner_ok = true;
    local.for_each([&](int& v) {
        ++visits;
        other.value() += v;                             // creates on the first visit
        inner_ok = inner_ok && other.get() != nullptr;  // get() of another Local
        inner_ok = inner_ok && local.get() != nullptr;  // get() of the visited Local
        inner_ok = inner_ok && local.count() == static_cast<std::size_t>(n + 1);
        victim.reset();        // reset() of another Local
        Local<int> temporary;  // a Local made and destroyed inside f
        temporary.value() = v;
        int inner_visits = 0;
        other.for_each([&](int&) { ++inner_visits; });  // nested for_each
        inner_ok = inner_ok && inner_visits == 1;
        if (&v == local.get()) local.reset();  // reset() of the visited Local itself
    });
    CHECK(visits == n + 1);
    CHECK(inner_ok);
    CHECK(other.value() == 1 + 2 + 100);
    CHECK_FALSE(local.has_value());
    CHECK(local.count() == static_cast<std::size_t>(n));
    CHECK(g_stats.dtors == 1);
    CHECK(g_stats.destroyed_on(std::this_thread::get_id()) == 1);
    release.open();
    join_all(threads);
    // The registry lock was released: a new thread can still create values.
    std::thread([&] { local.value() = 5; }).join();
}

TEST_CASE("Local.ForEach.exception_propagates_and_local_stays_usable" * doctest::timeout(30)) {
    Watchdog watchdog("Local.ForEach.exception_propagates_and_local_stays_usable");
    Local<int> local;
    Latch ready(1);
    Gate release;
    std::thread parked([&] {
        local.value() = 1;
        ready.count_down();
        release.wait();
        local.value() = 3;  // takes the registry lock: would hang if the throw had leaked it
    });
    ready.wait();
    local.value() = 2;
    int calls = 0;
    CHECK_THROWS_WITH_AS(local.for_each([&](int&) {
        ++calls;
        throw std::runtime_error("stop");
    }),
                         "stop", std::runtime_error);
    CHECK(calls == 1);  // the visit stopped
    int sum = 0;
    local.for_each([&](int& v) { sum += v; });
    CHECK(sum == 3);
    CHECK(local.count() == 2);
    release.open();
    parked.join();
    Local<int> fresh;
    std::thread([&] { fresh.value() = 1; }).join();
}

TEST_CASE("Local.ForEach.safe_while_owner_grows_its_table" * doctest::timeout(30)) {
    Local<int> watched;
    std::atomic<bool> stop{false};
    std::atomic<int> bad{0};
    std::atomic<long> visits{0};
    Latch ready(1);
    Gate may_exit;
    std::thread owner([&] {
        watched.value() = 42;
        ready.count_down();
        std::vector<std::unique_ptr<Local<int>>> locals;
        // Keep growing and shrinking (new slots, freed slots) until the visitor has run alongside.
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        for (int i = 0; i < 300 || (visits < 200 && std::chrono::steady_clock::now() < deadline); ++i) {
            locals.push_back(std::make_unique<Local<int>>());
            locals.back()->value() = i;  // grows this thread's table now and then
            if (i % 3 == 0) locals.erase(locals.begin());
            if (i % 1000 == 999) locals.clear();
        }
        stop = true;
        may_exit.wait();
    });
    ready.wait();
    while (!stop) {
        watched.for_each([&](int& v) {
            ++visits;
            if (v != 42) ++bad;
        });
        if (watched.count() != 1) ++bad;
        std::this_thread::yield();  // the owner needs the lock to grow its table
    }
    may_exit.open();
    owner.join();
    CHECK(bad.load() == 0);
    CHECK(visits.load() > 0);
    CHECK(watched.count() == 0);
}

TEST_CASE("Local.ForEach.racing_thread_exit_never_visits_destroyed_value" * doctest::timeout(30)) {
    g_stats.reset();
    Local<Counted> local;
    std::atomic<bool> stop{false};
    std::atomic<int> dead_visits{0};
    std::atomic<long> visits{0};
    std::thread visitor([&] {
        while (!stop) {
            local.for_each([&](Counted& c) {
                ++visits;
                if (c.mark != Counted::alive_mark) ++dead_visits;
            });
            std::this_thread::yield();  // the visit holds the lock: let starting threads take it too
        }
    });
    for (int round = 0; round < 40; ++round) {
        std::vector<std::thread> threads;
        for (int i = 0; i < 4; ++i) {
            threads.emplace_back([&, i] {
                local.emplace(i);
                // Exit once the visitor has run again (or after a while), so that the exits race visits
                // on any schedule.
                const long before = visits.load();
                test_support::wait_until([&] { return visits.load() != before; }, std::chrono::seconds(2));
            });
        }
        join_all(threads);
    }
    stop = true;
    visitor.join();
    CHECK(visits > 0);  // the visits raced the exits
    CHECK(dead_visits == 0);
    CHECK(g_stats.ctors == 160);
    CHECK(g_stats.dtors == 160);
    CHECK(g_stats.destroyed_elsewhere() == 0);
}

TEST_CASE("Local.ForEach.owner_replacing_and_resetting_never_frees_a_visited_value" * doctest::timeout(60)) {
    // The owner's emplace and reset take no lock; a value they remove must still not be destroyed while a
    // for_each on another thread is visiting it (checked by the value's mark, and by ASan/TSan in those
    // legs).
    g_stats.reset();
    Local<Counted> local;
    std::atomic<bool> stop{false};
    std::atomic<int> dead_visits{0};
    std::atomic<long> visits{0};
    std::atomic<long> changes{0};
    std::thread owner([&] {
        for (long i = 0; !stop; ++i) {  // long: the loop may run for the whole deadline
            if (i % 3 == 2) {
                local.reset();
            } else {
                local.emplace(static_cast<int>(i % 1000000));
            }
            ++changes;
        }
        local.reset();
    });
    // Both sides do their share however the threads are scheduled (under valgrind one thread runs at a
    // time, and the owner can make many changes per visit); the deadline only ends a run that hangs.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(40);
    while ((visits.load() < 20000 || changes.load() < 20000) && std::chrono::steady_clock::now() < deadline) {
        local.for_each([&](Counted& c) {
            ++visits;
            volatile int mark = c.mark;  // read it again after a pause: a destroyed value changes its mark
            for (int spin = 0; spin < 50; ++spin) (void)spin;
            if (mark != Counted::alive_mark || c.mark != Counted::alive_mark) ++dead_visits;
        });
    }
    stop = true;
    owner.join();
    INFO("visits: " << visits.load() << ", changes: " << changes.load());
    CHECK(visits.load() >= 20000);
    CHECK(changes.load() >= 20000);
    CHECK(dead_visits.load() == 0);
    CHECK(g_stats.ctors == g_stats.dtors);
}

// ===================================================================================================
// Thread exit

TEST_CASE("Local.ThreadExit.destroys_value_on_exiting_thread" * doctest::timeout(30)) {
    const int n = thread_count();
    g_stats.reset();
    Local<Counted> local;
    Latch ready(n);
    Gate release;
    std::vector<std::thread::id> ids(static_cast<std::size_t>(n));
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
        threads.emplace_back([&, i] {
            ids[static_cast<std::size_t>(i)] = std::this_thread::get_id();
            local.emplace(i);
            ready.count_down();
            release.wait();
        });
    }
    ready.wait();
    CHECK(local.count() == static_cast<std::size_t>(n));
    CHECK(g_stats.dtors == 0);
    release.open();
    for (int i = 0; i < n; ++i) {
        const std::thread::id id = ids[static_cast<std::size_t>(i)];
        threads[static_cast<std::size_t>(i)].join();
        CHECK(g_stats.destroyed_on(id, id) == 1);  // on that thread, before join() returned
    }
    threads.clear();
    CHECK(local.count() == 0);
    CHECK(g_stats.ctors == n);
    CHECK(g_stats.dtors == n);
    CHECK(g_stats.destroyed_on(std::this_thread::get_id()) == 0);
}

namespace {
struct CreatesOther {
    Counted counted;
    Local<Counted>* other;
    explicit CreatesOther(Local<Counted>* o) : other(o) {}
    ~CreatesOther() { other->value().v = 7; }
};

struct Phoenix {
    Counted counted;
    Local<Phoenix>* home;
    int lives;
    Phoenix(Local<Phoenix>* h, int l) : home(h), lives(l) {}
    ~Phoenix() {
        if (lives > 0) home->emplace(home, lives - 1);
    }
};

struct Immortal;
Local<Immortal>* g_immortal_home = nullptr;
std::atomic<int> g_immortal_refused{0};
std::atomic<int> g_immortal_max_depth{0};
thread_local int t_immortal_depth = 0;

/// Re-creates itself in its Local from its destructor, every time. The depth guard only exists so that
/// a library that recurses here makes this test fail instead of overflowing the stack.
struct Immortal {
    Counted counted;
    ~Immortal() {
        const int depth = ++t_immortal_depth;
        if (depth > g_immortal_max_depth) g_immortal_max_depth = depth;
        if (depth <= 16) {
            try {
                g_immortal_home->value();
            } catch (const ctxlocal::unbound_error&) {
                ++g_immortal_refused;
            }
        }
        --t_immortal_depth;
    }
};
}  // namespace

TEST_CASE("Local.ThreadExit.destructor_creating_value_in_other_local" * doctest::timeout(30)) {
    g_stats.reset();
    Local<Counted> other;
    other.emplace(0);  // give `other` the lower slot id: it is scanned before `creator` at exit
    other.reset();
    Local<CreatesOther> creator;
    std::thread::id worker;
    std::thread t([&] {
        worker = std::this_thread::get_id();
        creator.emplace(&other);
    });
    t.join();
    // Main's throwaway value, the CreatesOther's member, and the value its destructor made in `other`.
    CHECK(g_stats.ctors == 3);
    CHECK(g_stats.dtors == 3);
    CHECK(g_stats.destroyed_on(worker, worker) == 2);
    CHECK(other.count() == 0);
    CHECK(creator.count() == 0);
}

TEST_CASE("Local.ThreadExit.destructor_recreating_own_value" * doctest::timeout(30)) {
    static_assert(CTXLOCAL_MAX_EXIT_ROUNDS > 4, "the test needs more rounds than lives");
    g_stats.reset();
    Local<Phoenix> home;
    std::thread::id worker;
    std::thread t([&] {
        worker = std::this_thread::get_id();
        home.emplace(&home, 3);
    });
    t.join();
    CHECK(g_stats.ctors == 4);  // the first and three re-creations
    CHECK(g_stats.dtors == 4);
    CHECK(g_stats.destroyed_on(worker, worker) == 4);
    CHECK(home.count() == 0);
}

TEST_CASE("Local.ThreadExit.endless_recreation_terminates_without_leak" * doctest::timeout(30)) {
    g_stats.reset();
    g_immortal_refused = 0;
    g_immortal_max_depth = 0;
    Local<Immortal> home;
    g_immortal_home = &home;
    std::thread::id worker;
    std::thread t([&] {
        worker = std::this_thread::get_id();
        home.value();
    });
    t.join();
    g_immortal_home = nullptr;
    const int ctors = g_stats.ctors, dtors = g_stats.dtors, max_depth = g_immortal_max_depth;
    CHECK(g_immortal_refused >= 1);  // value() eventually threw unbound_error in the destructor
    CHECK(ctors == dtors);
    CHECK(ctors >= 2);
    CHECK(ctors <= CTXLOCAL_MAX_EXIT_ROUNDS + 1);
    CHECK(g_stats.destroyed_elsewhere() == 0);
    // Refusing must not construct (and so destroy) a throwaway T inside the destructor that asked.
    CHECK(max_depth == 1);
    CHECK(home.count() == 0);
}

namespace {
struct TlsReader {
    Local<Counted>* local = nullptr;
    int* seen = nullptr;
    ~TlsReader() {
        if (local == nullptr) return;
        const Counted* c = local->get();
        *seen = c != nullptr ? c->v : -1;
    }
};

struct TlsWriter {
    Local<Counted>* local = nullptr;
    ~TlsWriter() {
        if (local != nullptr) local->value().v = 11;
    }
};
}  // namespace

namespace {
/// A value whose destructor destroys the Local that holds it (a pool that dies with its last connection).
struct DestroysItsLocal {
    Local<DestroysItsLocal>** home = nullptr;
    std::atomic<int>* destroyed = nullptr;
    ~DestroysItsLocal() {
        if (home != nullptr && *home != nullptr) {
            Local<DestroysItsLocal>* local = *home;
            *home = nullptr;
            delete local;  // from inside the thread-exit teardown of this very value
        }
        if (destroyed != nullptr) ++*destroyed;
    }
};
}  // namespace

TEST_CASE("Local.ThreadExit.value_destructor_destroying_its_own_local" * doctest::timeout(30)) {
    Watchdog watchdog("Local.ThreadExit.value_destructor_destroying_its_own_local");
    std::atomic<int> destroyed{0};
    for (int round = 0; round < 20; ++round) {
        auto* local = new Local<DestroysItsLocal>();
        Local<DestroysItsLocal>* home = local;
        std::thread([&] {
            DestroysItsLocal& v = home->value();
            v.home = &home;
            v.destroyed = &destroyed;
        }).join();  // the exit must end: the Local's destructor does not wait for the value it is in
        CHECK(home == nullptr);
    }
    CHECK(destroyed.load() == 20);
    // The freed slots are reusable and clean.
    Local<int> fresh;
    CHECK(fresh.get() == nullptr);
    CHECK(fresh.value() == 0);
}

// This one and the next are skipped where C++ thread_local destructors run after the thread-exit hook
// (mingw-w64, whose emulated TLS has freed the thread's thread_locals by then: docs/platforms.md).
TEST_CASE("Local.ThreadExit.thread_local_destructor_sees_value" * doctest::timeout(30) *
          doctest::skip(!ctxlocal::detail::platform::thread_local_destructors_first)) {
    g_stats.reset();
    Local<Counted> local;
    int seen = -2;
    std::thread::id worker;
    std::thread t([&] {
        worker = std::this_thread::get_id();
        // Made before the Local's value, so a teardown built on thread_local destructors (run in reverse
        // order of construction) would destroy the value first.
        thread_local TlsReader reader;
        reader.local = &local;
        reader.seen = &seen;
        local.emplace(42);
    });
    t.join();
    CHECK(seen == 42);
    CHECK(g_stats.dtors == 1);
    CHECK(g_stats.destroyed_on(worker, worker) == 1);
}

TEST_CASE("Local.ThreadExit.value_created_by_thread_local_destructor_is_destroyed" * doctest::timeout(30) *
          doctest::skip(!ctxlocal::detail::platform::thread_local_destructors_first)) {
    g_stats.reset();
    Local<Counted> local;
    std::thread::id worker;
    std::thread t([&] {
        worker = std::this_thread::get_id();
        thread_local TlsWriter writer;  // the thread's first and only Local use is in its destructor
        writer.local = &local;
    });
    t.join();
    CHECK(g_stats.ctors == 1);
    CHECK(g_stats.dtors == 1);
    CHECK(g_stats.destroyed_on(worker, worker) == 1);
    CHECK(local.count() == 0);
}

namespace {
struct LateUse {
    pthread_key_t key{};
    Local<Counted>* local = nullptr;
    int early_calls = 0;
    bool get_was_null = false;
    int refused = 0;
    int created = 0;
};

/// A pthread key destructor that runs after ctxlocal's teardown (it re-arms itself until the
/// teardown has happened).
void late_key_destructor(void* arg) {
    auto* s = static_cast<LateUse*>(arg);
    if (s->local->get() != nullptr && s->early_calls < 3) {
        ++s->early_calls;
        pthread_setspecific(s->key, s);
        return;
    }
    s->get_was_null = s->local->get() == nullptr;
    try {
        s->local->value();
        ++s->created;
    } catch (const ctxlocal::unbound_error&) {
        ++s->refused;
    }
}
}  // namespace

TEST_CASE("Local.ThreadExit.use_after_teardown_reports_no_value" * doctest::timeout(30)) {
    g_stats.reset();
    Local<Counted> local;
    LateUse late;
    late.local = &local;
    REQUIRE(pthread_key_create(&late.key, &late_key_destructor) == 0);
    std::thread t([&] {
        local.emplace(1);
        pthread_setspecific(late.key, &late);
    });
    t.join();
    pthread_key_delete(late.key);
    CHECK(late.get_was_null);
    CHECK(late.refused == 1);
    CHECK(late.created == 0);
    CHECK(g_stats.ctors == g_stats.dtors);  // nothing leaked
    CHECK(local.count() == 0);
}

// ===================================================================================================
// Destroying a Local

TEST_CASE("Local.Destroy.destroys_every_threads_value_and_slot_reuse_is_clean" * doctest::timeout(30)) {
    const int n = thread_count();
    constexpr int rounds = 10;
    g_stats.reset();
    const std::thread::id main_id = std::this_thread::get_id();
    Barrier barrier(n + 1);
    Local<Counted>* a = nullptr;
    Local<Counted>* b = nullptr;
    std::atomic<int> stale{0};
    std::atomic<int> not_fresh{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
        threads.emplace_back([&, i] {
            for (int r = 0; r < rounds; ++r) {
                barrier.arrive_and_wait();  // 1: `a` exists
                a->emplace(i + 1);
                barrier.arrive_and_wait();  // 2: values set; main destroys `a` and makes `b`
                barrier.arrive_and_wait();  // 3
                if (b->get() != nullptr) ++stale;
                if (b->value().v != 0) ++not_fresh;
                barrier.arrive_and_wait();  // 4: main destroys `b`
                barrier.arrive_and_wait();  // 5
            }
        });
    }
    int wrong_count = 0, not_all_destroyed = 0, destroyed_off_main = 0;
    for (int r = 0; r < rounds; ++r) {
        g_stats.reset();
        a = new Local<Counted>();
        a->emplace(-1);
        barrier.arrive_and_wait();  // 1
        barrier.arrive_and_wait();  // 2
        if (a->count() != static_cast<std::size_t>(n + 1)) ++wrong_count;
        delete a;  // the workers are alive and parked at barrier 3
        a = nullptr;
        if (g_stats.dtors != n + 1) ++not_all_destroyed;
        if (g_stats.destroyed_on(main_id) != n + 1) ++destroyed_off_main;
        b = new Local<Counted>();  // reuses a's slot: the free id was just released
        b->emplace(-2);
        barrier.arrive_and_wait();  // 3
        barrier.arrive_and_wait();  // 4
        if (b->count() != static_cast<std::size_t>(n + 1)) ++wrong_count;
        delete b;  // the workers are alive and parked at barrier 5
        b = nullptr;
        if (g_stats.ctors != g_stats.dtors) ++not_all_destroyed;
        if (g_stats.destroyed_on(main_id) != 2 * (n + 1)) ++destroyed_off_main;
        barrier.arrive_and_wait();  // 5
    }
    join_all(threads);
    CHECK(wrong_count == 0);
    CHECK(not_all_destroyed == 0);
    CHECK(destroyed_off_main == 0);
    CHECK(stale == 0);
    CHECK(not_fresh == 0);
}

namespace {
/// A value whose destructor (run by its thread's exit) says it started, then waits to be let go.
struct SlowToDie {
    Gate* entered;
    Gate* proceed;
    std::atomic<bool>* finished;
    SlowToDie(Gate* e, Gate* p, std::atomic<bool>* f) : entered(e), proceed(p), finished(f) {}
    ~SlowToDie() {
        entered->open();
        proceed->wait();
        *finished = true;
    }
};
}  // namespace

TEST_CASE("Local.Destroy.waits_for_exiting_thread_and_frees_slot_once" * doctest::timeout(30)) {
    Watchdog watchdog("Local.Destroy.waits_for_exiting_thread_and_frees_slot_once");
    Gate entered, proceed, destroyer_running;
    std::atomic<bool> finished{false};
    auto* local = new Local<SlowToDie>();
    std::atomic<bool> deleting{false};
    bool finished_when_delete_returned = false;
    // Running before the worker exits, not only created: winpthreads (mingw-w64) holds a new thread in its
    // start-up, before the thread function runs, while another thread runs its exit destructors (seen under
    // wine: the destroyer stuck in pthread_create_wrapper, the worker in the value's destructor waiting for
    // `proceed`, main waiting for `deleting`).
    std::thread destroyer([&] {
        destroyer_running.open();
        entered.wait();  // the worker is exiting and is inside the value's destructor
        deleting = true;
        delete local;
        finished_when_delete_returned = finished;
    });
    destroyer_running.wait();
    std::thread worker([&] { local->emplace(&entered, &proceed, &finished); });
    while (!deleting) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let ~Local reach its wait
    proceed.open();
    destroyer.join();
    worker.join();
    CHECK(finished_when_delete_returned);

    // The slot id is free again, and free once: two new Locals must not share storage.
    auto* first = new Local<int>();
    auto* second = new Local<int>();
    first->value() = 1;
    CHECK(second->get() == nullptr);
    second->value() = 2;
    const bool shared_slot = first->value() != 1;
    CHECK_FALSE(shared_slot);
    if (!shared_slot) {
        delete first;
        delete second;
    }  // else both stay alive, keeping the doubly freed id out of the later tests
}

TEST_CASE("Local.Destroy.racing_thread_exit" * doctest::timeout(30)) {
    Watchdog watchdog("Local.Destroy.racing_thread_exit");
    const int n = thread_count();
    g_stats.reset();
    const std::thread::id main_id = std::this_thread::get_id();
    int leftover_after_delete = 0;
    for (int round = 0; round < 30; ++round) {
        auto* local = new Local<Counted>();
        Latch ready(n);
        Gate go;
        std::vector<std::thread> threads;
        for (int i = 0; i < n; ++i) {
            threads.emplace_back([&, i] {
                local->emplace(i);
                ready.count_down();
                go.wait();
            });  // then exits: teardown races with the delete below
        }
        ready.wait();
        go.open();
        if (round % 2 == 1) std::this_thread::yield();
        delete local;
        // Every value is gone once the destructor returns: either it destroyed it here, or it waited
        // for the exiting thread that was destroying it.
        if (g_stats.ctors != g_stats.dtors) ++leftover_after_delete;
        join_all(threads);
    }
    CHECK(leftover_after_delete == 0);
    CHECK(g_stats.ctors == 30 * n);
    CHECK(g_stats.dtors == 30 * n);
    // Each value died on its own thread (exit) or on the destroying thread.
    std::lock_guard<std::mutex> lock(g_stats.mutex);
    int elsewhere = 0;
    for (const auto& d : g_stats.destroyed) {
        if (d.second != d.first && d.second != main_id) ++elsewhere;
    }
    CHECK(elsewhere == 0);
}

TEST_CASE("Local.Destroy.racing_for_each_of_other_locals" * doctest::timeout(30)) {
    Watchdog watchdog("Local.Destroy.racing_for_each_of_other_locals");
    g_stats.reset();
    Local<int> shared;
    std::atomic<bool> stop{false};
    std::atomic<long> visits{0};
    std::vector<std::thread> visitors;
    for (int v = 0; v < 2; ++v) {
        visitors.emplace_back([&] {
            shared.emplace(1);  // constructed before it is published to for_each
            while (!stop) {
                long sum = 0;
                shared.for_each([&](int& x) { sum += x; });
                visits += sum;
                (void)shared.count();
                std::this_thread::yield();  // let the destroying thread take the lock too
            }
        });
    }
    // The visitors are running before the first Local is destroyed, and until the last one is.
    CHECK(test_support::wait_until([&] { return visits > 0; }, std::chrono::seconds(20)));
    for (int round = 0; round < 30; ++round) {
        auto* local = new Local<Counted>();
        Latch ready(2);
        std::vector<std::thread> threads;
        for (int i = 0; i < 2; ++i) {
            threads.emplace_back([&, i] {
                local->emplace(i);
                ready.count_down();
            });  // exits at once
        }
        local->emplace(-1);
        ready.wait();
        delete local;
        join_all(threads);
    }
    stop = true;
    join_all(visitors);
    CHECK(g_stats.ctors == 90);
    CHECK(g_stats.dtors == 90);
}

// ===================================================================================================
// Construction: constant initialisation, traits

static_assert(std::is_nothrow_default_constructible_v<Local<int>>);
static_assert(!std::is_copy_constructible_v<Local<int>>);
static_assert(!std::is_copy_assignable_v<Local<int>>);
static_assert(!std::is_move_constructible_v<Local<int>>);
static_assert(!std::is_move_assignable_v<Local<int>>);
static_assert(std::is_same_v<Local<int>::value_type, int>);

// A compile error when the initialiser is not a constant expression.
#if defined(__clang__)
#define LOCAL_TEST_CONSTINIT [[clang::require_constant_initialization]]
#elif defined(__GNUC__) && __GNUC__ >= 10
#define LOCAL_TEST_CONSTINIT __constinit
#else
#define LOCAL_TEST_CONSTINIT
#endif

namespace local_test_globals {
extern Local<int> g_answer;
extern Local<int> g_seven;

/// Dynamically initialised before g_answer and g_seven are defined (same TU, earlier): it works only if
/// they were constant-initialised. If g_answer were dynamically initialised, its constructor would run
/// after this one and wipe the slot this one took.
struct UsesLocalsEarly {
    int answer_seen;
    int seven_seen;
    UsesLocalsEarly() {
        g_answer.value() = 42;
        answer_seen = *g_answer.get();
        seven_seen = g_seven.value();
    }
};
UsesLocalsEarly g_early;

LOCAL_TEST_CONSTINIT Local<int> g_answer;
LOCAL_TEST_CONSTINIT Local<int> g_seven{[] { return 7; }};
}  // namespace local_test_globals

TEST_CASE("Local.Construction.namespace_scope_local_is_constant_initialised") {
    using namespace local_test_globals;
    CHECK(g_early.answer_seen == 42);
    CHECK(g_early.seven_seen == 7);
    REQUIRE(g_answer.get() != nullptr);
    CHECK(*g_answer.get() == 42);  // the value set before "construction" survived it
    CHECK(g_seven.value() == 7);
}
