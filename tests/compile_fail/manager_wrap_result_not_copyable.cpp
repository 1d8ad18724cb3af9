// Compile-fail: LocalManager::wrap of a function that returns a reference to a type that cannot be copied.
// The callable cleans up after the call, which may destroy what the reference refers to, so results are
// returned by value: the same rule as Contexts' run() and handle().
// expect: static.assert(ion)? failed.*ctxlocal: the function returns a reference
#include <ctxlocal/manager.hpp>

#include <memory>

ctxlocal::Local<std::unique_ptr<int>> cell;

#ifdef CTXLOCAL_COMPILE_FAIL_CONTROL
int called() {
    ctxlocal::LocalManager manager{cell};
    auto wrapped = manager.wrap([] { return std::move(cell.value()); });
    return wrapped() ? 1 : 0;
}
#else
int called() {
    ctxlocal::LocalManager manager{cell};
    auto wrapped = manager.wrap([]() -> std::unique_ptr<int>& { return cell.value(); });  // misuse
    return wrapped() ? 1 : 0;
}
#endif
