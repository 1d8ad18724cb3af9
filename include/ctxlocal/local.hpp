// ctxlocal::Local<T>: one value per thread, per object.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include "config.hpp"
#include "detail/basic_local.hpp"
#include "errors.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {

/// Storage whose value is the calling thread's own: werkzeug's `Local`, as a typed C++ object.
///
/// Unlike the `thread_local` keyword, a Local is an ordinary object: make as many as you like at run
/// time, keep them as members, destroy them. Each thread that uses it gets its own `T`, created on first
/// `value()` and destroyed on that thread when it exits.
///
///     ctxlocal::Local<int> b;
///     b.value() = 1;                                   // main thread
///     std::thread([&] { b.value() = 2; }).join();      // the new thread has its own b
///     assert(*b.get() == 1);
///
/// Lifetimes. A pointer from `get()`/`value()` stays valid until that thread's value is reset or replaced,
/// the thread exits, or the Local is destroyed.
/// - Thread exit destroys the exiting thread's values on that thread, after its C++ `thread_local`
///   objects (which may therefore still use Locals). Values that destructors create during the exit are
///   destroyed too, round after round; after CTXLOCAL_MAX_EXIT_ROUNDS rounds new values are refused.
///   The main thread's values are destroyed with their Local (at static destruction for a global).
/// - Destroying a Local destroys every thread's remaining value for it, on the destroying thread; a value
///   that an exiting thread is destroying at that moment is finished by that thread before the
///   destructor returns. A new Local that reuses the storage slot never sees an old value.
/// - At process exit (exit() or return from main) other threads may still be running, so a Local
///   destroyed as a static object destroys only the calling thread's value and stays usable: other
///   threads, later static destructors and atexit handlers keep working with it. Their values are not
///   destroyed (the process is ending); they stay reachable, so leak checkers do not report them.
/// - After fork(), the child keeps the forking thread's values and none of the other threads'; the
///   other threads' values are not destroyed in the child (their destructors could need locks that no
///   thread in the child will ever release).
///
/// T's destructor must not throw: values are destroyed from noexcept paths (reset, thread exit, the
/// Local's destructor), so a throwing destructor ends the process through std::terminate.
///
/// Thread-safety: every member may be called from any thread at the same time as any other member,
/// except the destructor (no other thread may use the Local once it is being destroyed). Reading a value
/// on its own thread while `for_each` visits it on another is the caller's race to avoid.
template <class T>
class Local final : public detail::BasicLocal<T, detail::Where::task> {
    using Base = detail::BasicLocal<T, detail::Where::task>;

public:
    /// `Local<T> x;` (values value-initialised on first `value()`; constexpr, constant-initialised at
    /// namespace scope; never allocates, never throws) or `Local<T> x{init};` (values made by `init()` on
    /// first `value()`, called on that thread outside every ctxlocal lock; a function pointer or
    /// capture-less lambda keeps the constructor constexpr, a stateful callable is allocated once).
    using Base::Base;
    constexpr Local() noexcept = default;
};

/// The same API as Local, but always the OS thread's own value, also while the thread runs inside a
/// Storage: for what belongs to a thread and not to the request or task it serves (per-thread caches,
/// connection pools, counters, a random generator). Thread exit destroys the thread's values as for Local;
/// a Storage never holds a ThreadLocal's value, so releasing one does not touch them.
///
///     ctxlocal::ThreadLocal<Pool> pool;          // one per OS thread
///     ctxlocal::Local<Session> session;          // one per request, carried by its Storage
///     storage.run([] { pool->get(); session->user; });
///
/// Thread-safety, lifetimes, errors and allocation: as for Local.
template <class T>
class ThreadLocal final : public detail::BasicLocal<T, detail::Where::thread> {
    using Base = detail::BasicLocal<T, detail::Where::thread>;

public:
    /// As for Local.
    using Base::Base;
    constexpr ThreadLocal() noexcept = default;
};

}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
