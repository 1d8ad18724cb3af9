// ctxlocal::LocalManager: releases per-request state.
#pragma once

#include <functional>
#include <type_traits>
#include <utility>
#include <vector>

#include "config.hpp"
#include "detail/by_value.hpp"
#include "local.hpp"
#include "local_stack.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {

/// Holds references to Locals and LocalStacks and releases all of them for the calling thread at
/// once: werkzeug's `LocalManager`. Release destroys the values (Local::reset, LocalStack::clear); it
/// never merely overwrites them, so nothing a request stored survives into the next request that the
/// same pooled thread serves.
///
///     ctxlocal::Local<Session> session;
///     ctxlocal::LocalStack<Span> spans;
///     ctxlocal::LocalManager manager{session, spans};
///     auto handler = manager.wrap([](Request& r) { return serve(r); });   // cleans up after every call
///
/// The manager does not own what it references: each Local must outlive the manager and every callable
/// `wrap` returned. Thread-safety: `add` is not thread-safe; once set up, `cleanup`, `wrap`'s callables
/// and `scope` may be used from any number of threads at once.
class LocalManager {
    template <class L>
    struct is_releasable : std::false_type {};
    template <class T>
    struct is_releasable<Local<T>> : std::true_type {};
    template <class T>
    struct is_releasable<LocalStack<T>> : std::true_type {};

public:
    /// Makes a manager for any mix of Locals and LocalStacks. Allocates.
    template <class... L, std::enable_if_t<(is_releasable<L>::value && ...), int> = 0>
    explicit LocalManager(L&... locals) {
        entries_.reserve(sizeof...(L));
        (add(locals), ...);
    }

    /// Adds a Local. Not thread-safe.
    template <class T>
    void add(Local<T>& local) {
        entries_.push_back({&local, [](void* p) noexcept { static_cast<Local<T>*>(p)->reset(); }});
    }

    /// Adds a LocalStack. Not thread-safe.
    template <class T>
    void add(LocalStack<T>& stack) {
        entries_.push_back({&stack, [](void* p) noexcept { static_cast<LocalStack<T>*>(p)->clear(); }});
    }

    /// Releases every managed Local and LocalStack for the calling thread, in the order they were added.
    void cleanup() const noexcept {
        for (const Entry& e : entries_) e.release(e.target);
    }

    /// Returns a callable that calls `f(args...)` and then `cleanup()`, also when `f` throws (werkzeug's
    /// `make_middleware`). The callable copies the manager's list, not the Locals. It returns f's result
    /// by value (a reference result is copied before cleanup, which may destroy what it refers to).
    template <class F>
    auto wrap(F f) const {
        return [manager = *this, f = std::move(f)](auto&&... args) mutable {
            static_assert(
                detail::check_by_value<decltype(std::invoke(f, std::forward<decltype(args)>(args)...))>());
            Scope guard(manager);
            return std::invoke(f, std::forward<decltype(args)>(args)...);
        };
    }

    /// A guard that calls `cleanup()` when it goes out of scope.
    class Scope {
    public:
        explicit Scope(const LocalManager& manager) noexcept : manager_(manager) {}
        ~Scope() { manager_.cleanup(); }
        Scope(const Scope&) = delete;
        Scope& operator=(const Scope&) = delete;

    private:
        const LocalManager& manager_;
    };

    /// Returns a guard that cleans up for the calling thread when it ends:
    /// `auto guard = manager.scope();`.
    [[nodiscard]] Scope scope() const noexcept { return Scope(*this); }

    /// How many Locals and LocalStacks the manager holds.
    std::size_t size() const noexcept { return entries_.size(); }

private:
    struct Entry {
        void* target;
        void (*release)(void*) noexcept;
    };
    std::vector<Entry> entries_;
};

}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
