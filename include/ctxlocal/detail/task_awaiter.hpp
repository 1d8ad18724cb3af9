// Private machinery behind ctxlocal::task: the result of a task, its final suspension, and awaiting it.
#pragma once

#if !defined(__cpp_impl_coroutine)
#error "ctxlocal/detail/task_awaiter.hpp needs C++20 coroutines (-std=c++20)"
#endif

#include <coroutine>
#include <exception>
#include <type_traits>
#include <utility>
#include <variant>

#include "../config.hpp"
#include "../errors.hpp"
#include "../storage.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {

/// What a task produced: a value (a T, a reference, or nothing) or an exception.
template <class T>
class TaskResult {
    using Stored = std::conditional_t<std::is_reference_v<T>, std::remove_reference_t<T>*, T>;

public:
    template <class U>
    void return_value(U&& value) {
        if constexpr (std::is_reference_v<T>) {
            result_.template emplace<1>(&value);
        } else {
            result_.template emplace<1>(std::forward<U>(value));
        }
    }
    void unhandled_exception() noexcept { result_.template emplace<2>(std::current_exception()); }
    bool failed() const noexcept { return result_.index() == 2; }

    /// The value (moved out) or the exception (rethrown).
    T take_result() {
        if (result_.index() == 2) std::rethrow_exception(std::get<2>(result_));
        if (result_.index() != 1) throw context_error("ctxlocal::task: the task has not completed");
        if constexpr (std::is_reference_v<T>) {
            return static_cast<T>(*std::get<1>(result_));
        } else {
            return std::move(std::get<1>(result_));
        }
    }

private:
    std::variant<std::monostate, Stored, std::exception_ptr> result_;
};

template <>
class TaskResult<void> {
public:
    void return_void() noexcept { done_ = true; }
    void unhandled_exception() noexcept { error_ = std::current_exception(); }
    bool failed() const noexcept { return error_ != nullptr; }
    void take_result() {
        if (error_) std::rethrow_exception(error_);
        if (!done_) throw context_error("ctxlocal::task: the task has not completed");
    }

private:
    std::exception_ptr error_;
    bool done_ = false;
};

/// A task's final suspension: a root leaves its Storage; then control goes to the awaiting coroutine, or
/// to the completion callback of start()/sync_wait(). Nothing in the frame is touched after that callback
/// (sync_wait's caller may destroy the task at once).
template <class Promise>
struct TaskFinal {
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> h) noexcept {
        Promise& p = h.promise();
        p.leave_at_final();
        if (p.continuation) return p.continuation;
        auto* done = p.on_done;
        void* arg = p.on_done_arg;
        if (p.detached) {
            if (p.failed()) std::terminate();  // an exception escaped a started task
            h.destroy();
        }
        if (done != nullptr) done(arg);
        return std::noop_coroutine();
    }
    void await_resume() const noexcept {}
};

/// `co_await task`: starts the task (lazy) and resumes the awaiting coroutine when it completes. Awaited
/// by a coroutine that is not storage-aware, the task becomes a root in Storage::current() or a fresh one.
template <class Promise>
struct TaskAwaiter {
    std::coroutine_handle<Promise> h;

    bool await_ready() const noexcept { return !h; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiting) {
        Promise& p = h.promise();
        p.continuation = awaiting;
        if (!p.started()) p.run_as_root(Storage::current());
        return h;
    }
    decltype(auto) await_resume() {
        if (!h) throw context_error("ctxlocal::task: co_await on an empty (moved-from) task");
        return h.promise().take_result();
    }
};

}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
