// Helpers shared by the tests: synchronisation (C++17 has no latch or barrier) and a live-object counter.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace test_support {

/// Blocks waiters until open() is called.
class Gate {
public:
    /// Notifies under the lock: a waiter may destroy the Gate as soon as it sees it open.
    void open() {
        std::lock_guard<std::mutex> lock(mutex_);
        open_ = true;
        cv_.notify_all();
    }
    void wait() {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return open_; });
    }
    /// True when the gate was opened within `timeout`.
    bool wait_for(std::chrono::milliseconds timeout) {
        std::unique_lock<std::mutex> lock(mutex_);
        return cv_.wait_for(lock, timeout, [&] { return open_; });
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool open_ = false;
};

/// wait() returns once count_down() was called n times.
class Latch {
public:
    explicit Latch(int n) : n_(n) {}
    void count_down() {
        std::lock_guard<std::mutex> lock(mutex_);
        if (--n_ == 0) cv_.notify_all();
    }
    void wait() {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return n_ <= 0; });
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    int n_;
};

/// A reusable barrier for n threads.
class Barrier {
public:
    explicit Barrier(int n) : n_(n) {}
    void arrive_and_wait() {
        std::unique_lock<std::mutex> lock(mutex_);
        const unsigned generation = generation_;
        if (++arrived_ == n_) {
            arrived_ = 0;
            ++generation_;
            cv_.notify_all();
            return;
        }
        cv_.wait(lock, [&] { return generation != generation_; });
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    int n_;
    int arrived_ = 0;
    unsigned generation_ = 0;
};

/// Counts live objects: every constructor increments, the destructor decrements.
struct Counted {
    static inline std::atomic<int> live{0};
    int value;
    explicit Counted(int v = 0) noexcept : value(v) { ++live; }
    Counted(const Counted& other) noexcept : value(other.value) { ++live; }
    Counted(Counted&& other) noexcept : value(other.value) { ++live; }
    Counted& operator=(const Counted&) = default;
    Counted& operator=(Counted&&) = default;
    ~Counted() { --live; }
};

/// The calling thread's id, through a call no compiler can see into. Inside a coroutine that resumes on
/// another thread, clang (before LLVM 16) may reuse a std::this_thread::get_id() result from before the
/// suspension (pthread_self is declared `const`), so coroutine tests ask through this.
inline std::thread::id (*volatile current_thread_id)() = [] { return std::this_thread::get_id(); };

/// Joins every thread and empties the vector.
inline void join_all(std::vector<std::thread>& threads) {
    for (std::thread& t : threads) t.join();
    threads.clear();
}

/// Yields until `done()` is true or `timeout` has passed; returns done(). For tests that must not stop a
/// racing thread before it has done its part, on any schedule (valgrind runs one thread at a time).
template <class Predicate>
bool wait_until(Predicate done, std::chrono::seconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
        if (std::chrono::steady_clock::now() >= end) return done();
        std::this_thread::yield();
    }
    return true;
}

}  // namespace test_support
