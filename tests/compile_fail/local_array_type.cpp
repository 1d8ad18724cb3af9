// Compile-fail: ctxlocal::Local<T[N]> is refused (arrays cannot be returned by an initialiser); use
// std::array instead.
// expect: static.assert(ion)? failed.*ctxlocal::Local<T>: T must be a non-const, non-array object type
#include <array>

#include <ctxlocal/local.hpp>

#ifdef CTXLOCAL_COMPILE_FAIL_CONTROL
ctxlocal::Local<std::array<int, 3>> local;
#else
ctxlocal::Local<int[3]> local;  // misuse
#endif
