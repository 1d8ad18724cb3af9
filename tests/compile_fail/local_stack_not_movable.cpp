// Compile-fail: ctxlocal::LocalStack<T> is refused when T is not move-constructible (pop() moves the top
// element out).
// expect: static.assert(ion)? failed.*ctxlocal::LocalStack<T>: T must be move-constructible
#include <ctxlocal/local_stack.hpp>

struct Pinned {
    Pinned() = default;
    Pinned(Pinned&&) = delete;
};

struct Movable {
    Movable() = default;
};

#ifdef CTXLOCAL_COMPILE_FAIL_CONTROL
ctxlocal::LocalStack<Movable> stack;
#else
ctxlocal::LocalStack<Pinned> stack;  // misuse
#endif
