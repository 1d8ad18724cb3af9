// ctxlocal::Namespace: werkzeug-style attributes of any type, by name (Flask's `g`).
#pragma once

#include <cstddef>
#include <iterator>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "config.hpp"
#include "detail/any_value.hpp"
#include "detail/string_values.hpp"
#include "detail/type_name.hpp"
#include "errors.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {

/// String-keyed values of any type, kept in insertion order. `Local<Namespace>` is werkzeug's `Local`
/// in C++, and a Namespace is what Flask's `g` holds.
///
///     ctxlocal::Namespace g;
///     g.set("user_id", 42);
///     g.set("user", "ana");                          // a string literal is stored as a std::string
///     g.set("db", std::make_unique<Conn>());         // move-only values too
///     g.get<int>("user_id");                         // 42
///     g.get_or<std::string>("lang", "en");           // "en"
///     g.get<std::string>("user_id");                 // throws attribute_error: holds int, not std::string
///     std::unique_ptr<Conn> db = g.pop<std::unique_ptr<Conn>>("db");  // moved out
///     for (const std::string& name : g) ...          // "user_id", "user"
///
/// Values: any object type. `set` copies or moves its argument in (a move-only value is moved in:
/// `set(name, std::move(value))`), `emplace<T>` makes one in place (also of a type that cannot be moved).
/// A character array, such as a string literal, is stored as a std::basic_string of its characters, up to
/// its first NUL (`stored_type<T>`); a character *pointer* is stored as the pointer: it may point at
/// static data on purpose, and copying what it points at would mean guessing its length and lifetime.
/// Each value lives in a node of its own and never moves: the Namespace runs a value's constructors only
/// when it is stored (and its move or copy constructor in pop), its destructor only when it is removed.
/// A reference or pointer to a value stays valid until that name is set again or removed, or the
/// Namespace is cleared or destroyed; other names coming and going, and moving or swapping the
/// Namespace, leave it valid. Allocation: a name longer than the small-string buffer, the names' storage
/// when it grows, a node per value (nodes of removed values are kept and reused: an emptied Namespace
/// filled again as full allocates none), and a value larger than a std::string (32 bytes with 64-bit
/// libstdc++: an int, a std::unique_ptr, a std::shared_ptr, a short std::string fit).
///
/// The names live in a vector searched linearly: made for the handful of names a request keeps. Names are
/// case-sensitive.
///
/// Errors: reading a missing name, or a name whose value has another type, throws attribute_error naming
/// the attribute, and changes nothing. If making, copying or moving a value in throws, nothing changes.
/// A value's destructor may use the Namespace it is being removed from (by erase, pop, clear, a replacing
/// set, or the Namespace's destruction): the name is removed before the value is destroyed, so the
/// destructor sees a consistent Namespace and what it sets stays set (clear() and the destructor remove
/// that too). Not copyable (a value may be move-only); movable. Not thread-safe: a Namespace belongs to
/// one thread at a time (which is what putting it in a Local gives you).
class CTXLOCAL_EXPORT Namespace {
    using Entries = std::vector<std::pair<std::string, detail::NodePtr>>;  // a node per value: it never moves

public:
    /// The type that `set(name, value)` stores for a value of type T: std::basic_string<C> for an array of
    /// characters C (char, wchar_t, char8_t, char16_t, char32_t), `std::decay_t<T>` otherwise.
    template <class T>
    using stored_type = detail::stored_value_t<T>;

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
        explicit const_iterator(Entries::const_iterator it) : it_(it) {}
        Entries::const_iterator it_{};
    };

    /// Empty. Never throws, never allocates.
    Namespace() noexcept = default;

    /// Takes other's names and values (no value is copied or moved); other is left empty. Never throws.
    Namespace(Namespace&& other) noexcept
        : entries_(std::move(other.entries_)), pool_(std::move(other.pool_)) {
        other.entries_.clear();
        other.lose_trackers(entries_);
    }
    /// Takes other's names and values (other is left empty), then destroys the values this Namespace
    /// held, in insertion order (their destructors see it holding other's). Never throws.
    Namespace& operator=(Namespace&& other) noexcept {
        if (this != &other) {
            Namespace old(std::move(*this));
            swap(other);
        }  // old's values are destroyed here
        return *this;
    }
    /// Not copyable: a Namespace may hold move-only values, and it cannot know at compile time whether
    /// every stored type can be copied. Copy the values you need (get_or<T> returns a copy), or move it.
    Namespace(const Namespace&) = delete;
    Namespace& operator=(const Namespace&) = delete;

    /// Destroys the values, in insertion order, as clear() does.
    ~Namespace() { clear(); }

    /// Exchanges the names and values of two Namespaces. Never throws.
    void swap(Namespace& other) noexcept {
        entries_.swap(other.entries_);
        pool_.swap(other.pool_);
        lose_trackers(other.entries_);
        other.lose_trackers(entries_);
    }
    friend void swap(Namespace& a, Namespace& b) noexcept { a.swap(b); }

    /// Sets `name` to `value` (stored as `stored_type<T>`: a string literal as a std::string), replacing
    /// any value of any type it had, and returns the stored value. A replaced name keeps its place in the
    /// order. If copying or moving `value` in, or allocating, throws, nothing changes, and an rvalue
    /// `value` is moved from only if its own move constructor is what threw.
    /// The replaced value is destroyed last; if its destructor removes the name, or sets it to another
    /// type, set() throws attribute_error (there is no value to return), leaving what the destructor did.
    template <class T>
    stored_type<T>& set(std::string_view name, T&& value) {
        using V = stored_type<T>;
        if constexpr (detail::is_string_array_v<T>) {
            const detail::array_element_t<T>* text = value;
            return put<V>(name, text, detail::string_array_length(value));
        } else {
            static_assert(
                std::is_constructible_v<V, T&&>,
                "ctxlocal::Namespace::set(name, value): the value cannot be copied or moved in; pass "
                "a move-only value as an rvalue, set(name, std::move(value)), or make one in place "
                "with emplace<T>(name, args...)");
            return put<V>(name, std::forward<T>(value));
        }
    }

    /// Sets `name` to a T made in place from `args` (with braces for an aggregate), replacing any value
    /// it had, as set() does. T need not be movable.
    template <class T, class... Args>
    T& emplace(std::string_view name, Args&&... args) {
        static_assert(std::is_object_v<T> && std::is_same_v<T, std::decay_t<T>>,
                      "ctxlocal::Namespace::emplace<T>: T must be an object type without const or volatile, "
                      "not an array (the type that get<T> reads back)");
        return put<T>(name, std::forward<Args>(args)...);
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
        const std::size_t i = index_of(name);
        return i == npos ? nullptr : entries_[i].second->value.template get_if<T>();
    }
    /// Const overload of get_if().
    template <class T>
    const T* get_if(std::string_view name) const noexcept {
        return const_cast<Namespace*>(this)->get_if<T>(name);
    }

    /// A copy of the value of `name`, or a T made from `fallback` when it is missing (a character array
    /// up to its first NUL). Throws attribute_error when the name holds another type (a wrong type is a
    /// bug, not a default). A move-only T does not compile: read it with get<T> or get_if<T>.
    template <class T, class D>
    T get_or(std::string_view name, D&& fallback) const {
        static_assert(std::is_copy_constructible_v<T>,
                      "ctxlocal::Namespace::get_or<T>: T must be copy-constructible (get_or returns a copy); "
                      "read a move-only value with get<T> or get_if<T>, or move it out with pop<T>");
        if (index_of(name) == npos) return detail::make_from<T>(std::forward<D>(fallback));
        return get<T>(name);
    }

    /// Returns the value of `name`, first setting it to `value` (as set() stores it) when it is missing
    /// (Python's `setdefault`). Throws attribute_error, changing nothing, when it exists with another type.
    template <class T>
    stored_type<T>& setdefault(std::string_view name, T&& value) {
        if (index_of(name) != npos) return checked<stored_type<T>>(name);
        return set(name, std::forward<T>(value));
    }

    /// Removes `name` and returns its value, moved out (copied when T's move may throw and T can be
    /// copied). Throws attribute_error, changing nothing, when the name is missing or holds another type.
    /// If moving or copying the value out throws, the name stays set (to the value as that move left it).
    template <class T>
    T pop(std::string_view name) {
        static_assert(
            std::is_move_constructible_v<T>,
            "ctxlocal::Namespace::pop<T>: T must be movable (pop returns the value); remove a value "
            "that cannot be moved with erase(name)");
        const std::size_t i = checked_index<T>(name);
        T result(std::move_if_noexcept(entries_[i].second->value.template unchecked<T>()));
        remove(i);  // the moved-from value is destroyed after the name is gone
        return result;
    }

    /// Removes `name` and returns its value, or a T made from `fallback` when it is missing. Throws
    /// attribute_error, changing nothing, when it holds another type.
    template <class T, class D>
    T pop(std::string_view name, D&& fallback) {
        if (index_of(name) == npos) return detail::make_from<T>(std::forward<D>(fallback));
        return pop<T>(name);
    }

    /// True when `name` is set.
    bool contains(std::string_view name) const noexcept { return index_of(name) != npos; }

    /// Removes `name`, then destroys its value; returns whether it was there.
    bool erase(std::string_view name) noexcept {
        const std::size_t i = index_of(name);
        if (i == npos) return false;
        remove(i);
        return true;
    }

    /// Number of names set.
    std::size_t size() const noexcept { return entries_.size(); }
    /// True when no name is set.
    bool empty() const noexcept { return entries_.empty(); }

    /// Removes every name, then destroys the values in insertion order. A destructor sees the Namespace
    /// without the names being cleared; names it sets are cleared in turn (round after round, until a
    /// round sets none), so clear() leaves the Namespace empty. Keeps the storage (the names' slots and
    /// the values' nodes), so that filling it again as full allocates nothing but long names and large
    /// values.
    void clear() noexcept {
        while (!entries_.empty()) {
            Entries doomed;
            doomed.swap(entries_);
            for (Tracker* t = trackers_; t != nullptr; t = t->outer) {
                if (t->index != npos) t->lost_name = std::move(doomed[t->index].first);
                t->index = npos;
            }
            for (auto& entry : doomed) {  // in insertion order; the destructors may set names again
                entry.second->value.reset();
                pool_.recycle(std::move(entry.second));
            }
            if (entries_.empty()) {
                doomed.clear();
                entries_.swap(doomed);  // keep the storage
            }
        }
    }

    /// Iteration over the names, in insertion order.
    const_iterator begin() const noexcept { return const_iterator(entries_.begin()); }
    const_iterator end() const noexcept { return const_iterator(entries_.end()); }

