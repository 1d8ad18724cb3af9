// The program every packaging integration test builds: a consumer that only includes the umbrella header.
#include <ctxlocal/ctxlocal.hpp>

int main() {
    ctxlocal::Local<int> l;
    l.value() = 5;
    return l.get() && *l.get() == 5 ? 0 : 1;
}
