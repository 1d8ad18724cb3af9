// How ctxlocal::Namespace stores character arrays (string literals, char buffers): as a
// std::basic_string of their characters, read up to the first NUL.
#pragma once

#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#include "../config.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {

/// The element type of an array type T (or reference to one), without cv-qualifiers.
template <class T>
using array_element_t = std::remove_cv_t<std::remove_extent_t<std::remove_reference_t<T>>>;

/// True for the character types: char, wchar_t, char8_t (C++20), char16_t, char32_t. Not signed char or
/// unsigned char: an array of those is bytes, not text.
template <class C>
inline constexpr bool is_character_v = std::is_same_v<C, char> || std::is_same_v<C, wchar_t> ||
#if defined(__cpp_char8_t)
                                       std::is_same_v<C, char8_t> ||
#endif
                                       std::is_same_v<C, char16_t> || std::is_same_v<C, char32_t>;

/// True when T (or the type T refers to) is a one-dimensional array of characters.
template <class T>
inline constexpr bool is_string_array_v =
    std::rank_v<std::remove_reference_t<T>> == 1 && is_character_v<array_element_t<T>>;

/// What Namespace stores for an argument of type T: std::basic_string<C> for an array of characters C,
/// std::decay_t<T> otherwise (a pointer stays a pointer).
template <class T>
using stored_value_t =
    std::conditional_t<is_string_array_v<T>, std::basic_string<array_element_t<T>>, std::decay_t<T>>;

/// The length of a character array up to its first NUL, or its whole length when it has none (an array
/// of unknown bound: up to its first NUL). Never reads past the array.
template <class A>
std::size_t string_array_length(const A& text) noexcept {
    using C = array_element_t<A>;
    constexpr std::size_t extent = std::extent_v<A>;
    if constexpr (extent == 0) {
        return std::char_traits<C>::length(text);
    } else {
        const C* nul = std::char_traits<C>::find(text, extent, C());
        return nul == nullptr ? extent : static_cast<std::size_t>(nul - text);
    }
}

/// A T made from `value`: from (pointer, length) when value is a character array and T can be made so
/// (std::string, std::string_view), from value itself otherwise.
template <class T, class D>
T make_from(D&& value) {
    if constexpr (is_string_array_v<D> &&
                  std::is_constructible_v<T, const array_element_t<D>*, std::size_t>) {
        const array_element_t<D>* text = value;
        return T(text, string_array_length(value));
    } else {
        return T(std::forward<D>(value));
    }
}

}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
