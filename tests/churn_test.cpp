// Churn (issue 6): threads are created and exit continuously while Locals are created and destroyed
// (the last reference may be dropped on any thread, racing other threads' exits) and for_each visits
// them. Afterwards, with every thread joined and every Local gone, constructions and destructions of
// values balance exactly: no leak, no double destroy, no visit of a destroyed value. Meant to be run under
// ThreadSanitizer and AddressSanitizer too (scripts/test.sh tsan / asan), which check the races and the
// memory on top of the counts.
#include <doctest/doctest.h>
#include <ctxlocal/local.hpp>
#include <ctxlocal/local_stack.hpp>

#include "support/environment.hpp"
#include "support/sync.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

namespace {

using test_support::sanitized;

constexpr std::uint32_t alive_magic = 0xA11CE5u;
constexpr std::uint32_t dead_magic = 0xDEADu;

std::atomic<long> constructed{0};
std::atomic<long> destroyed{0};
std::atomic<long> double_destroyed{0};
std::atomic<long> visited_dead{0};

/// A value that counts its constructions and destructions and notices being destroyed twice.
struct Counted {
    std::uint32_t magic = alive_magic;
    int payload;
    explicit Counted(int p = 0) : payload(p) { constructed.fetch_add(1, std::memory_order_relaxed); }
    Counted(const Counted& other) : payload(other.payload) {
        constructed.fetch_add(1, std::memory_order_relaxed);
    }
    Counted(Counted&& other) noexcept : payload(other.payload) {
        constructed.fetch_add(1, std::memory_order_relaxed);
    }
    Counted& operator=(const Counted&) = delete;
    Counted& operator=(Counted&&) = delete;
    ~Counted() {
        if (magic != alive_magic) double_destroyed.fetch_add(1, std::memory_order_relaxed);
        magic = dead_magic;
        destroyed.fetch_add(1, std::memory_order_relaxed);
    }
};

using Pool = std::vector<std::shared_ptr<ctxlocal::Local<Counted>>>;

struct Shared {
    std::mutex mutex;
    Pool pool;
    ctxlocal::Local<Counted> forever{
        [] { return Counted(7); }};  // destroyed only by thread exits (and at the end)
    ctxlocal::LocalStack<Counted> stack;
    std::atomic<bool> stop{false};
    std::atomic<long> for_each_visits{0};
    std::atomic<long> locals_made{0};

