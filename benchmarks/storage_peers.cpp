// Definitions of the propagation rows' operations (see storage_peers.hpp for why they live out of line).
#include "storage_peers.hpp"

#include <functional>

namespace bench {
namespace storage {

namespace {
thread_local void* raw_current = nullptr;
}  // namespace

BENCH_OPAQUE void raw_swap(void* p) {
    void* const old = raw_current;
    raw_current = p;
    __asm__ volatile("" ::: "memory");  // both stores happen, as the Scope's do
    raw_current = old;
}

BENCH_OPAQUE void scope_enter_leave(const ctxlocal::Storage& s) { const ctxlocal::Storage::Scope in(s); }

BENCH_OPAQUE long run(const ctxlocal::Storage& s) {
    return s.run([] { return 1L; });
}

BENCH_OPAQUE long std_function_call(long x) {
    const std::function<long()> f = [x] { return x + 1; };
    return f();
}

BENCH_OPAQUE long wrap_call(long x) {
    auto w = ctxlocal::wrap([x] { return x + 1; });
    return w();
}

}  // namespace storage

namespace task_peers {

BENCH_OPAQUE ctxlocal::task<long> ctx_child() { co_return 1; }
BENCH_OPAQUE plain::task<long> plain_child() { co_return 1; }

}  // namespace task_peers
}  // namespace bench
