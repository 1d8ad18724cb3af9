// Compile-fail: Namespace::set of a move-only lvalue (it would have to be copied) is refused with a
// static_assert that says to move it in.
// expect: static.assert(ion)? failed.*ctxlocal::Namespace::set\(name, value\): the value cannot be copied
#include <ctxlocal/namespace.hpp>

#include <memory>

void store(ctxlocal::Namespace& g) {
    auto db = std::make_unique<int>(1);
#ifdef CTXLOCAL_COMPILE_FAIL_CONTROL
    g.set("db", std::move(db));
#else
    g.set("db", db);  // misuse
#endif
}
