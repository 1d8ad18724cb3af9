// Readable type names for error messages.
#pragma once

#include <cstdlib>
#include <memory>
#include <string>
#include <typeinfo>

#if defined(__GNUC__) || defined(__clang__)
#include <cxxabi.h>
#endif

namespace ctxlocal::detail {

/// The demangled name of a type (e.g. "std::vector<int>"), or its mangled name where demangling is not
/// available. Allocates.
inline std::string demangle(const char* mangled) {
#if defined(__GNUC__) || defined(__clang__)
    int status = 0;
    std::unique_ptr<char, void (*)(void*)> name(abi::__cxa_demangle(mangled, nullptr, nullptr, &status),
                                                std::free);
    if (status == 0 && name) {
        std::string text = name.get();
        const std::string long_string =
            "std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >";
        for (auto at = text.find(long_string); at != std::string::npos; at = text.find(long_string, at)) {
            text.replace(at, long_string.size(), "std::string");
        }
        return text;
    }
#endif
    return mangled;
}

template <class T>
std::string type_name() {
    return demangle(typeid(T).name());
}

}  // namespace ctxlocal::detail
