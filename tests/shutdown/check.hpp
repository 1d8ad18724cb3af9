// Shared by the shutdown test programs (each its own process: they test how a process ends).
// A check prints what it checked; a failed check ends the process at once with exit code 1 (_Exit: no
// more destructors or handlers run, so a failure is never hidden by a later crash or hang).
#pragma once

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace shutdown_test {

inline std::atomic<int> checks_passed{0};

inline void check(bool ok, const std::string& what) {
    std::printf("%s %s\n", ok ? "ok:  " : "FAIL:", what.c_str());
    std::fflush(stdout);
    if (!ok) std::_Exit(1);
    checks_passed.fetch_add(1);
}

/// Construct first (it is destroyed last): at the very end of the exit it checks that `expected` checks
/// passed, i.e. that every destructor and handler that should have run did.
class Summary {
public:
    Summary(const char* program, int expected) : program_(program), expected_(expected) {}
    Summary(const Summary&) = delete;
    Summary& operator=(const Summary&) = delete;
    /// Changes how many checks must pass (before the process starts ending).
    void expect(int expected) noexcept { expected_ = expected; }

    ~Summary() {
        const int passed = checks_passed.load();
        std::printf("%s: %d of %d checks passed\n", program_, passed, expected_);
        std::fflush(stdout);
        if (passed != expected_) std::_Exit(1);
    }

private:
    const char* program_;
    int expected_;
};

}  // namespace shutdown_test
