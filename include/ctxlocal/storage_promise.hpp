// ctxlocal::storage_promise: the base that makes a coroutine promise type run its coroutine in a Storage.
// Needs C++20 coroutines. ctxlocal::task (task.hpp) is built on it; so can a framework's own task type.
#pragma once

#if !defined(__cpp_impl_coroutine)
#error "ctxlocal/storage_promise.hpp needs C++20 coroutines (-std=c++20)"
#endif

#include <coroutine>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "config.hpp"
#include "detail/storage_entry.hpp"
#include "storage.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {

class storage_promise;

namespace detail {

/// Where a chain of coroutines (a root and the coroutines it awaits, one inside the other) runs: its
/// Storage, and the entry made where the chain last resumed. Owned by the root's promise.
struct TaskRun {
    Storage storage = Storage::null();
    EntryId entry{};
    bool entered = false;

    /// Enters the Storage on the calling thread. Throws context_error, entering nothing, when another
    /// thread has it entered.
    void enter() {
        entry = detail::enter(*StorageAccess::record(storage));
        entered = true;
    }
    /// Enters the Storage; when another thread has it entered, goes on in a fresh, empty Storage instead
    /// (entered), and throws context_error to say so.
    void enter_or_fresh() {
        try {
            enter();
        } catch (const context_error& e) {
            storage = Storage();
            enter();
            throw context_error(
                std::string(e.what()) +
                "; the coroutine was resumed on another thread while its Storage was still "
                "entered (by the code that started it?) and goes on in a fresh, empty Storage");
        }
    }
    void leave() noexcept {
        if (!entered) return;
        entered = false;
        detail::leave(entry);
    }
};

/// Wraps an awaiter: leaves the chain's Storage before the coroutine suspends, enters it again when the
/// coroutine resumes, on whichever thread. Nothing is touched after the inner await_suspend is called (the
/// coroutine may already be running elsewhere by then).
template <class Awaiter>
class StorageAwaiter {
public:
    StorageAwaiter(Awaiter&& inner, TaskRun* run) : inner_(std::forward<Awaiter>(inner)), run_(run) {}

    bool await_ready() { return inner_.await_ready(); }

    template <class Promise>
    auto await_suspend(std::coroutine_handle<Promise> h)
        -> decltype(std::declval<Awaiter&>().await_suspend(h)) {
        run_->leave();
        left_ = true;
        try {
            return inner_.await_suspend(h);
        } catch (...) {
            left_ = false;
            run_->enter_or_fresh();  // the coroutine goes on here, with the exception
            throw;
        }
    }

    decltype(auto) await_resume() {
        if (left_) {
            left_ = false;
            run_->enter_or_fresh();
        }
        return inner_.await_resume();
    }

private:
    Awaiter inner_;  // an awaiter made by operator co_await, or a reference to the awaitable itself
    TaskRun* run_;
    bool left_ = false;
};

/// The awaiter of `a`: what its operator co_await returns, or `a` itself.
template <class A>
decltype(auto) awaiter_of(A&& a) {
    if constexpr (requires { std::forward<A>(a).operator co_await(); }) {
        return std::forward<A>(a).operator co_await();
    } else if constexpr (requires { operator co_await(std::forward<A>(a)); }) {
        return operator co_await(std::forward<A>(a));
    } else {
        return std::forward<A>(a);
    }
}

}  // namespace detail

