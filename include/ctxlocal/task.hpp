// ctxlocal::task<T>: a lazy C++20 coroutine task that runs in a Storage, and ctxlocal::storage_promise,
// the base that makes any framework's promise type do the same. Needs C++20 coroutines.
#pragma once

#if !defined(__cpp_impl_coroutine)
#error "ctxlocal/task.hpp needs C++20 coroutines (-std=c++20); the rest of ctxlocal works in C++17"
#endif

#include <condition_variable>
#include <coroutine>
#include <exception>
#include <mutex>
#include <type_traits>
#include <utility>
#include <variant>

#include "config.hpp"
#include "detail/storage_entry.hpp"
#include "detail/task_awaiter.hpp"
#include "errors.hpp"
#include "storage.hpp"
#include "storage_promise.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {

/// A lazy coroutine task: nothing runs until it is awaited (`co_await`), or started with
/// `ctxlocal::start` or `ctxlocal::sync_wait`. It runs in a Storage, following Python's asyncio: awaiting
/// a task runs it in the awaiting coroutine's Storage (a call, not a copy); a task started with
/// `start(task)` or `sync_wait(task)` runs in the caller's `Storage::current()`, or in a fresh, empty
/// Storage when there is none (it never sees the thread's own values). The Storage is entered on every
/// resume, on whichever thread resumes it, and left at every suspension and at completion, so a thread
/// running other work between two resumptions sees none of the task's values. A task destroyed while
/// suspended is destroyed with its Storage entered (on the destroying thread; that thread's own values are
/// untouched), so RAII guards in its frame pop the right contexts.
///
///     ctxlocal::task<std::string> whoami() {
///         co_await resume_on(pool);             // any awaitable: the request follows the coroutine
///         co_return web::request->user;
///     }
///     ctxlocal::task<void> serve() { auto who = co_await whoami(); ... }
///     web::make_storage(app, req).run([] { ctxlocal::start(serve()); });
///
/// One Storage runs on one thread at a time: a task that resumes on another thread while its Storage is
/// still entered somewhere (for example, by the code that started it and has not left the Storage yet)
/// cannot enter it. Then the awaited expression throws context_error and the task goes on in a fresh,
/// empty Storage: it never runs on another thread's values. Start tasks as the last thing inside a
/// Storage, or with `start(task, storage)` from outside it. For concurrent work give each task its own
/// Storage (`web::copy_current_request_storage()` does that for a request).
///
/// A task is movable, not copyable, and owns its coroutine. Exceptions thrown in the task propagate to
/// the awaiting coroutine (or out of sync_wait). Thread-safety: one task object is used by one thread at a
/// time; the coroutine may resume on any thread.
template <class T = void>
class [[nodiscard]] task {
public:
    using value_type = T;

    class promise_type : public storage_promise, public detail::TaskResult<T> {
    public:
        task get_return_object() noexcept {
            return task(std::coroutine_handle<promise_type>::from_promise(*this));
        }
        std::suspend_always initial_suspend() noexcept { return {}; }
        auto final_suspend() noexcept { return detail::TaskFinal<promise_type>{}; }

        void detach() noexcept { detached = true; }

        std::coroutine_handle<> continuation = nullptr;  // the awaiting coroutine
        void (*on_done)(void*) noexcept = nullptr;       // or: sync_wait's / start's completion
        void* on_done_arg = nullptr;
        bool detached = false;  // started with start(): destroys itself when it completes
    };

    task(task&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
    task& operator=(task&& other) noexcept {
        if (this != &other) {
            destroy();
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }
    task(const task&) = delete;
    task& operator=(const task&) = delete;
    /// Destroys the coroutine; one that is suspended is destroyed with its Storage entered.
    ~task() { destroy(); }

    /// Awaiting a task runs it in the awaiting coroutine's Storage; from a coroutine that is not
    /// storage-aware (no storage_promise), in `Storage::current()` or a fresh one.
    auto operator co_await() && noexcept { return detail::TaskAwaiter<promise_type>{handle_}; }

    /// Called by a storage_promise's await_transform: the task will run in `parent`'s Storage.
    task&& storage_inherit(storage_promise& parent) && noexcept {
        if (handle_) handle_.promise().inherit_from(parent);
        return std::move(*this);
    }

    /// The coroutine, for start() and sync_wait(). Null for a moved-from task.
    std::coroutine_handle<promise_type> handle() const noexcept { return handle_; }
    /// Gives up the coroutine (the caller destroys it).
    std::coroutine_handle<promise_type> release() noexcept { return std::exchange(handle_, nullptr); }

private:
    explicit task(std::coroutine_handle<promise_type> h) noexcept : handle_(h) {}

    void destroy() noexcept {
        if (!handle_) return;
        if (!handle_.done() && handle_.promise().started()) {
            handle_.promise().run_destroy([h = handle_] { h.destroy(); });
        } else {
            handle_.destroy();
        }
        handle_ = nullptr;
    }

    std::coroutine_handle<promise_type> handle_;
};

/// Starts `t` now, on the calling thread, in `storage` (by default `Storage::current()`, or a fresh,
/// empty Storage when there is none): it runs until its first suspension, and on whichever thread resumes
/// it afterwards; the coroutine destroys itself when it completes. An exception that escapes it calls
/// std::terminate (as from a std::thread). The caller must not be inside `storage` when the task resumes
/// on another thread (see task): call it as the last thing in a Storage scope, or pass the Storage from
/// outside it. Throws context_error (the task not started, destroyed with it) when the Storage is
/// entered on another thread.
template <class T>
void start(task<T> t, Storage storage = Storage::current()) {
    if (!storage) storage = Storage();
    auto h = t.release();
    if (!h) throw context_error("ctxlocal::start(): the task is empty (moved from)");
    auto& p = h.promise();
    p.on_done = [](void*) noexcept {};
    p.detach();
    try {
        p.run_as_root(std::move(storage));
    } catch (...) {
        h.destroy();
        throw;
    }
    h.resume();
}

/// Runs `t` to completion and returns its result (or rethrows its exception), blocking the calling thread
/// while the task is suspended and resumed elsewhere. The task runs in `Storage::current()` (lent to the
/// task while this thread waits: other threads may enter it meanwhile), or in a fresh, empty Storage when
/// there is none. Do not call it from a thread the task needs in order to resume (an event loop thread).
template <class T>
T sync_wait(task<T> t) {
    auto h = t.handle();
    if (!h) throw context_error("ctxlocal::sync_wait(): the task is empty (moved from)");
    struct Waiting {
        std::mutex mutex;
        std::condition_variable cv;
        bool done = false;
        static void finish(void* self) noexcept {
            auto* w = static_cast<Waiting*>(self);
            std::lock_guard<std::mutex> lock(w->mutex);
            w->done = true;
            w->cv.notify_all();
        }
    } waiting;
    auto& p = h.promise();
    p.on_done = &Waiting::finish;
    p.on_done_arg = &waiting;
    Storage storage = Storage::current();
    detail::Record* lent = storage ? detail::current_table->record : nullptr;
    if (!storage) storage = Storage();
    detail::Loan loan{};
    if (lent != nullptr) loan = detail::lend(*lent);
    try {
        p.run_as_root(std::move(storage));
    } catch (...) {
        if (lent != nullptr) detail::reclaim(loan);
        throw;
    }
    h.resume();
    {
        std::unique_lock<std::mutex> lock(waiting.mutex);
        waiting.cv.wait(lock, [&] { return waiting.done; });
    }
    if (lent != nullptr) detail::reclaim(loan);
    return p.take_result();
}

}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
