// Thread helpers shared by the doctest files (join_all is in sync.hpp, which needs no doctest).
#pragma once

#include <doctest/doctest.h>

#include "sync.hpp"  // join_all, used with thread_count

namespace test_support {

/// Runs the rest of the calling test case once per thread count (a doctest SUBCASE each).
inline int thread_count() {
    int n = 0;
    SUBCASE("threads=1") { n = 1; }
    SUBCASE("threads=2") { n = 2; }
    SUBCASE("threads=8") { n = 8; }
    return n;
}

}  // namespace test_support
