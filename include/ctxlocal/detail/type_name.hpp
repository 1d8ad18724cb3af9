// Readable type names for error messages.
#pragma once

#include <string>
#include <typeinfo>

#include "../config.hpp"
#include "platform.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {

/// Replaces every `from` in `text` with `to`.
inline void replace_all(std::string& text, const std::string& from, const std::string& to) {
    for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
        text.replace(at, from.size(), to);
    }
}

#define CTXLOCAL_DETAIL_STRING2(x) #x
#define CTXLOCAL_DETAIL_STRING(x) CTXLOCAL_DETAIL_STRING2(x)

/// The demangled name of a type (e.g. "std::vector<int>", "ctxlocal::Namespace": the ABI namespace is
/// left out), or its mangled name where demangling is not available. Allocates.
inline std::string demangle(const char* mangled) {
    std::string text = platform::demangled(mangled);
    if (text.empty()) return mangled;
    // libstdc++'s and libc++'s spelling of std::string, and libc++'s inline namespace std::__1.
    replace_all(text, "std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >",
                "std::string");
    replace_all(text, "std::__1::basic_string<char, std::__1::char_traits<char>, std::__1::allocator<char> >",
                "std::string");
    replace_all(text, "std::__1::", "std::");
    replace_all(text, "ctxlocal::" CTXLOCAL_DETAIL_STRING(CTXLOCAL_ABI_NAMESPACE) "::", "ctxlocal::");
    return text;
}

template <class T>
std::string type_name() {
    return demangle(typeid(T).name());
}

}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
