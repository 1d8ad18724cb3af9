// Instructions per operation of the propagation rows, for valgrind --tool=callgrind (the noise-free second
// measure of bench_storage.cpp's rows, like callgrind_read.cpp for the reads).
//
//     callgrind_storage <op> <iterations>
//
// Runs <op> <iterations> times through the same out-of-line operations as the benchmark binary
// (storage_peers.cpp). run.sh runs it with N and 2N iterations and divides the difference of the
// instruction totals by N, so start-up and set-up cancel.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "storage_peers.hpp"

namespace {

using namespace bench;

ctxlocal::task<long> ctx_await_loop(long n) {
    long sum = 0;
    for (long i = 0; i < n; ++i) sum += co_await task_peers::ctx_child();
    co_return sum;
}

plain::task<long> plain_await_loop(long n) {
    long sum = 0;
    for (long i = 0; i < n; ++i) sum += co_await task_peers::plain_child();
    co_return sum;
}

ctxlocal::task<long> ctx_suspend_loop(long n) {
    for (long i = 0; i < n; ++i) co_await ResumeAtOnce{};
    co_return n;
}

plain::task<long> plain_suspend_loop(long n) {
    for (long i = 0; i < n; ++i) co_await ResumeAtOnce{};
    co_return n;
}

template <class F>
long repeat(long n, F f) {
    long x = 0;
    for (long i = 0; i < n; ++i) {
        x = f(x);
        __asm__ volatile("" : "+r"(x));  // keep each call
    }
    return x;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s <op> <iterations>\n", argv[0]);
        return 2;
    }
    const char* op = argv[1];
    const long n = std::atol(argv[2]);
    long sum = 0;
    long target = 0;
    if (std::strcmp(op, "StorageScope/raw_thread_local_swap") == 0) {
        sum = repeat(n, [&](long x) {
            storage::raw_swap(&target);
            return x;
        });
    } else if (std::strcmp(op, "StorageScope/ctxlocal") == 0) {
        const ctxlocal::Storage s;
        storage::scope_enter_leave(s);
        sum = repeat(n, [&](long x) {
            storage::scope_enter_leave(s);
            return x;
        });
    } else if (std::strcmp(op, "StorageScope/ctxlocal_nested") == 0) {
        const ctxlocal::Storage s;
        const ctxlocal::Storage::Scope outer(s);
        sum = repeat(n, [&](long x) {
            storage::scope_enter_leave(s);
            return x;
        });
    } else if (std::strcmp(op, "WrapCall/std_function") == 0) {
        sum = repeat(n, &storage::std_function_call);
    } else if (std::strcmp(op, "WrapCall/ctxlocal_storage_current") == 0) {
        const ctxlocal::Storage s;
        const ctxlocal::Storage::Scope in(s);
        sum = repeat(n, &storage::wrap_call);
    } else if (std::strcmp(op, "WrapCall/ctxlocal_no_storage") == 0) {
        storage::scope_enter_leave(ctxlocal::Storage());
        sum = repeat(n, &storage::wrap_call);
    } else if (std::strcmp(op, "TaskAwait/plain_task") == 0) {
        sum = plain_await_loop(n).run();
    } else if (std::strcmp(op, "TaskAwait/ctxlocal") == 0) {
        sum = ctxlocal::sync_wait(ctx_await_loop(n));
    } else if (std::strcmp(op, "TaskSuspend/plain_task") == 0) {
        sum = plain_suspend_loop(n).run();
    } else if (std::strcmp(op, "TaskSuspend/ctxlocal") == 0) {
        sum = ctxlocal::sync_wait(ctx_suspend_loop(n));
    } else {
        std::fprintf(stderr, "unknown op %s\n", op);
        return 2;
    }
    std::printf("%ld\n", sum);
    return 0;
}
