// Readable type names (see platform.hpp): the Itanium C++ ABI demangler with GCC and Clang (also on
// mingw-w64 and macOS); MSVC's type_info::name() is already readable. Included by platform.hpp only.
#pragma once

#include <cstdlib>
#include <memory>
#include <string>

#if defined(__GNUC__) || defined(__clang__)
#include <cxxabi.h>
#endif

#include "../config.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {
namespace platform {

/// The demangled form of a `type_info::name()`, or "" when it cannot be demangled here. Allocates.
inline std::string demangled(const char* mangled) {
#if defined(__GNUC__) || defined(__clang__)
    int status = 0;
    std::unique_ptr<char, void (*)(void*)> name(abi::__cxa_demangle(mangled, nullptr, nullptr, &status),
                                                std::free);
    if (status == 0 && name) return name.get();
    return std::string();
#elif defined(_MSC_VER)
    std::string text = mangled;  // "class std::vector<int,class std::allocator<int> >"
    for (const char* prefix : {"class ", "struct ", "enum ", "union "}) {
        for (auto at = text.find(prefix); at != std::string::npos; at = text.find(prefix, at)) {
            text.erase(at, std::char_traits<char>::length(prefix));
        }
    }
    return text;
#else
    (void)mangled;
    return std::string();
#endif
}

}  // namespace platform
}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
