// ctxlocal::LocalStack<T>: a per-thread stack, built on Local.
#pragma once

#include <cstddef>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "config.hpp"
#include "local.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {

/// A stack whose contents are the calling thread's own: werkzeug's `LocalStack`.
///
///     ctxlocal::LocalStack<int> stack;
///     stack.push(1);
///     stack.push(2);
///     assert(*stack.top() == 2);
///     assert(stack.pop() == 2);          // std::optional<int>
///     stack.clear();                     // releases this thread's storage
///     assert(!stack.pop().has_value());  // an empty stack pops nothing; never throws
///
/// Each thread's stack is a `std::vector<T>` held in a `Local`. Popping destroys the element it
/// removes but keeps the capacity, so a push/pop pair allocates nothing in steady state; `clear()`
/// destroys the thread's whole storage. Elements follow the lifetime rules of `Local`: they are
/// destroyed when their thread exits or the stack is destroyed.
///
/// Thread-safety: as for Local; each thread only ever touches its own stack.
/// A pointer from `top()` or a reference from `emplace()` stays valid until the next push, emplace, pop
/// or clear on the same thread.
template <class T>
class LocalStack {
    static_assert(std::is_move_constructible_v<T>, "ctxlocal::LocalStack<T>: T must be move-constructible");

public:
    using value_type = T;

    /// constexpr: a namespace-scope LocalStack is constant-initialised. Never allocates.
    constexpr LocalStack() noexcept = default;
    LocalStack(const LocalStack&) = delete;
    LocalStack& operator=(const LocalStack&) = delete;

    /// Pushes `item` onto the calling thread's stack. Allocates only when the stack grows past its
    /// capacity. If that throws, the stack is unchanged.
    void push(T item) { storage_.value().push_back(std::move(item)); }

    /// Constructs an element in place on top of the calling thread's stack and returns it. If the
    /// constructor throws, the stack is unchanged.
    template <class... A>
    T& emplace(A&&... args) {
        return storage_.value().emplace_back(std::forward<A>(args)...);
    }

    /// Removes the top element and returns it; an empty optional when the stack is empty. Destroys the
    /// removed element (after moving it into the result). Never throws when T's move constructor does
    /// not; never allocates.
    std::optional<T> pop() noexcept(std::is_nothrow_move_constructible_v<T>) {
        std::vector<T>* s = storage_.get();
        if (s == nullptr || s->empty()) return std::nullopt;
        std::optional<T> result(std::move(s->back()));
        s->pop_back();
        return result;
    }

    /// The top element of the calling thread's stack, or nullptr when it is empty. Never allocates.
    T* top() noexcept {
        std::vector<T>* s = storage_.get();
        return s == nullptr || s->empty() ? nullptr : &s->back();
    }
    /// Const overload of top().
    const T* top() const noexcept { return const_cast<LocalStack*>(this)->top(); }

    /// Number of elements on the calling thread's stack.
    std::size_t size() const noexcept {
        const std::vector<T>* s = storage_.get();
        return s == nullptr ? 0 : s->size();
    }

    /// True when the calling thread's stack is empty.
    bool empty() const noexcept { return size() == 0; }

    /// Destroys every element and releases the calling thread's storage (its capacity too).
    void clear() noexcept { storage_.reset(); }

    /// The underlying Local, e.g. for `for_each` over every thread's stack.
    Local<std::vector<T>>& local() noexcept { return storage_; }

private:
    Local<std::vector<T>> storage_;
};

}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
