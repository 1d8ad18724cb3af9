// A watchdog for tests that would hang if the code under test deadlocked.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

namespace test_support {

/// Ends the process with a message if not destroyed within `seconds`: turns a deadlock into a failure
/// that names the test, where doctest::timeout alone would wait forever.
class Watchdog {
public:
    explicit Watchdog(const char* what, int seconds = 30)
        : thread_([this, what, seconds] {
              std::unique_lock<std::mutex> lock(mutex_);
              if (!cv_.wait_for(lock, std::chrono::seconds(seconds), [&] { return done_; })) {
                  std::fprintf(stderr, "FATAL: %s did not finish within %d s (deadlock?)\n", what, seconds);
                  std::_Exit(3);
              }
          }) {}
    ~Watchdog() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            done_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }
    Watchdog(const Watchdog&) = delete;
    Watchdog& operator=(const Watchdog&) = delete;

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool done_ = false;
    std::thread thread_;
};

}  // namespace test_support
