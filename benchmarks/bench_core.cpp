// Google Benchmark rows for the core: Local, LocalStack, LocalProxy against every peer, in one binary.
//
// Names are "<operation>/<peer>[/<arg>]"; Google Benchmark appends "/real_time" and "/threads:N". The
// report script (report.py) groups rows by operation and computes the ratios. Every row reports
// allocs/op from the counting operator new in alloc_count.cpp. Rows that run on 1 and 2 threads use
// real time, so that ns/op is the inverse of the aggregate throughput of all threads.
#include <benchmark/benchmark.h>

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "alloc_count.hpp"
#include "peers.hpp"

namespace bench {
namespace {

// ---------------------------------------------------------------------------------------------------
// Read/write operations, each on 1 and 2 threads. Each thread works on its own value of a shared object.

template <class P>
void read(benchmark::State& state) {
    P::ensure();
    AllocCounter allocs;
    for (auto _ : state) {
        Value v = *P::get();
        benchmark::DoNotOptimize(v);
    }
    allocs.report(state);
}

/// First use on a thread: make the calling thread's value of an object that has none yet. The objects
/// are made in batches of 256 fresh ones (ctxlocal: new Locals; pthread: new keys; ...) with the timer
/// paused, so each timed iteration is exactly one first use: for ctxlocal, taking a slot id, the
/// registry lock, storing into the thread's table (grown by the first batch only) and allocating the
/// value. Destroying a batch is not timed (LocalLifecycle measures create+destroy). A fresh thread per
/// iteration would measure thread creation instead (ThreadStart4 does that).
template <class P>
void first_use(benchmark::State& state) {
    constexpr std::size_t batch = 256;
    AllocCounter allocs;
    allocs.pause();
    auto many = P::many(batch);
    allocs.resume();
    std::size_t i = 0;
    for (auto _ : state) {
        if (i == batch) {
            state.PauseTiming();
            allocs.pause();
            many.reset();
            many = P::many(batch);
            allocs.resume();
            state.ResumeTiming();
            i = 0;
        }
        Value& v = P::first_use(*many, i++);
        benchmark::DoNotOptimize(v);
    }
    allocs.pause();
    many.reset();
    allocs.resume();
    allocs.report(state);
}

template <class P>
void replace(benchmark::State& state) {
    P::ensure();
    AllocCounter allocs;
    Value i = 0;
    for (auto _ : state) P::replace(++i);
    allocs.report(state);
}

/// Create the calling thread's value, then release it (the per-request cleanup of LocalManager).
template <class P>
void make_reset(benchmark::State& state) {
    AllocCounter allocs;
    for (auto _ : state) {
        P::make();
        P::reset();
    }
    allocs.report(state);
}

template <class P>
void push_pop(benchmark::State& state) {
    P::ensure_stack();  // steady state: the thread's stack exists and has capacity
    AllocCounter allocs;
    for (auto _ : state) {
        P::push(1);
        Value v = P::pop();
        benchmark::DoNotOptimize(v);
    }
    allocs.report(state);
}

template <class P>
void top(benchmark::State& state) {
    P::ensure_stack();
    P::push(1);
    AllocCounter allocs;
    for (auto _ : state) {
        Value v = *P::top();
        benchmark::DoNotOptimize(v);
    }
    allocs.report(state);
    P::pop();
}

template <long (*Deref)()>
void proxy_deref(benchmark::State& state) {
    proxy::ensure();
    AllocCounter allocs;
    for (auto _ : state) {
        long v = Deref();
        benchmark::DoNotOptimize(v);
    }
    allocs.report(state);
}

// ---------------------------------------------------------------------------------------------------
// Operations that involve other threads.

/// `n` threads that each run `hold()` (giving themselves values) and then wait until destroyed.
class Holders {
public:
    Holders(std::size_t n, const std::function<void()>& hold) {
        threads_.reserve(n);
        for (std::size_t i = 0; i < n; ++i) {
            threads_.emplace_back([this, hold] {
                hold();
                std::unique_lock<std::mutex> lock(mutex_);
                ++ready_;
                cv_.notify_all();
                cv_.wait(lock, [this] { return done_; });
            });
        }
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return ready_ == n; });
    }
    ~Holders() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            done_ = true;
        }
        cv_.notify_all();
        for (auto& t : threads_) t.join();
    }
    Holders(const Holders&) = delete;
    Holders& operator=(const Holders&) = delete;

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    std::size_t ready_ = 0;
    bool done_ = false;
    std::vector<std::thread> threads_;
};

template <class P>
void cleanup_each() {}
template <>
void cleanup_each<TbbEts>() {
    TbbEts::clear_each();  // TBB keeps an exited thread's element until clear() or destruction
}
template <>
void cleanup_each<MutexMap>() {
    MutexMap::clear_each();
}

/// Visit every thread's value while range(0) other threads hold one.
template <class P>
void for_each(benchmark::State& state) {
    {
        Holders holders(static_cast<std::size_t>(state.range(0)), &P::ensure_each);
        AllocCounter allocs;
        for (auto _ : state) {
            long sum = P::sum_all();
            benchmark::DoNotOptimize(sum);
        }
        allocs.report(state);
    }
    cleanup_each<P>();
}

struct NoValues {
    static constexpr const char* name = "no_values";
    static void set4() {}
};

