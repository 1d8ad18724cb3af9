// ctxlocal::LocalProxy<T>: "whatever the calling thread has bound right now".
#pragma once

#include <type_traits>
#include <utility>

#include "config.hpp"
#include "errors.hpp"
#include "local.hpp"
#include "local_stack.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {

/// Forwards every use to whatever the calling thread has bound at that moment: werkzeug's
/// `LocalProxy`. Bound means: the thread's value of a `Local<T>`, the top of a `LocalStack<T>`, the
/// pointee of a `Local<T*>` that holds a non-null pointer, or a non-null result of a getter.
///
///     ctxlocal::LocalStack<User> users;
///     inline constexpr ctxlocal::LocalProxy<User> current_user{users, "no user is logged in"};
///     users.push(User{"ana"});
///     current_user->name;       // "ana"
///     users.pop();
///     current_user->name;       // throws ctxlocal::unbound_error("no user is logged in")
///
/// A proxy holds no value of its own: a few pointers and a tag, trivially copyable and destructible, and
/// constructible in a constant expression, so it works as a namespace-scope global. Declared `constexpr`
/// (or `inline constexpr`), the compiler sees its source and `get()` inlines to the Local read path.
/// The unbound message is not copied: pass a string literal or another string that outlives the proxy.
/// Thread-safety: a proxy may be used from any number of threads at once; each sees its own binding.
template <class T>
class LocalProxy {
public:
    using value_type = T;

    /// The message used when none is given, as in werkzeug.
    static constexpr const char* default_unbound_message = "object is not bound";

    /// Bound to the calling thread's value of `local` (never creates one).
    constexpr LocalProxy(Local<T>& local, const char* unbound_message = default_unbound_message) noexcept
        : source_(Source::local), target_(&local), message_(unbound_message) {}

    /// Bound to the top of the calling thread's `stack`.
    constexpr LocalProxy(LocalStack<T>& stack, const char* unbound_message = default_unbound_message) noexcept
        : source_(Source::stack), target_(&stack), message_(unbound_message) {}

    /// Bound to the object that the calling thread's value of `pointer` points at, when it is non-null.
    constexpr LocalProxy(Local<T*>& pointer, const char* unbound_message = default_unbound_message) noexcept
        : source_(Source::local_pointer), target_(&pointer), message_(unbound_message) {}

    /// Bound to what `getter()` returns, when non-null. A function pointer or capture-less lambda.
    template <class F, std::enable_if_t<std::is_convertible_v<F, T* (*)()>, int> = 0>
    constexpr LocalProxy(F getter, const char* unbound_message = default_unbound_message) noexcept
        : source_(Source::function), function_(static_cast<T* (*)()>(getter)), message_(unbound_message) {}

    /// Bound to what `getter()` returns, when non-null: a callable with state (a lambda with captures, a
    /// function object). The proxy refers to `getter`, it does not copy it: the callable must outlive the
    /// proxy and its copies (a temporary is rejected at compile time).
    template <class F, std::enable_if_t<!std::is_convertible_v<F, T* (*)()> &&
                                            std::is_convertible_v<std::invoke_result_t<const F&>, T*>,
                                        int> = 0>
    constexpr LocalProxy(const F& getter, const char* unbound_message = default_unbound_message) noexcept
        : source_(Source::callable),
          target_(&getter),
          call_([](const void* f) -> T* { return (*static_cast<const F*>(f))(); }),
          message_(unbound_message) {}
    template <class F, std::enable_if_t<!std::is_convertible_v<F, T* (*)()> &&
                                            !std::is_lvalue_reference_v<F> && std::is_invocable_v<const F&>,
                                        int> = 0>
    LocalProxy(F&& getter, const char* unbound_message = default_unbound_message) = delete;

    /// The bound object, or nullptr when the calling thread has none bound. Never throws, never
    /// allocates; for a Local, LocalStack or Local<T*> source it inlines to the Local read path.
    T* get() const noexcept {
        switch (source_) {
            case Source::local:
                return static_cast<Local<T>*>(const_cast<void*>(target_))->get();
            case Source::stack:
                if constexpr (std::is_move_constructible_v<T>) {  // LocalStack<T> needs a movable T
                    return static_cast<LocalStack<T>*>(const_cast<void*>(target_))->top();
                } else {
                    return nullptr;
                }
            case Source::local_pointer: {
                T** p = static_cast<Local<T*>*>(const_cast<void*>(target_))->get();
                return p == nullptr ? nullptr : *p;
            }
            case Source::function:
                return function_();
            case Source::callable:
                return call_(target_);
        }
        return nullptr;
    }

    /// The bound object. Throws unbound_error with the proxy's unbound message when none is bound
    /// (werkzeug's `_get_current_object()`).
    T& current() const {
        if (T* p = get()) return *p;
        throw unbound_error(message_);
    }

    /// Same as current().
    T& operator*() const { return current(); }
    /// Same as &current().
    T* operator->() const { return &current(); }

    /// True when the calling thread has an object bound (an unbound proxy is falsy, as in werkzeug).
    explicit operator bool() const noexcept { return get() != nullptr; }

    /// The message that unbound_error carries.
    const char* unbound_message() const noexcept { return message_; }

private:
    enum class Source : unsigned char { local, stack, local_pointer, function, callable };

    Source source_;
    const void* target_ = nullptr;
    T* (*function_)() = nullptr;
    T* (*call_)(const void*) = nullptr;
    const char* message_;
};

}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
