// Context rows: AppContext push+pop, RequestContext push+pop (with its implicit application context),
// and `request->field`. Compiled in when <ctxlocal/context.hpp> exists (the context issue); the report
// script marks the context targets "not measured" otherwise.
#if __has_include(<ctxlocal/context.hpp>)

#include <benchmark/benchmark.h>

#include <ctxlocal/context.hpp>
#include <string>
#include <vector>

#include "alloc_count.hpp"
#include "peers.hpp"

namespace bench {
namespace {

struct App : ctxlocal::AppHooks {
    std::string name = "bench";
};
struct Request {
    long field = 1;
    std::string path = "/";
};
using web = ctxlocal::Contexts<App, Request>;

App the_app;

// The floor for a context stack: what a hand-written framework keeps per thread (a thread_local vector
// of frames and a thread_local pointer to the current one), pushed and popped the same way.
struct RawFrame {
    App* app;
    Request* request;
};
thread_local std::vector<RawFrame> raw_frames;
thread_local Request* raw_request = nullptr;

// Out of line for the same reason as the peers (see peers.hpp).
BENCH_OPAQUE void app_push_pop(const web::AppContext& ctx) {
    ctx.push();
    ctx.pop();
}
BENCH_OPAQUE void request_push_pop(const web::RequestContext& ctx) {
    ctx.push();
    ctx.pop();
}
BENCH_OPAQUE void raw_push_pop(Request* r) {
    raw_frames.push_back({&the_app, r});
    raw_request = r;
    raw_frames.pop_back();
    raw_request = raw_frames.empty() ? nullptr : raw_frames.back().request;
}
BENCH_OPAQUE long request_field() { return web::request->field; }
BENCH_OPAQUE long raw_request_field() { return raw_request->field; }

void app_context(benchmark::State& state) {
    const web::AppContext ctx{the_app};
    app_push_pop(ctx);  // steady state: the thread's stacks exist
    AllocCounter allocs;
    for (auto _ : state) app_push_pop(ctx);
    allocs.report(state);
}

void request_context(benchmark::State& state) {
    const web::RequestContext ctx{the_app, Request{}};
    request_push_pop(ctx);
    AllocCounter allocs;
    for (auto _ : state) request_push_pop(ctx);
    allocs.report(state);
}

void raw_context(benchmark::State& state) {
    Request r;
    raw_frames.reserve(4);
    AllocCounter allocs;
    for (auto _ : state) raw_push_pop(&r);
    allocs.report(state);
}

void field(benchmark::State& state) {
    const web::RequestContext ctx{the_app, Request{}};
    ctx.push();
    AllocCounter allocs;
    for (auto _ : state) {
        long v = request_field();
        benchmark::DoNotOptimize(v);
    }
    allocs.report(state);
    ctx.pop();
}

void raw_field(benchmark::State& state) {
    Request r;
    raw_request = &r;
    AllocCounter allocs;
    for (auto _ : state) {
        long v = raw_request_field();
        benchmark::DoNotOptimize(v);
    }
    allocs.report(state);
    raw_request = nullptr;
}

const bool registered = [] {
    benchmark::RegisterBenchmark("AppContextPushPop/ctxlocal", app_context)
        ->Threads(1)
        ->Threads(2)
        ->UseRealTime();
    benchmark::RegisterBenchmark("AppContextPushPop/raw_thread_local", raw_context)
        ->Threads(1)
        ->Threads(2)
        ->UseRealTime();
    benchmark::RegisterBenchmark("RequestContextPushPop/ctxlocal", request_context)
        ->Threads(1)
        ->Threads(2)
        ->UseRealTime();
    benchmark::RegisterBenchmark("RequestContextPushPop/raw_thread_local", raw_context)
        ->Threads(1)
        ->Threads(2)
        ->UseRealTime();
    benchmark::RegisterBenchmark("RequestField/ctxlocal", field)->Threads(1)->Threads(2)->UseRealTime();
    benchmark::RegisterBenchmark("RequestField/raw_thread_local", raw_field)
        ->Threads(1)
        ->Threads(2)
        ->UseRealTime();
    return true;
}();

}  // namespace
}  // namespace bench

#endif  // __has_include(<ctxlocal/context.hpp>)