/// Derive a coroutine promise type from storage_promise to make its coroutine run in a Storage, the way
/// ctxlocal::task does: every `co_await` in the coroutine leaves the Storage before the coroutine
/// suspends and enters it again when it resumes, on whichever thread (await_transform); an awaited
/// coroutine that is storage-aware (its awaitable has `storage_inherit(storage_promise&) &&`, as task
/// has) runs in the awaiting coroutine's Storage without leaving it. What the framework's task type does:
///
///     struct my_promise : ctxlocal::storage_promise {
///         ...
///         auto final_suspend() noexcept {
///             struct final_awaiter { ... await_suspend(handle h) noexcept {
///                 h.promise().leave_at_final();            // before handing control back
///                 return h.promise().continuation; } };
///             return final_awaiter{};
///         }
///     };
///     // to start it from outside a coroutine (its first resume):
///     h.promise().run_as_root(ctxlocal::Storage::current());   // or a Storage of its own
///     h.resume();
///     // awaited by another storage-aware coroutine: implement `storage_inherit` on the awaitable,
///     //   calling h.promise().inherit_from(parent) (see task.hpp).
///     // destroying it while suspended: h.promise().run_destroy([h] { h.destroy(); });
///
/// If the framework's promise defines its own await_transform, it must forward to this one.
/// Thread-safety: as for the coroutine itself.
class storage_promise {
public:
    /// Every `co_await a` in the coroutine: storage-aware awaitables inherit the Storage; any other is
    /// wrapped so that the Storage is left at suspension and entered again at resumption.
    template <class A>
    decltype(auto) await_transform(A&& a) {
        if constexpr (requires { std::forward<A>(a).storage_inherit(*this); }) {
            return std::forward<A>(a).storage_inherit(*this);
        } else {
            using Awaiter = decltype(detail::awaiter_of(std::forward<A>(a)));
            return detail::StorageAwaiter<Awaiter>(detail::awaiter_of(std::forward<A>(a)), run_);
        }
    }

    /// Makes the coroutine a root that runs in `storage` (a fresh, empty one when null), and enters it on
    /// the calling thread: call it right before the first resume from outside a coroutine. Throws
    /// context_error, entering nothing, when another thread has that Storage entered.
    void run_as_root(Storage storage) {
        own_.storage = storage ? std::move(storage) : Storage();
        own_.enter();
        run_ = &own_;
    }

    /// Makes the coroutine run in the Storage of `parent`, the storage-aware coroutine that awaits it.
    void inherit_from(storage_promise& parent) noexcept { run_ = parent.run_; }

    /// True once the coroutine has a Storage (run_as_root or inherit_from was called).
    bool started() const noexcept { return run_ != nullptr; }
    /// True when it runs in the Storage of the coroutine that awaits it.
    bool is_inner() const noexcept { return run_ != nullptr && run_ != &own_; }
    /// The Storage the coroutine runs in (null before it started).
    const Storage& storage() const noexcept { return run_ != nullptr ? run_->storage : own_.storage; }

    /// Call in final_suspend, before control leaves the coroutine: a root leaves its Storage (an inner
    /// coroutine stays in it: its awaiting coroutine goes on there).
    void leave_at_final() noexcept {
        if (run_ == &own_) own_.leave();
    }

    /// Runs `destroy()` (which destroys the suspended coroutine) with its Storage entered on the calling
    /// thread, so that the frame's destructors see their own task's values; the calling thread is restored
    /// afterwards. If the Storage cannot be entered (another thread has it entered: a misuse), the frame is
    /// destroyed in a fresh, empty Storage and the misuse is reported.
    template <class F>
    void run_destroy(F destroy) noexcept {
        std::optional<Storage::Scope> scope;
        try {
            const Storage& s = storage();
            scope.emplace(s ? s : Storage());
        } catch (...) {
            detail::report_misuse(
                "ctxlocal: a suspended coroutine was destroyed while its Storage was entered on another "
                "thread; its frame was destroyed in a fresh, empty Storage");
            try {
                scope.emplace(Storage());
            } catch (...) {  // out of memory: the frame is destroyed where the thread is
            }
        }
        destroy();
    }

protected:
    storage_promise() = default;
    ~storage_promise() = default;
    storage_promise(const storage_promise&) = delete;
    storage_promise& operator=(const storage_promise&) = delete;

private:
    detail::TaskRun own_;
    detail::TaskRun* run_ = nullptr;  // &own_ for a root, the root's for a coroutine it awaits
};

}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
