// Tests of destroying values while threads exit (include/ctxlocal/detail/teardown.hpp): a Local destroyed
// while exiting threads destroy their values takes over the values they have not started, waits only for
// the destructor running at that moment, and never waits in a cycle. Each test would hang on a deadlock:
// a Watchdog turns that into a failure.
#include <doctest/doctest.h>
#include <ctxlocal/local.hpp>

#include "support/sync.hpp"
#include "support/watchdog.hpp"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

using ctxlocal::Local;
using test_support::Barrier;
using test_support::Gate;
using test_support::Watchdog;

namespace {

/// True when two Locals made now get separate slots (a slot freed twice would be handed out twice).
bool fresh_locals_are_independent() {
    auto* first = new Local<int>();
    auto* second = new Local<int>();
    first->value() = 1;
    const bool independent = second->get() == nullptr && (second->value() = 2, first->value() == 1);
    if (independent) {
        delete first;
        delete second;
    }  // else both stay alive, keeping a doubly freed slot out of later tests
    return independent;
}

/// A value whose destructor, at its thread's exit, meets the other thread's value destructor and then
/// destroys the other thread's Local.
struct DestroysOthersLocal {
    Local<DestroysOthersLocal>** other = nullptr;
    Barrier* meet = nullptr;
    std::atomic<int>* destroyed = nullptr;
    ~DestroysOthersLocal() {
        if (meet == nullptr) return;
        meet->arrive_and_wait();  // both threads are inside a value destructor now
        delete *other;
        ++*destroyed;
    }
};

}  // namespace

// Needs two thread exits at the same time: skipped where the platform runs one at a time (winpthreads:
// docs/platforms.md). Likewise Teardown.Wait.local_destroyed_by_its_own_value_waits_for_the_other_thread.
TEST_CASE("Teardown.CrossDestroy.two_exiting_threads_destroy_each_others_local" * doctest::timeout(60) *
          doctest::skip(!ctxlocal::detail::platform::concurrent_thread_exits)) {
    Watchdog watchdog("Teardown.CrossDestroy.two_exiting_threads_destroy_each_others_local");
    std::atomic<int> destroyed{0};
    for (int round = 0; round < 20; ++round) {
        auto* a = new Local<DestroysOthersLocal>();
        auto* b = new Local<DestroysOthersLocal>();
        Barrier meet(2);
        auto hold = [&](Local<DestroysOthersLocal>* mine, Local<DestroysOthersLocal>** other) {
            DestroysOthersLocal& v = mine->value();
            v.other = other;
            v.destroyed = &destroyed;
            v.meet = &meet;
        };
        std::thread first(hold, a, &b);
        std::thread second(hold, b, &a);
        first.join();  // neither exit may wait for the other forever
        second.join();
    }
    CHECK(destroyed.load() == 40);  // every value destroyed exactly once
    CHECK(fresh_locals_are_independent());
}

namespace {

/// A value whose destructor, when it is the first of its kind to run, blocks until `release` opens.
struct BlocksFirst {
    std::atomic<int>* started = nullptr;
    Gate* release = nullptr;
    std::atomic<int>* which = nullptr;  // the tag of the first one to start
    int tag = 0;
    std::thread::id* destroyed_on = nullptr;
    ~BlocksFirst() {
        if (started == nullptr) return;
        *destroyed_on = std::this_thread::get_id();
        if (started->fetch_add(1) == 0) {
            *which = tag;
            release->wait();
        }
    }
};

}  // namespace

TEST_CASE("Teardown.Takeover.destroyed_local_takes_over_values_not_started" * doctest::timeout(60)) {
    Watchdog watchdog("Teardown.Takeover.destroyed_local_takes_over_values_not_started");
    auto* one = new Local<BlocksFirst>();
    auto* two = new Local<BlocksFirst>();
    std::atomic<int> started{0};
    std::atomic<int> which{0};
    Gate release;
    std::thread::id destroyed_on[3];
    auto hold = [&](Local<BlocksFirst>* local, int tag) {
        BlocksFirst& v = local->value();
        v.release = &release;
        v.which = &which;
        v.tag = tag;
        v.destroyed_on = &destroyed_on[tag];
        v.started = &started;
    };
    std::thread worker([&] {
        hold(one, 1);
        hold(two, 2);
    });
    const std::thread::id worker_id = worker.get_id();
    // `which` is set by the first destructor right after it counts itself in `started`: wait for it, not
    // for `started` (reading `which` too early would pick the Local whose destructor is blocked).
    REQUIRE(test_support::wait_until([&] { return which.load() != 0; }, std::chrono::seconds(30)));
    // The worker is exiting, blocked in the first value's destructor; the other value is queued behind it.
    const int blocked = which.load();
    CHECK(started.load() == 1);
    Local<BlocksFirst>*& queued_local = blocked == 1 ? two : one;
    delete queued_local;  // must not wait for the blocked worker: it takes the queued value over
    queued_local = nullptr;
    CHECK(started.load() == 2);
    CHECK((destroyed_on[3 - blocked] == std::this_thread::get_id()));
    release.open();
    worker.join();
    CHECK((destroyed_on[blocked] == worker_id));
    delete (blocked == 1 ? one : two);
    CHECK(fresh_locals_are_independent());
}

namespace {

/// A value of `home` whose destructor, on the thread marked `destroys`, destroys `home` itself, while the
/// other thread is in the middle of destroying its own value of the same Local.
struct DestroysItsLocalWhileOtherDestroys {
    Local<DestroysItsLocalWhileOtherDestroys>** home = nullptr;
    bool destroys = false;
    Gate* other_inside = nullptr;  // opened by the other thread's destructor
    Gate* other_may_finish = nullptr;
    std::atomic<bool>* deleting = nullptr;
    std::atomic<int>* destroyed = nullptr;
    ~DestroysItsLocalWhileOtherDestroys() {
        if (home == nullptr) return;
        if (destroys) {
            other_inside->wait();
            *deleting = true;
            delete *home;  // waits for the other thread's value, not for this one
        } else {
            other_inside->open();
            other_may_finish->wait();
        }
        ++*destroyed;
    }
};

}  // namespace

TEST_CASE("Teardown.Wait.local_destroyed_by_its_own_value_waits_for_the_other_thread" * doctest::timeout(60) *
          doctest::skip(!ctxlocal::detail::platform::concurrent_thread_exits)) {
    Watchdog watchdog("Teardown.Wait.local_destroyed_by_its_own_value_waits_for_the_other_thread");
    using Value = DestroysItsLocalWhileOtherDestroys;
    auto* local = new Local<Value>();
    Gate other_inside, other_may_finish;
    std::atomic<bool> deleting{false};
    std::atomic<int> destroyed{0};
    auto hold = [&](bool destroys) {
        Value& v = local->value();
        v.destroys = destroys;
        v.other_inside = &other_inside;
        v.other_may_finish = &other_may_finish;
        v.deleting = &deleting;
        v.destroyed = &destroyed;
        v.home = &local;
    };
    std::thread other(hold, false);
    std::thread destroyer(hold, true);
    REQUIRE(test_support::wait_until([&] { return deleting.load(); }, std::chrono::seconds(30)));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let the destroyer reach its wait
    CHECK(destroyed.load() == 0);                                 // it waits for the other thread's value
    other_may_finish.open();  // the other thread finishes; the destroyer must wake up
    other.join();
    destroyer.join();
    CHECK(destroyed.load() == 2);
    CHECK(fresh_locals_are_independent());
}
