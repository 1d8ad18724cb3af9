// Compile-fail: a ctxlocal::Local cannot be copied (its copy constructor is deleted).
// expect: deleted (function|(copy )?constructor of) .ctxlocal::(.*::)?Local<(T>::Local\(const |int>.)
#include <ctxlocal/local.hpp>

bool has_value(ctxlocal::Local<int>& original) {
#ifdef CTXLOCAL_COMPILE_FAIL_CONTROL
    ctxlocal::Local<int>& copy = original;
#else
    ctxlocal::Local<int> copy(original);  // misuse
#endif
    return copy.has_value();
}
