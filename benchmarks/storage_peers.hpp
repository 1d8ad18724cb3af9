// The propagation rows' operations (ctxlocal::Storage, wrap, ctxlocal::task) and their floors, each out of
// line in storage_peers.cpp and marked BENCH_OPAQUE, for the reason given in peers.hpp: a compiler that
// saw the bodies would hoist the thread-local addressing out of the benchmark loop. Every row and its
// floor pay the same call.
//
// The task rows need C++20 coroutines; the rest is C++17 like the library. Both files are compiled with
// -std=c++20 (CMakeLists.txt).
#pragma once

#include <coroutine>
#include <exception>
#include <utility>
#include <variant>

#include <ctxlocal/storage.hpp>
#include <ctxlocal/task.hpp>

#include "peers.hpp"

namespace bench {

// ---------------------------------------------------------------------------------------------------
// Storage::Scope enter + leave, against its floor: a raw thread_local pointer swapped and swapped back.
namespace storage {
void raw_swap(void* p);                            // old = tls; tls = p; (barrier) tls = old;
void scope_enter_leave(const ctxlocal::Storage&);  // { Storage::Scope in(s); }
long run(const ctxlocal::Storage&);                // s.run([] { return 1L; })

// wrap(f) capture + call (f: a lambda capturing one long), against std::function capture + call.
long std_function_call(long x);  // std::function<long()> f = [x] { ... }; return f();
long wrap_call(long x);          // auto w = ctxlocal::wrap([x] { ... }); return w();
}  // namespace storage

// ---------------------------------------------------------------------------------------------------
// The floor of the task rows: a minimal lazy task without any ctxlocal, with the same structure as
// ctxlocal::task (lazy start, symmetric transfer to the child at co_await and back to the awaiting
// coroutine at final suspension, the result or exception in a variant). What it lacks is exactly the
// Storage handling: no storage_promise base, no await_transform, no Storage entered by a root.
namespace plain {

template <class T>
class task {
public:
    struct promise_type {
        task get_return_object() noexcept {
            return task(std::coroutine_handle<promise_type>::from_promise(*this));
        }
        std::suspend_always initial_suspend() noexcept { return {}; }
        struct Final {
            bool await_ready() const noexcept { return false; }
            std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) noexcept {
                if (auto c = h.promise().continuation) return c;
                return std::noop_coroutine();
            }
            void await_resume() const noexcept {}
        };
        Final final_suspend() noexcept { return {}; }
        template <class U>
        void return_value(U&& v) {
            result.template emplace<1>(std::forward<U>(v));
        }
        void unhandled_exception() noexcept { result.template emplace<2>(std::current_exception()); }

        std::coroutine_handle<> continuation = nullptr;
        std::variant<std::monostate, T, std::exception_ptr> result;
    };

    struct Awaiter {
        std::coroutine_handle<promise_type> h;
        bool await_ready() const noexcept { return !h; }
        std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiting) noexcept {
            h.promise().continuation = awaiting;
            return h;
        }
        T await_resume() { return take(h); }
    };

    task(task&& other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
    task(const task&) = delete;
    task& operator=(const task&) = delete;
    task& operator=(task&&) = delete;
    ~task() {
        if (h_) h_.destroy();
    }

    Awaiter operator co_await() && noexcept { return Awaiter{h_}; }

    /// Runs the task to completion on the calling thread (every awaited child completes inline).
    T run() {
        h_.resume();
        return take(h_);
    }

private:
    explicit task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
    static T take(std::coroutine_handle<promise_type> h) {
        auto& r = h.promise().result;
        if (r.index() == 2) std::rethrow_exception(std::get<2>(r));
        return std::move(std::get<1>(r));
    }
    std::coroutine_handle<promise_type> h_;
};

}  // namespace plain

/// An awaitable that suspends and resumes the awaiting coroutine at once (symmetric transfer to itself):
/// a suspension point that costs only the switch. Inside a ctxlocal::task, every such co_await leaves the
/// Storage and enters it again (storage_promise's await_transform).
struct ResumeAtOnce {
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) const noexcept { return h; }
    void await_resume() const noexcept {}
};

namespace task_peers {
ctxlocal::task<long> ctx_child();  // co_return 1;
plain::task<long> plain_child();   // co_return 1;
}  // namespace task_peers

}  // namespace bench
