// detail::AnyValue: the type-erased value holder behind ctxlocal::Namespace (std::any, but move-only
// values too).
#pragma once

#include <cstddef>
#include <new>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include "../config.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {

/// A value of any type, or nothing: std::any without its requirement that the type be copyable. It is
/// not copyable itself.
///
/// A value whose type is nothrow move-constructible and fits `inline_size` bytes with an alignment of at
/// most `inline_align` is stored inline (no allocation): an int, a double, a pointer, a
/// std::unique_ptr, a std::shared_ptr, a std::string_view, a std::string (libstdc++ and libc++), a
/// std::function. The buffer is at least as large as std::any's in-place buffer in libstdc++ (8 bytes)
/// and libc++ (24). Any other value is allocated with a new-expression and moved by its pointer: it never
/// moves, and it need not be movable at all.
///
/// Moving an AnyValue never throws and leaves the source empty. `reset()` and the destructor empty the
/// holder before they destroy the value, so that the value's destructor finds it empty. The type of the
/// value is compared by `typeid`, so that a value stored by one shared library is found by another.
/// Not thread-safe.
class AnyValue {
public:
    static constexpr std::size_t inline_size = sizeof(std::string) > 3 * sizeof(void*) ? sizeof(std::string)
                                                                                       : 3 * sizeof(void*);
    static constexpr std::size_t inline_align = alignof(void*);

    /// True when a T is stored inline.
    template <class T>
    static constexpr bool stored_inline =
        sizeof(T) <= inline_size && alignof(T) <= inline_align&& std::is_nothrow_move_constructible_v<T>;

    /// Empty. Never throws, never allocates.
    AnyValue() noexcept = default;

    /// Holds a T made from `args` (with parentheses, or with braces for an aggregate). If making it or
    /// allocating for it throws, the exception propagates and nothing is made.
    template <class T, class... Args>
    explicit AnyValue(std::in_place_type_t<T>, Args&&... args) {
        static_assert(std::is_object_v<T> && std::is_same_v<T, std::decay_t<T>>,
                      "ctxlocal::detail::AnyValue holds object types without cv-qualifiers, not arrays");
        if constexpr (stored_inline<T>) {
            make<T>(static_cast<void*>(storage_.buffer), std::forward<Args>(args)...);
        } else {
            storage_.heap = make_new<T>(std::forward<Args>(args)...);
        }
        ops_ = &ops_for<T>;
    }

    AnyValue(AnyValue&& other) noexcept { take(other); }
    AnyValue& operator=(AnyValue&& other) noexcept {
        if (this != &other) {
            reset();
            take(other);
        }
        return *this;
    }
    AnyValue(const AnyValue&) = delete;
    AnyValue& operator=(const AnyValue&) = delete;
    ~AnyValue() { reset(); }

    /// Destroys the value, if any. The holder is empty while the value's destructor runs.
    void reset() noexcept {
        if (ops_ == nullptr) return;
        const Ops* ops = ops_;
        ops_ = nullptr;
        ops->destroy(storage_);
    }

    bool has_value() const noexcept { return ops_ != nullptr; }

    /// The type of the value; typeid(void) when empty.
    const std::type_info& type() const noexcept { return ops_ == nullptr ? typeid(void) : *ops_->type; }

    /// True when the value is a T (cv-qualifiers ignored).
    template <class T>
    bool holds() const noexcept {
        using U = std::remove_cv_t<T>;
        return ops_ != nullptr && (ops_ == &ops_for<U> || *ops_->type == typeid(U));
    }

    /// The value, which is a T (precondition: holds<T>()).
    template <class T>
    T& unchecked() noexcept {
        return *static_cast<T*>(address());
    }

    /// The value when it is a T, otherwise nullptr.
    template <class T>
    T* get_if() noexcept {
        return holds<T>() ? static_cast<T*>(address()) : nullptr;
    }
    template <class T>
    const T* get_if() const noexcept {
        return holds<T>() ? static_cast<const T*>(const_cast<AnyValue*>(this)->address()) : nullptr;
    }

private:
    union Storage {
        void* heap;
        alignas(inline_align) unsigned char buffer[inline_size];
    };

    struct Ops {
        const std::type_info* type;
        bool is_inline;
        void (*destroy)(Storage&) noexcept;
        void (*relocate)(Storage& from, Storage& to) noexcept;  // inline only: move, destroy the source
    };

    template <class T>
    static T* inline_value(Storage& s) noexcept {
        return std::launder(reinterpret_cast<T*>(s.buffer));
    }
    template <class T>
    static const T* inline_value(const Storage& s) noexcept {
        return std::launder(reinterpret_cast<const T*>(s.buffer));
    }

    template <class T, class... Args>
    static void make(void* where, Args&&... args) {
        if constexpr (std::is_constructible_v<T, Args&&...>) {
            ::new (where) T(std::forward<Args>(args)...);
        } else {
            ::new (where) T{std::forward<Args>(args)...};
        }
    }
    template <class T, class... Args>
    static T* make_new(Args&&... args) {
        if constexpr (std::is_constructible_v<T, Args&&...>) {
            return new T(std::forward<Args>(args)...);
        } else {
            return new T{std::forward<Args>(args)...};
        }
    }

    template <class T>
    static void destroy(Storage& s) noexcept {
        if constexpr (stored_inline<T>) {
            inline_value<T>(s)->~T();
        } else {
            delete static_cast<T*>(s.heap);
        }
    }
    template <class T>
    static void relocate(Storage& from, Storage& to) noexcept {
        T* source = inline_value<T>(from);
        ::new (static_cast<void*>(to.buffer)) T(std::move(*source));
        source->~T();
    }
    template <class T>
    static constexpr Ops make_ops() noexcept {
        Ops ops{&typeid(T), stored_inline<T>, &destroy<T>, nullptr};
        if constexpr (stored_inline<T>) ops.relocate = &relocate<T>;
        return ops;
    }
    template <class T>
    static constexpr Ops ops_for = make_ops<T>();

    void* address() noexcept { return ops_->is_inline ? static_cast<void*>(storage_.buffer) : storage_.heap; }

    /// Moves other's value here (this holder is empty) and empties other.
    void take(AnyValue& other) noexcept {
        if (other.ops_ == nullptr) return;
        if (other.ops_->is_inline) {
            other.ops_->relocate(other.storage_, storage_);
        } else {
            storage_.heap = other.storage_.heap;
        }
        ops_ = other.ops_;
        other.ops_ = nullptr;
    }

    const Ops* ops_ = nullptr;
    Storage storage_;
};

}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
