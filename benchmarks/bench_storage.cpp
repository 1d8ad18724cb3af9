// Google Benchmark rows for propagation (issue 12's speed table): Storage::Scope enter+leave against a
// raw thread_local pointer swap, Local::get() inside a Storage, wrap(f) capture + call, and the cost per
// co_await of a ctxlocal::task against a minimal task without Storage handling. Compiled with -std=c++20
// (the task rows need coroutines); the operations are out of line in storage_peers.cpp.
#include <benchmark/benchmark.h>

#include <ctxlocal/storage.hpp>
#include <ctxlocal/task.hpp>

#include "alloc_count.hpp"
#include "peers.hpp"
#include "storage_peers.hpp"

namespace bench {
namespace {

// ---------------------------------------------------------------------------------------------------
// Storage::Scope enter + leave. Each thread has its own Storage (one Storage runs on one thread at a time).

void raw_swap(benchmark::State& state) {
    long target = 0;
    AllocCounter allocs;
    for (auto _ : state) storage::raw_swap(&target);
    allocs.report(state);
}

void scope(benchmark::State& state) {
    const ctxlocal::Storage s;
    storage::scope_enter_leave(s);  // the thread's first entry makes its record: not timed
    AllocCounter allocs;
    for (auto _ : state) storage::scope_enter_leave(s);
    allocs.report(state);
}

/// Entering a Storage that this thread has entered already (a Scope inside a Scope of the same Storage).
void scope_nested(benchmark::State& state) {
    const ctxlocal::Storage s;
    const ctxlocal::Storage::Scope outer(s);
    AllocCounter allocs;
    for (auto _ : state) storage::scope_enter_leave(s);
    allocs.report(state);
}

void run(benchmark::State& state) {
    const ctxlocal::Storage s;
    storage::run(s);
    AllocCounter allocs;
    for (auto _ : state) {
        long v = storage::run(s);
        benchmark::DoNotOptimize(v);
    }
    allocs.report(state);
}

// ---------------------------------------------------------------------------------------------------
// Local::get() inside an entered Storage: the same accessor as Read/ctxlocal (Ctx::get in peers.cpp),
// reading the Storage's value instead of the thread's.

void read_in_storage(benchmark::State& state) {
    const ctxlocal::Storage s;
    const ctxlocal::Storage::Scope in(s);
    Ctx::ensure();  // the Storage's value
    AllocCounter allocs;
    for (auto _ : state) {
        Value v = *Ctx::get();
        benchmark::DoNotOptimize(v);
    }
    allocs.report(state);
}

// ---------------------------------------------------------------------------------------------------
// wrap(f) capture + call.

template <long (*Call)(long)>
void call(benchmark::State& state) {
    AllocCounter allocs;
    long x = 0;
    for (auto _ : state) {
        x = Call(x);
        benchmark::DoNotOptimize(x);
    }
    allocs.report(state);
}

/// With a Storage current at capture: wrap takes a reference to it, the call enters it (nested, since this
/// thread has it entered) and leaves, the callable's destruction drops the reference.
void wrap_storage_current(benchmark::State& state) {
    const ctxlocal::Storage s;
    const ctxlocal::Storage::Scope in(s);
    call<&storage::wrap_call>(state);
}

/// With none: wrap makes a fresh Storage (allocates its record), the call enters and leaves it, the
/// callable's destruction releases it (under the registry lock).
void wrap_no_storage(benchmark::State& state) {
    storage::scope_enter_leave(ctxlocal::Storage());  // the thread's record exists, as in steady state
    call<&storage::wrap_call>(state);
}

// ---------------------------------------------------------------------------------------------------
// co_await: a task awaits a child task that completes at once, once per iteration (the child's frame is
// allocated and freed every time, for both task types); or awaits an awaitable that suspends and resumes
// at once (inside a ctxlocal::task, the Storage is left and entered again).

ctxlocal::task<long> ctx_await_loop(benchmark::State& state) {
    long sum = 0;
    for (auto _ : state) sum += co_await task_peers::ctx_child();
    co_return sum;
}

plain::task<long> plain_await_loop(benchmark::State& state) {
    long sum = 0;
    for (auto _ : state) sum += co_await task_peers::plain_child();
    co_return sum;
}

ctxlocal::task<long> ctx_suspend_loop(benchmark::State& state) {
    for (auto _ : state) co_await ResumeAtOnce{};
    co_return 0;
}

plain::task<long> plain_suspend_loop(benchmark::State& state) {
    for (auto _ : state) co_await ResumeAtOnce{};
    co_return 0;
}

template <plain::task<long> (*Loop)(benchmark::State&)>
void plain_task(benchmark::State& state) {
    AllocCounter allocs;
    long v = Loop(state).run();
    benchmark::DoNotOptimize(v);
    allocs.report(state);
}

/// sync_wait runs the loop in a fresh Storage (none is current here), entered on this thread.
template <ctxlocal::task<long> (*Loop)(benchmark::State&)>
void ctx_task(benchmark::State& state) {
    AllocCounter allocs;
    long v = ctxlocal::sync_wait(Loop(state));
    benchmark::DoNotOptimize(v);
    allocs.report(state);
}

// ---------------------------------------------------------------------------------------------------
// Registration, in report order.

const bool registered = [] {
    benchmark::RegisterBenchmark("StorageScope/raw_thread_local_swap", raw_swap)
        ->Threads(1)
        ->Threads(2)
        ->UseRealTime();
    benchmark::RegisterBenchmark("StorageScope/ctxlocal", scope)->Threads(1)->Threads(2)->UseRealTime();
    benchmark::RegisterBenchmark("StorageScope/ctxlocal_nested", scope_nested)->UseRealTime();
    benchmark::RegisterBenchmark("StorageScope/ctxlocal_run", run)->UseRealTime();

    benchmark::RegisterBenchmark("Read/ctxlocal_in_storage", read_in_storage)
        ->Threads(1)
        ->Threads(2)
        ->UseRealTime();

    benchmark::RegisterBenchmark("WrapCall/std_function", call<&storage::std_function_call>)->UseRealTime();
    benchmark::RegisterBenchmark("WrapCall/ctxlocal_storage_current", wrap_storage_current)->UseRealTime();
    benchmark::RegisterBenchmark("WrapCall/ctxlocal_no_storage", wrap_no_storage)->UseRealTime();

    benchmark::RegisterBenchmark("TaskAwait/plain_task", plain_task<&plain_await_loop>)->UseRealTime();
    benchmark::RegisterBenchmark("TaskAwait/ctxlocal", ctx_task<&ctx_await_loop>)->UseRealTime();
    benchmark::RegisterBenchmark("TaskSuspend/plain_task", plain_task<&plain_suspend_loop>)->UseRealTime();
    benchmark::RegisterBenchmark("TaskSuspend/ctxlocal", ctx_task<&ctx_suspend_loop>)->UseRealTime();
    return true;
}();

}  // namespace
}  // namespace bench
