// Thread helpers shared by the doctest files.
#pragma once

#include <doctest/doctest.h>

#include <thread>
#include <vector>

namespace test_support {

/// Runs the rest of the calling test case once per thread count (a doctest SUBCASE each).
inline int thread_count() {
    int n = 0;
    SUBCASE("threads=1") { n = 1; }
    SUBCASE("threads=2") { n = 2; }
    SUBCASE("threads=8") { n = 8; }
    return n;
}

/// Joins every thread and empties the vector.
inline void join_all(std::vector<std::thread>& threads) {
    for (std::thread& t : threads) t.join();
    threads.clear();
}

}  // namespace test_support
