// Compile-fail: Namespace::pop<T> returns the value, so a T that cannot be moved is refused with a
// static_assert that says to erase it instead.
// expect: static.assert(ion)? failed.*ctxlocal::Namespace::pop<T>: T must be movable
#include <ctxlocal/namespace.hpp>

#include <mutex>

void release(ctxlocal::Namespace& g) {
    g.emplace<std::mutex>("lock");
#ifdef CTXLOCAL_COMPILE_FAIL_CONTROL
    g.erase("lock");
#else
    (void)g.pop<std::mutex>("lock");  // misuse
#endif
}