private:
    static constexpr std::size_t npos = static_cast<std::size_t>(-1);

    /// A replacing set() in progress: where its entry is while the replaced value's destructor runs.
    /// erase, pop and clear keep `index` current; when the entry is removed or moved away, index is npos
    /// and lost_name its name.
    struct Tracker {
        std::size_t index;
        Tracker* outer;
        std::string lost_name;
    };

    std::size_t index_of(std::string_view name) const noexcept {
        for (std::size_t i = 0; i < entries_.size(); ++i) {
            if (entries_[i].first == name) return i;
        }
        return npos;
    }

    /// Stores a V made from args under name; see set(). The value is made in a node of its own first
    /// (nothing else has changed if that throws, and no stored value moves, so args may refer to one);
    /// then the name is looked up again, since V's constructor may have used this Namespace. Adding a
    /// name, the name and the grown storage are made before the value, so that an rvalue argument is
    /// moved from only by the value's construction; storing it then cannot throw.
    template <class V, class... Args>
    V& put(std::string_view name, Args&&... args) {
        if (index_of(name) != npos) {  // replacing: only making the value (and its node) can throw
            detail::NodePtr node = pool_.make<V>(std::forward<Args>(args)...);
            if (const std::size_t i = index_of(name); i != npos) return replace<V>(i, std::move(node));
            return add<V>(std::string(name), Entries(), std::move(node));
        }
        std::string key(name);
        Entries grown;
        if (entries_.size() == entries_.capacity()) grown.reserve(entries_.empty() ? 4 : 2 * entries_.size());
        detail::NodePtr node = pool_.make<V>(std::forward<Args>(args)...);
        if (const std::size_t i = index_of(key); i != npos) return replace<V>(i, std::move(node));
        return add<V>(std::move(key), std::move(grown), std::move(node));
    }

    /// Appends (key, node), in `grown` when the storage is full and grown has room (then never throws).
    template <class V>
    V& add(std::string&& key, Entries&& grown, detail::NodePtr&& node) {
        if (entries_.size() == entries_.capacity() && grown.capacity() > entries_.size()) {
            for (auto& entry : entries_)
                grown.emplace_back(std::move(entry));  // moves no value; never throws
            entries_.swap(grown);
        }
        entries_.emplace_back(std::move(key), std::move(node));
        return entries_.back().second->value.template unchecked<V>();
    }

    /// Puts node in entry i, then destroys the value it replaced; see set().
    template <class V>
    V& replace(std::size_t i, detail::NodePtr&& node) {
        detail::NodePtr old = std::exchange(entries_[i].second, std::move(node));
        Tracker tracker{i, trackers_, std::string()};
        trackers_ = &tracker;
        old->value.reset();  // the replaced value's destructor may use this Namespace
        trackers_ = tracker.outer;
        pool_.recycle(std::move(old));
        if (tracker.index != npos) {
            auto& [current_name, current] = entries_[tracker.index];
            if (V* value = current->value.template get_if<V>()) return *value;
            throw attribute_error(
                current_name, "ctxlocal::Namespace::set: while '" + current_name +
                                  "' was being set, the destructor of the value it replaced set it to a " +
                                  detail::demangle(current->value.type().name()) + "; there is no " +
                                  detail::type_name<V>() + " to return");
        }
        throw attribute_error(
            tracker.lost_name,
            "ctxlocal::Namespace::set: while '" + tracker.lost_name +
                "' was being set, the destructor of the value it replaced removed it (or moved "
                "the Namespace away); there is no " +
                detail::type_name<V>() + " to return");
    }

    /// Removes entry i, then destroys its value. Never throws.
    void remove(std::size_t i) noexcept {
        detail::NodePtr node = std::move(entries_[i].second);
        for (Tracker* t = trackers_; t != nullptr; t = t->outer) {
            if (t->index == i) {
                t->lost_name = std::move(entries_[i].first);
                t->index = npos;
            } else if (t->index != npos && t->index > i) {
                --t->index;
            }
        }
        entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(i));  // moves names and pointers only
        node->value.reset();  // the destructor may use this Namespace
        pool_.recycle(std::move(node));
    }

    /// This Namespace's entries moved to `now`: the replacing set() calls in progress lose theirs.
    void lose_trackers(const Entries& now) noexcept {
        for (Tracker* t = trackers_; t != nullptr; t = t->outer) {
            if (t->index == npos) continue;
            try {
                t->lost_name = now[t->index].first;
            } catch (...) {  // the name is only for the message
            }
            t->index = npos;
        }
    }

    template <class T>
    std::size_t checked_index(std::string_view name) const {
        const std::size_t i = index_of(name);
        if (i == npos) {
            throw attribute_error(std::string(name), "ctxlocal::Namespace has no attribute '" +
                                                         std::string(name) +
                                                         "'; set it first, or use get_if/get_or");
        }
        const detail::AnyValue& value = entries_[i].second->value;
        if (value.holds<T>()) return i;
        throw attribute_error(std::string(name), "ctxlocal::Namespace attribute '" + std::string(name) +
                                                     "' holds a " + detail::demangle(value.type().name()) +
                                                     ", not a " + detail::type_name<T>());
    }

    template <class T>
    T& checked(std::string_view name) {
        return entries_[checked_index<T>(name)].second->value.template unchecked<T>();
    }

    Entries entries_;
    detail::NodePool pool_;  // the nodes of removed values, for reuse
    Tracker* trackers_ = nullptr;
};

}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
