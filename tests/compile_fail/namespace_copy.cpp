// Compile-fail: a ctxlocal::Namespace cannot be copied (it may hold move-only values); it can be moved.
// expect: deleted (function|constructor of) .ctxlocal::(abi_v[0-9]+::)?Namespace(::Namespace\(const |.)
#include <ctxlocal/namespace.hpp>

#include <cstddef>
#include <utility>

std::size_t names(ctxlocal::Namespace& original) {
#ifdef CTXLOCAL_COMPILE_FAIL_CONTROL
    ctxlocal::Namespace copy(std::move(original));
#else
    ctxlocal::Namespace copy(original);  // misuse
#endif
    return copy.size();
}
