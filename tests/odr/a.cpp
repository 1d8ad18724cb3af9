// ODR check, translation unit A: defines a Local shared with b.cpp and writes it.
#include <ctxlocal/ctxlocal.hpp>

ctxlocal::Local<int> odr_shared_local;

void odr_a_set(int v) { odr_shared_local.value() = v; }

bool odr_a_sees(int v) { return odr_shared_local.get() != nullptr && *odr_shared_local.get() == v; }
