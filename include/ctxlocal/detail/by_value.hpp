// The one rule for results of calls that destroy something after the call returns (a context pop, a
// LocalManager cleanup): they are returned by value, so they cannot refer to what was destroyed.
#pragma once

#include <type_traits>
#include <utility>

#include "../config.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {

/// What such a call returns for a function returning R: R without reference or cv (void stays void).
template <class R>
using by_value_t = std::remove_cv_t<std::remove_reference_t<R>>;

/// Refuses, at compile time and with a message that says what to do, a reference result whose type cannot
/// be copied (or moved, for an rvalue reference) into the value returned.
template <class R>
constexpr bool check_by_value() {
    if constexpr (std::is_reference_v<R>) {
        static_assert(std::is_constructible_v<by_value_t<R>, R>,
                      "ctxlocal: the function returns a reference, but what it refers to may be destroyed "
                      "when the call ends (the context is popped, g and the request copy destroyed), so "
                      "ctxlocal returns results by value, and this type cannot be copied: return it by "
                      "value (std::move it out), or return a std::shared_ptr to it");
    }
    return true;
}

/// A call's result held by value across what the call is followed by (a pop, a cleanup).
template <class R>
struct Returned {
    static_assert(check_by_value<R>());
    template <class F>
    explicit Returned(F& f) : value(f()) {}
    by_value_t<R> value;
};
template <>
struct Returned<void> {
    template <class F>
    explicit Returned(F& f) {
        f();
    }
};

}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
