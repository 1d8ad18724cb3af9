// Counts calls to the global operator new (all forms) made by the calling thread. The replacement
// operators live in alloc_count.cpp, which is linked into the benchmark binary only.
#pragma once

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>

namespace bench {

/// Allocations made so far by the calling thread. Never allocates.
std::uint64_t thread_allocs() noexcept;

/// Allocations made by threads that the benchmarks started and that reported before exiting.
inline std::atomic<std::uint64_t> child_allocs{0};

/// Counts the calling thread's allocations between construction and report(), minus those made while
/// timing was paused (pause()/resume() mirror State::PauseTiming/ResumeTiming).
class AllocCounter {
public:
    AllocCounter() noexcept : start_(thread_allocs()) {}
    void pause() noexcept { paused_at_ = thread_allocs(); }
    void resume() noexcept { excluded_ += thread_allocs() - paused_at_; }
    /// Stores allocs/op (this thread's allocations divided by all threads' iterations; Google Benchmark
    /// sums the counter over threads).
    void report(benchmark::State& state, std::uint64_t extra = 0) const {
        const auto n = thread_allocs() - start_ - excluded_ + extra;
        state.counters["allocs/op"] =
            benchmark::Counter(static_cast<double>(n), benchmark::Counter::kAvgIterations);
    }

private:
    std::uint64_t start_;
    std::uint64_t paused_at_ = 0;
    std::uint64_t excluded_ = 0;
};

}  // namespace bench
