// ODR check, translation unit B: reads the Local defined in a.cpp and uses its own.
#include <ctxlocal/ctxlocal.hpp>

extern ctxlocal::Local<int> odr_shared_local;

int odr_b_get() { return odr_shared_local.get() != nullptr ? *odr_shared_local.get() : -1; }

bool odr_b_own_local_works() {
    ctxlocal::Local<int> own;
    own.value() = 11;
    return own.get() != nullptr && *own.get() == 11;
}