/// Start a thread that sets four per-thread values, and join it (the values are destroyed at its exit).
template <class P>
void thread_start4(benchmark::State& state) {
    AllocCounter allocs;
    child_allocs = 0;
    for (auto _ : state) {
        std::thread t([] {
            P::set4();
            child_allocs.fetch_add(thread_allocs(), std::memory_order_relaxed);
        });
        t.join();
    }
    allocs.report(state, child_allocs.exchange(0));
}

void hold_everything() {
    Ctx::ensure();
    Pthread::ensure();
    BoostTss::ensure();
    TbbEts::ensure();
    MutexMap::ensure();
}

/// Create a per-thread object, give the calling thread a value, destroy the object, while range(0)
/// other threads hold values (in other objects of every peer). ctxlocal's destructor visits every
/// thread's table, so its cost grows with the number of threads.
template <class P>
void lifecycle(benchmark::State& state) {
    Holders holders(static_cast<std::size_t>(state.range(0)), &hold_everything);
    AllocCounter allocs;
    for (auto _ : state) P::lifecycle();
    allocs.report(state);
}

// ---------------------------------------------------------------------------------------------------
// Registration, in report order.

std::string row(const char* op, const char* peer) { return std::string(op) + "/" + peer; }

template <class P>
void rw_rows_common() {
    benchmark::RegisterBenchmark(row("Read", P::name).c_str(), read<P>)
        ->Threads(1)
        ->Threads(2)
        ->UseRealTime();
    benchmark::RegisterBenchmark(row("Replace", P::name).c_str(), replace<P>)
        ->Threads(1)
        ->Threads(2)
        ->UseRealTime();
    benchmark::RegisterBenchmark(row("MakeReset", P::name).c_str(), make_reset<P>)
        ->Threads(1)
        ->Threads(2)
        ->UseRealTime();
    benchmark::RegisterBenchmark(row("PushPop", P::name).c_str(), push_pop<P>)
        ->Threads(1)
        ->Threads(2)
        ->UseRealTime();
    benchmark::RegisterBenchmark(row("Top", P::name).c_str(), top<P>)->Threads(1)->Threads(2)->UseRealTime();
}

/// The Read rows alone, for the peers that only read (the shared-library peers of peers_dso.cpp).
template <class P>
void read_rows() {
    benchmark::RegisterBenchmark(row("Read", P::name).c_str(), read<P>)
        ->Threads(1)
        ->Threads(2)
        ->UseRealTime();
}

template <class P>
void first_use_rows() {
    benchmark::RegisterBenchmark(row("FirstUse", P::name).c_str(), first_use<P>)
        ->Threads(1)
        ->Threads(2)
        ->UseRealTime();
}

template <class P>
void for_each_rows() {
    benchmark::RegisterBenchmark(row("ForEach", P::name).c_str(), for_each<P>)
        ->ArgName("threads_holding")
        ->Arg(2)
        ->Arg(64);
}

template <class P>
void thread_rows() {
    benchmark::RegisterBenchmark(row("ThreadStart4", P::name).c_str(), thread_start4<P>)->UseRealTime();
}

template <class P>
void lifecycle_rows() {
    benchmark::RegisterBenchmark(row("LocalLifecycle", P::name).c_str(), lifecycle<P>)
        ->ArgName("threads_holding")
        ->Arg(0)
        ->Arg(8)
        ->UseRealTime();
}

template <long (*Deref)()>
void proxy_row(const char* name) {
    benchmark::RegisterBenchmark(row("ProxyDeref", name).c_str(), proxy_deref<Deref>)
        ->Threads(1)
        ->Threads(2)
        ->UseRealTime();
}

const bool registered = [] {
    rw_rows_common<RawTls>();
    rw_rows_common<Ctx>();
    read_rows<CtxSharedLibrary>();
    read_rows<CtxSharedLibraryDynamicTls>();
    read_rows<RawTlsSharedLibrary>();
    read_rows<RawTlsSharedLibraryDynamicTls>();
    rw_rows_common<Pthread>();
    rw_rows_common<BoostTss>();
    rw_rows_common<TbbEts>();
    rw_rows_common<MutexMap>();

    first_use_rows<Ctx>();
    first_use_rows<Pthread>();
    first_use_rows<BoostTss>();
    first_use_rows<TbbEts>();
    first_use_rows<MutexMap>();

    proxy_row<&proxy::raw_pointer>("raw_thread_local_pointer");
    proxy_row<&proxy::local_get>("ctxlocal_get");
    proxy_row<&proxy::over_local>("proxy_over_local");
    proxy_row<&proxy::over_stack>("proxy_over_stack");
    proxy_row<&proxy::over_local_pointer>("proxy_over_local_pointer");

    for_each_rows<Ctx>();
    for_each_rows<TbbEts>();
    for_each_rows<MutexMap>();

    thread_rows<NoValues>();
    thread_rows<RawTls>();
    thread_rows<Ctx>();
    thread_rows<Pthread>();
    thread_rows<BoostTss>();
    thread_rows<TbbEts>();
    thread_rows<MutexMap>();

    lifecycle_rows<Ctx>();
    lifecycle_rows<Pthread>();
    lifecycle_rows<BoostTss>();
    lifecycle_rows<TbbEts>();
    lifecycle_rows<MutexMap>();
    return true;
}();

}  // namespace
}  // namespace bench

BENCHMARK_MAIN();
