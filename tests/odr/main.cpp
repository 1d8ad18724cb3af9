// ODR check: a.cpp and b.cpp both include <ctxlocal/ctxlocal.hpp>. The program must link (no duplicate
// non-inline definitions in the headers) and both translation units must see the same thread-local value.
#include <cstdio>

void odr_a_set(int v);
bool odr_a_sees(int v);
int odr_b_get();
bool odr_b_own_local_works();

int main() {
    odr_a_set(42);
    if (odr_b_get() != 42 || !odr_a_sees(42) || !odr_b_own_local_works()) {
        std::fprintf(stderr, "odr_test: the two translation units disagree about a ctxlocal::Local\n");
        return 1;
    }
    std::puts("odr_test: ok");
    return 0;
}
