// detail::AnyValue: the type-erased value holder behind ctxlocal::Namespace (std::any, but for
// move-only and unmovable values too), and the nodes that give each stored value a fixed address.
#pragma once

#include <cstddef>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include "../config.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {

/// A value of any object type, or nothing. It never moves its value: the value is made in place by
/// emplace() and destroyed in place by reset(), so no constructor or destructor of the value runs at
/// any other time. Not copyable, not movable.
///
/// A value that fits `inline_size` bytes with an alignment of at most `inline_align` is stored inside
/// the holder (no allocation): an int, a double, a pointer, a std::unique_ptr, a std::shared_ptr, a
/// std::string_view, a std::string (libstdc++ and libc++), a std::function. The buffer is at least as
/// large as std::any's in-place buffer in libstdc++ (8 bytes) and libc++ (24). A larger value is made
/// with a new-expression.
///
/// reset() and the destructor empty the holder before they destroy the value, so that the value's
/// destructor finds it empty. The type of the value is compared by `typeid`, so that a value stored by
/// one shared library is found by another. Not thread-safe.
class AnyValue {
public:
    static constexpr std::size_t inline_size = sizeof(std::string) > 3 * sizeof(void*) ? sizeof(std::string)
                                                                                       : 3 * sizeof(void*);
    static constexpr std::size_t inline_align = alignof(void*);

    /// True when a T is stored inside the holder.
    template <class T>
    static constexpr bool stored_inline =
        sizeof(T) <= inline_size && alignof(T) <= inline_align;  // NOLINT(misc-redundant-expression): per T

    AnyValue() noexcept = default;
    AnyValue(const AnyValue&) = delete;
    AnyValue& operator=(const AnyValue&) = delete;
    ~AnyValue() { reset(); }

    /// Makes a T from `args` (with parentheses, or with braces for an aggregate) and returns it.
    /// Precondition: empty. If making it or allocating for it throws, the exception propagates and the
    /// holder stays empty.
    template <class T, class... Args>
    T& emplace(Args&&... args) {
        static_assert(std::is_object_v<T> && std::is_same_v<T, std::decay_t<T>>,
                      "ctxlocal::detail::AnyValue holds object types without cv-qualifiers, not arrays");
        T* value;
        if constexpr (stored_inline<T>) {
            value = make<T>(static_cast<void*>(storage_.buffer), std::forward<Args>(args)...);
        } else {
            value = make<T>(nullptr, std::forward<Args>(args)...);
            storage_.heap = value;
        }
        ops_ = &ops_for<T>;
        return *value;
    }

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

private:
    union Storage {
        void* heap;
        alignas(inline_align) unsigned char buffer[inline_size];
    };

    struct Ops {
        const std::type_info* type;
        bool is_inline;
        void (*destroy)(Storage&) noexcept;
    };

    /// A T made from args at `where`, or with a new-expression when where is null.
    template <class T, class... Args>
    static T* make(void* where, Args&&... args) {
        if constexpr (std::is_constructible_v<T, Args&&...>) {
            return where == nullptr ? new T(std::forward<Args>(args)...)
                                    : ::new (where) T(std::forward<Args>(args)...);
        } else {
            return where == nullptr ? new T{std::forward<Args>(args)...}
                                    : ::new (where) T{std::forward<Args>(args)...};
        }
    }

    template <class T>
    static void destroy(Storage& s) noexcept {
        if constexpr (stored_inline<T>) {
            std::launder(reinterpret_cast<T*>(s.buffer))->~T();
        } else {
            delete static_cast<T*>(s.heap);
        }
    }

    template <class T>
    static constexpr Ops ops_for{&typeid(T), stored_inline<T>, &destroy<T>};

    void* address() noexcept { return ops_->is_inline ? static_cast<void*>(storage_.buffer) : storage_.heap; }

    const Ops* ops_ = nullptr;
    Storage storage_;
};

/// Where a Namespace keeps one value: allocated once, it never moves, so the value in it never moves.
struct ValueNode {
    AnyValue value;
    ValueNode* next_free = nullptr;  // in a NodePool's free list
};
using NodePtr = std::unique_ptr<ValueNode>;

/// Empty ValueNodes kept for reuse, so that a Namespace emptied and filled again allocates nothing for
/// its values. Frees them when destroyed. Movable; not thread-safe.
class NodePool {
public:
    NodePool() noexcept = default;
    NodePool(NodePool&& other) noexcept : free_(std::exchange(other.free_, nullptr)) {}
    NodePool& operator=(NodePool&& other) noexcept {
        if (this != &other) {
            release();
            free_ = std::exchange(other.free_, nullptr);
        }
        return *this;
    }
    ~NodePool() { release(); }
    void swap(NodePool& other) noexcept { std::swap(free_, other.free_); }

    /// An empty node: a kept one, or a new one (which may throw std::bad_alloc).
    NodePtr acquire() {
        if (free_ == nullptr) return std::make_unique<ValueNode>();
        ValueNode* node = free_;
        free_ = node->next_free;
        node->next_free = nullptr;
        return NodePtr(node);
    }
    /// A node holding a V made from args (see AnyValue::emplace). If that throws, the node is kept.
    template <class V, class... Args>
    NodePtr make(Args&&... args) {
        NodePtr node = acquire();
        try {
            node->value.template emplace<V>(std::forward<Args>(args)...);
        } catch (...) {
            recycle(std::move(node));
            throw;
        }
        return node;
    }
    /// Keeps `node` (precondition: its value is empty) for reuse. Never throws.
    void recycle(NodePtr node) noexcept {
        node->next_free = free_;
        free_ = node.release();
    }

private:
    void release() noexcept {
        while (free_ != nullptr) delete std::exchange(free_, free_->next_free);
    }

    ValueNode* free_ = nullptr;
};

}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