    std::shared_ptr<ctxlocal::Local<Counted>> pick(std::mt19937& rng) {
        std::lock_guard<std::mutex> lock(mutex);
        return pool[rng() % pool.size()];
    }
    /// Replaces a pool entry; the old Local dies when its last user drops it, on that user's thread.
    void replace(std::mt19937& rng) {
        auto fresh = std::make_shared<ctxlocal::Local<Counted>>();
        locals_made.fetch_add(1, std::memory_order_relaxed);
        std::lock_guard<std::mutex> lock(mutex);
        pool[rng() % pool.size()].swap(fresh);
    }
};

/// A short-lived thread: makes values in several Locals and the stack, sometimes releases them, and
/// exits with the rest still held (thread exit destroys them).
void short_lived(Shared& shared, unsigned seed) {
    std::mt19937 rng(seed);
    (void)shared.forever.value();
    for (int i = 0; i < 6; ++i) {
        std::shared_ptr<ctxlocal::Local<Counted>> local = shared.pick(rng);
        switch (rng() % 5) {
            case 0:
                (void)local->value();
                break;
            case 1:
                (void)local->emplace(static_cast<int>(rng() % 100));
                break;
            case 2:
                (void)local->value();
                local->reset();
                break;
            case 3:
                shared.stack.push(Counted(i));
                break;
            default:
                (void)shared.stack.pop();
                break;
        }
        // Dropping `local` here may destroy the Local on this thread (the pool replaced it meanwhile).
    }
}

/// Visits every value of pool Locals and of `forever`, checking each is alive.
void visitor(Shared& shared, unsigned seed) {
    std::mt19937 rng(seed);
    unsigned rounds = 0;
    while (!shared.stop.load(std::memory_order_acquire)) {
        std::shared_ptr<ctxlocal::Local<Counted>> local = shared.pick(rng);
        auto check = [&](Counted& c) {
            if (c.magic != alive_magic) visited_dead.fetch_add(1, std::memory_order_relaxed);
            shared.for_each_visits.fetch_add(1, std::memory_order_relaxed);
        };
        local->for_each(check);
        shared.forever.for_each(check);
        // (Not the stack: its owners push and pop while a visit would read it, which is the caller's race.)
        (void)shared.stack.local().count();
        (void)local->count();
        if (++rounds % 16 == 0) std::this_thread::yield();  // let the churn run (one core, or valgrind)
    }
}

/// The churn body, run with `threads` short-lived threads alive at a time.
void churn(int threads) {
    constructed = 0;
    destroyed = 0;
    double_destroyed = 0;
    visited_dead = 0;
    const int spawn_target = sanitized ? 1500 : 10000;
    // valgrind runs one thread at a time and lets the visitor hog it: a smaller minimum there.
    const bool under_valgrind = test_support::under_valgrind();
    const int min_spawned = under_valgrind ? 50 : 200;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(sanitized ? 40 : 20);
    int spawned = 0;
    long for_each_visits = 0;
    long locals_made = 0;
    {
        Shared shared;
        for (int i = 0; i < 8; ++i) shared.pool.push_back(std::make_shared<ctxlocal::Local<Counted>>());
        std::thread replacer([&] {
            std::mt19937 rng(1);
            while (!shared.stop.load(std::memory_order_acquire)) {
                shared.replace(rng);
                std::this_thread::yield();
            }
        });
        std::thread visiting([&] { visitor(shared, 2); });
        std::vector<std::thread> live;
        std::size_t oldest = 0;
        // At least min_spawned threads whatever the clock says (under valgrind, which runs one thread at a
        // time, the deadline can come first), then up to spawn_target until the deadline.
        while (spawned < min_spawned ||
               (spawned < spawn_target && std::chrono::steady_clock::now() < deadline)) {
            if (live.size() < static_cast<std::size_t>(threads)) {
                live.emplace_back(short_lived, std::ref(shared), static_cast<unsigned>(spawned));
            } else {
                live[oldest].join();
                live[oldest] = std::thread(short_lived, std::ref(shared), static_cast<unsigned>(spawned));
                oldest = (oldest + 1) % live.size();
            }
            ++spawned;
        }
        test_support::join_all(live);
        shared.stop.store(true, std::memory_order_release);
        replacer.join();
        visiting.join();
        for_each_visits = shared.for_each_visits.load();
        locals_made = shared.locals_made.load();
        // Only this thread's values remain; they die with the Locals here.
        shared.pool.clear();
    }
    MESSAGE("churn: " << threads << " threads at a time, " << spawned << " threads started, " << locals_made
                      << " Locals replaced, " << constructed.load() << " values made, " << for_each_visits
                      << " values visited");
    CHECK(locals_made > 0);
    // The visits really raced with the churn (not checked under valgrind, whose scheduler may starve the
    // visitor: that leg is for memory errors, the plain and sanitizer legs for the race).
    if (!under_valgrind) CHECK(for_each_visits > 0);
    CHECK(constructed.load() > spawned);
    CHECK(double_destroyed.load() == 0);
    CHECK(visited_dead.load() == 0);
    CHECK(destroyed.load() == constructed.load());
}

}  // namespace

TEST_CASE("Churn.ConstructionsBalance.2threads" * doctest::timeout(120)) { churn(2); }

TEST_CASE("Churn.ConstructionsBalance.4threads" * doctest::timeout(120)) { churn(4); }

TEST_CASE("Churn.ConstructionsBalance.8threads" * doctest::timeout(120)) { churn(8); }

// The race the churn found, made deterministic: a Local destroyed while an exiting thread is inside the
// destructor of that Local's value. The destroying thread waits for that destructor; both it and the
// exiting thread used to put the slot id back on the free list, so two later Locals shared one slot (one
// read the other's value; thread exit then called a wrong or null deleter).
namespace {

using test_support::Gate;

Gate in_destructor;
Gate finish_destructor;

struct SlowToDie {
    ~SlowToDie() {
        in_destructor.open();
        finish_destructor.wait();
    }
};

}  // namespace

TEST_CASE("Churn.LocalDestroyedDuringThreadExit.slot_reused_by_one_local_only" * doctest::timeout(30)) {
    auto* doomed = new ctxlocal::Local<SlowToDie>();
    std::thread exiting([&] { (void)doomed->value(); });  // its exit blocks in ~SlowToDie
    in_destructor.wait();
    std::thread destroyer([&] { delete doomed; });  // waits for the exiting thread's destructor
    // Give the destroyer time to reach that wait (if it has not, the test passes without proving much).
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    finish_destructor.open();
    exiting.join();
    destroyer.join();

    ctxlocal::Local<int> a;
    ctxlocal::Local<int> b;
    a.value() = 1;
    b.value() = 2;
    CHECK(a.get() != b.get());
    CHECK(*a.get() == 1);
    CHECK(*b.get() == 2);
    b.reset();
    CHECK(a.get() != nullptr);
}
