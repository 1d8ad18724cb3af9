// Compile-fail: a ctxlocal::LocalStack cannot be copied (its copy constructor is deleted).
// expect: deleted [a-z ]+ .ctxlocal::(abi_v[0-9]+::)?LocalStack<(T>::LocalStack\(const |int>.)
#include <cstddef>

#include <ctxlocal/local_stack.hpp>

std::size_t depth(ctxlocal::LocalStack<int>& original) {
#ifdef CTXLOCAL_COMPILE_FAIL_CONTROL
    ctxlocal::LocalStack<int>& copy = original;
#else
    ctxlocal::LocalStack<int> copy(original);  // misuse
#endif
    return copy.size();
}
