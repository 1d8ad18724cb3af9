// ctxlocal::bind_executor: an asio executor adaptor that runs every function in a Storage, so a request's
// values follow its handlers and coroutines across the threads that run an io_context. For standalone
// asio >= 1.22 (Debian: libasio-dev); not included by <ctxlocal/ctxlocal.hpp>.
#pragma once

#include <asio/associated_executor.hpp>
#include <asio/execution.hpp>
#include <asio/execution_context.hpp>
#include <asio/prefer.hpp>
#include <asio/query.hpp>
#include <asio/require.hpp>

#include <thread>
#include <type_traits>
#include <utility>

#include "config.hpp"
#include "detail/storage_entry.hpp"
#include "errors.hpp"
#include "storage.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {

namespace detail {

/// Enters `r` for an executor: when another thread has it entered, waits (yielding) until that thread
/// leaves it. Two handlers of one task may be scheduled on two threads at once (an operation can complete
/// on another thread before the handler that started it has returned): they run one after the other, never
/// both inside the Storage at the same time. Throws what enter() throws otherwise (context_error for a
/// Storage being released).
inline EntryId enter_for_executor(Record& r) {
    EntryId id{};
    while (!try_enter(r, id)) {
        if ((r.storage_state.load(std::memory_order_relaxed) & storage_thread_mask) == storage_releasing) {
            throw_entered_elsewhere(storage_releasing);
        }
        std::this_thread::yield();
    }
    return id;
}

/// The function an adapted executor hands to the inner one: runs `f` inside the Storage.
template <class F>
struct InStorage {
    Storage storage;
    F f;
    void operator()() {
        struct Leave {
            EntryId id;
            ~Leave() { leave(id); }
        } in{enter_for_executor(*StorageAccess::record(storage))};
        std::move(f)();
    }
};

}  // namespace detail

/// An executor that runs every function it is given inside one Storage, on whatever thread its inner
/// executor runs it: `asio::post`, `asio::dispatch`, `asio::co_spawn`, and the completion handlers of
/// timers and sockets made from it. A coroutine `co_spawn`ed on it sees its Storage's values (its request)
/// after every `co_await`, on whichever thread `io_context::run()` resumes it, and a thread sees none of
/// them between two handlers. asio has no suspend/resume hook for coroutines (asio#1493): the executor is
/// the hook, which is why every operation of the coroutine must use this executor (the default for
/// `use_awaitable` operations on I/O objects made from it).
///
///     auto storage = web::make_storage(app, request);
///     asio::co_spawn(ctxlocal::bind_executor(ioc.get_executor(), storage), serve(), asio::detached);
///
/// Queries, requirements and preferences go to the inner executor; the results keep the Storage. Two
/// adapted executors are equal when their inner executors are equal and they share the Storage.
/// One Storage runs on one thread at a time: when two handlers of it are run at once on two threads, the
/// second waits until the first has left (with a strand as the inner executor, they never overlap).
/// Copying takes a Storage reference (an atomic increment); running a function enters and leaves it.
template <class Executor>
class storage_executor {
public:
    using inner_executor_type = Executor;

    storage_executor(Executor inner, Storage storage) noexcept(std::is_nothrow_move_constructible_v<Executor>)
        : inner_(std::move(inner)), storage_(std::move(storage)) {}

    /// The executor that runs the functions.
    const Executor& get_inner_executor() const noexcept { return inner_; }
    /// The Storage every function runs in.
    const Storage& storage() const noexcept { return storage_; }

    template <class Property, std::enable_if_t<::asio::can_query<const Executor&, Property>::value, int> = 0>
    decltype(auto) query(const Property& p) const
        noexcept(::asio::is_nothrow_query<const Executor&, Property>::value) {
        return ::asio::query(inner_, p);
    }

    template <class Property,
              std::enable_if_t<::asio::can_require<const Executor&, Property>::value, int> = 0>
    auto require(const Property& p) const {
        using Inner = std::decay_t<decltype(::asio::require(inner_, p))>;
        return storage_executor<Inner>(::asio::require(inner_, p), storage_);
    }

    template <class Property, std::enable_if_t<::asio::can_prefer<const Executor&, Property>::value, int> = 0>
    auto prefer(const Property& p) const {
        using Inner = std::decay_t<decltype(::asio::prefer(inner_, p))>;
        return storage_executor<Inner>(::asio::prefer(inner_, p), storage_);
    }

    template <class F>
    void execute(F&& f) const {
        ::asio::execution::execute(inner_, detail::InStorage<std::decay_t<F>>{storage_, std::forward<F>(f)});
    }

    friend bool operator==(const storage_executor& a, const storage_executor& b) noexcept {
        return a.inner_ == b.inner_ && a.storage_ == b.storage_;
    }
    friend bool operator!=(const storage_executor& a, const storage_executor& b) noexcept {
        return !(a == b);
    }

private:
    Executor inner_;
    Storage storage_;
};

/// `ex` adapted to run every function inside `storage`. Throws context_error for a null Storage.
template <class Executor,
          std::enable_if_t<::asio::execution::is_executor<std::decay_t<Executor>>::value, int> = 0>
storage_executor<std::decay_t<Executor>> bind_executor(Executor&& ex, Storage storage) {
    if (!storage) {
        throw context_error(
            "ctxlocal::bind_executor(): the Storage is null; pass a Storage, or call the "
            "one-argument form to take Storage::current()");
    }
    return storage_executor<std::decay_t<Executor>>(std::forward<Executor>(ex), std::move(storage));
}

/// `ex` adapted to run every function inside `Storage::current()`, or inside a new, empty Storage when
/// the calling thread runs on its own values (the functions never see a thread's own values).
template <class Executor,
          std::enable_if_t<::asio::execution::is_executor<std::decay_t<Executor>>::value, int> = 0>
storage_executor<std::decay_t<Executor>> bind_executor(Executor&& ex) {
    Storage storage = Storage::current();
    return bind_executor(std::forward<Executor>(ex), storage ? std::move(storage) : Storage());
}

}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
