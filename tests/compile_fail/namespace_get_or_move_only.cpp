// Compile-fail: Namespace::get_or<T> returns a copy, so a move-only T is refused with a static_assert that
// says how to read the value instead.
// expect: static.assert(ion)? failed.*ctxlocal::Namespace::get_or<T>: T must be copy-constructible
#include <ctxlocal/namespace.hpp>

#include <memory>

bool has_connection(const ctxlocal::Namespace& g) {
#ifdef CTXLOCAL_COMPILE_FAIL_CONTROL
    const auto* db = g.get_if<std::unique_ptr<int>>("db");
    return db != nullptr && *db != nullptr;
#else
    return g.get_or<std::unique_ptr<int>>("db", nullptr) != nullptr;  // misuse
#endif
}
