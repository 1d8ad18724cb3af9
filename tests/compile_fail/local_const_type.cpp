// Compile-fail: ctxlocal::Local<const T> is refused (a per-thread value must be assignable by its thread).
// expect: static.assert(ion)? failed.*ctxlocal::Local<T>: T must be a non-const, non-array object type
#include <ctxlocal/local.hpp>

#ifdef CTXLOCAL_COMPILE_FAIL_CONTROL
ctxlocal::Local<int> local;
#else
ctxlocal::Local<const int> local;  // misuse
#endif
