// ctxlocal::Namespace: werkzeug-style attributes of any type, by name (Flask's `g`).
#pragma once

#include <any>
#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "config.hpp"
#include "detail/type_name.hpp"
#include "errors.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {

/// String-keyed values of any type, kept in insertion order. `Local<Namespace>` is werkzeug's `Local`
/// in C++, and a Namespace is what Flask's `g` holds.
///
///     ctxlocal::Namespace g;
///     g.set("user_id", 42);
///     g.get<int>("user_id");                    // 42
///     g.get_or<std::string>("lang", "en");      // "en"
///     g.get<std::string>("user_id");            // throws attribute_error: holds int, not std::string
///     for (const std::string& name : g) ...     // "user_id"
///
/// Values are stored in `std::any` (small values without allocation) in a vector searched linearly:
/// made for the handful of names a request keeps. Names are case-sensitive.
/// Errors: reading a missing name, or a name whose value has another type, throws attribute_error naming
/// the attribute, and changes nothing. Not thread-safe: a Namespace belongs to one thread at a time
/// (which is what putting it in a Local gives you).
class CTXLOCAL_EXPORT Namespace {
public:
    /// Iterates over the names, in insertion order.
    class const_iterator {
    public:
        using value_type = std::string;
        using reference = const std::string&;
        using pointer = const std::string*;
        using difference_type = std::ptrdiff_t;
        using iterator_category = std::forward_iterator_tag;

        const_iterator() = default;
        reference operator*() const { return it_->first; }
        pointer operator->() const { return &it_->first; }
        const_iterator& operator++() {
            ++it_;
            return *this;
        }
        const_iterator operator++(int) {
            const_iterator old = *this;
            ++it_;
            return old;
        }
        friend bool operator==(const const_iterator& a, const const_iterator& b) { return a.it_ == b.it_; }
        friend bool operator!=(const const_iterator& a, const const_iterator& b) { return a.it_ != b.it_; }

    private:
        friend class Namespace;
        using base = std::vector<std::pair<std::string, std::any>>::const_iterator;
        explicit const_iterator(base it) : it_(it) {}
        base it_{};
    };

    Namespace() = default;

    /// Sets `name` to `value`, replacing any value (of any type) it had, and returns the stored value.
    /// If copying or moving `value` throws, nothing changes.
    template <class T>
    std::decay_t<T>& set(std::string_view name, T&& value) {
        using V = std::decay_t<T>;
        std::any fresh(std::in_place_type<V>, std::forward<T>(value));  // if this throws, nothing changed
        if (std::any* slot = find(name)) {
            slot->swap(fresh);
            return *std::any_cast<V>(slot);
        }
        auto& entry = entries_.emplace_back(std::string(name), std::move(fresh));
        return *std::any_cast<V>(&entry.second);
    }

    /// The value of `name` as a T. Throws attribute_error when the name is missing or holds another type.
    template <class T>
    T& get(std::string_view name) {
        return checked<T>(name);
    }
    /// Const overload of get().
    template <class T>
    const T& get(std::string_view name) const {
        return const_cast<Namespace*>(this)->checked<T>(name);
    }

    /// A pointer to the value of `name` when it exists and holds a T; nullptr otherwise. Never throws.
    template <class T>
    T* get_if(std::string_view name) noexcept {
        std::any* slot = find(name);
        return slot == nullptr ? nullptr : std::any_cast<T>(slot);
    }
    /// Const overload of get_if().
    template <class T>
    const T* get_if(std::string_view name) const noexcept {
        return const_cast<Namespace*>(this)->get_if<T>(name);
    }

    /// A copy of the value of `name`, or `fallback` when it is missing. Throws attribute_error when the
    /// name holds another type (a wrong type is a bug, not a default).
    template <class T, class D>
    T get_or(std::string_view name, D&& fallback) const {
        if (find(name) == nullptr) return T(std::forward<D>(fallback));
        return get<T>(name);
    }

    /// Returns the value of `name`, first setting it to `value` when it is missing (Python's
    /// `setdefault`). Throws attribute_error, changing nothing, when it exists with another type.
    template <class T>
    std::decay_t<T>& setdefault(std::string_view name, T&& value) {
        if (find(name) != nullptr) return checked<std::decay_t<T>>(name);
        return set(name, std::forward<T>(value));
    }

    /// Removes `name` and returns its value. Throws attribute_error, changing nothing, when the name is
    /// missing or holds another type.
    template <class T>
    T pop(std::string_view name) {
        auto it = find_entry(name);
        T result(std::move(checked<T>(name)));
        entries_.erase(it);
        return result;
    }

    /// Removes `name` and returns its value, or returns `fallback` when it is missing. Throws
    /// attribute_error, changing nothing, when it holds another type.
    template <class T, class D>
    T pop(std::string_view name, D&& fallback) {
        if (find(name) == nullptr) return T(std::forward<D>(fallback));
        return pop<T>(name);
    }

    /// True when `name` is set.
    bool contains(std::string_view name) const noexcept { return find(name) != nullptr; }

    /// Removes `name`; returns whether it was there.
    bool erase(std::string_view name) noexcept {
        auto it = find_entry(name);
        if (it == entries_.end()) return false;
        entries_.erase(it);
        return true;
    }

    /// Number of names set.
    std::size_t size() const noexcept { return entries_.size(); }
    /// True when no name is set.
    bool empty() const noexcept { return entries_.empty(); }
    /// Removes every name (destroying the values, in insertion order).
    void clear() noexcept {
        for (auto& entry : entries_) entry.second.reset();  // in insertion order, whatever clear() does
        entries_.clear();
    }

    /// Iteration over the names, in insertion order.
    const_iterator begin() const noexcept { return const_iterator(entries_.begin()); }
    const_iterator end() const noexcept { return const_iterator(entries_.end()); }

private:
    using Entries = std::vector<std::pair<std::string, std::any>>;

    Entries::iterator find_entry(std::string_view name) noexcept {
        for (auto it = entries_.begin(); it != entries_.end(); ++it) {
            if (it->first == name) return it;
        }
        return entries_.end();
    }

    std::any* find(std::string_view name) noexcept {
        auto it = find_entry(name);
        return it == entries_.end() ? nullptr : &it->second;
    }
    const std::any* find(std::string_view name) const noexcept {
        return const_cast<Namespace*>(this)->find(name);
    }

    template <class T>
    T& checked(std::string_view name) {
        std::any* slot = find(name);
        if (slot == nullptr) {
            throw attribute_error(std::string(name), "ctxlocal::Namespace has no attribute '" +
                                                         std::string(name) +
                                                         "'; set it first, or use get_if/get_or");
        }
        if (T* value = std::any_cast<T>(slot)) return *value;
        throw attribute_error(std::string(name), "ctxlocal::Namespace attribute '" + std::string(name) +
                                                     "' holds a " + detail::demangle(slot->type().name()) +
                                                     ", not a " + detail::type_name<T>());
    }

    Entries entries_;
};

}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
