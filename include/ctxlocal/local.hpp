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
#include "detail/marks.hpp"
#include "detail/registry.hpp"
#include "detail/type_name.hpp"
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
class Local {
    static_assert(std::is_object_v<T> && !std::is_array_v<T> && !std::is_const_v<T>,
                  "ctxlocal::Local<T>: T must be a non-const, non-array object type");

public:
    using value_type = T;

    /// Makes a Local whose values are value-initialised (`T{}`) on first `value()`.
    /// constexpr: a namespace-scope Local is constant-initialised (no static-initialisation-order
    /// problem). Takes no storage slot until first used. Never allocates, never throws.
    constexpr Local() noexcept = default;

    /// Makes a Local whose values are made by `init()` on first `value()` on each thread. `init` is
    /// called on that thread, outside every ctxlocal lock, and may itself use other Locals. A function
    /// pointer or capture-less lambda keeps the constructor constexpr.
    template <class F, std::enable_if_t<std::is_convertible_v<F, T (*)()>, int> = 0>
    constexpr explicit Local(F init) noexcept : init_fn_(static_cast<T (*)()>(init)) {}

    /// As above, for an initialiser with state (a lambda with captures, a function object). Allocates
    /// once, here.
    template <class F, std::enable_if_t<!std::is_convertible_v<F, T (*)()> && std::is_invocable_v<F&> &&
                                            !std::is_same_v<std::decay_t<F>, Local>,
                                        int> = 0>
    explicit Local(F init) : init_obj_(new std::function<T()>(std::move(init))) {}

    Local(const Local&) = delete;
    Local& operator=(const Local&) = delete;

    /// Destroys every thread's value (see the class comment).
    ~Local() {
        if (detail::process_exiting.load(std::memory_order_acquire)) {
            // exit() is running and other threads may still use this Local: destroy only the calling
            // thread's value and leave the Local usable (its initialiser too) for them and for later
            // static destructors and atexit handlers. The operating system reclaims the rest.
            // The initialiser is deliberately not freed: another thread may be calling it.
            reset();
            return;
        }
        const std::uint32_t id = id_.load(std::memory_order_acquire);
        id_.store(detail::dead_id, std::memory_order_release);
        if (id != 0 && id != detail::dead_id) detail::Registry::instance().release_id(id);
        delete init_obj_;
    }

    /// Returns the calling thread's value, or nullptr when it has none. Never creates one.
    /// The fast path: one thread-local load, a bounds check and a load. No lock, no atomic
    /// read-modify-write, never allocates. Thread-safe.
    T* get() noexcept {
        const std::uint32_t id = id_.load(std::memory_order_acquire);
        const detail::Table* t = detail::current_table;
        if (CTXLOCAL_LIKELY(id < t->capacity)) {
            return static_cast<T*>(t->slots()[id].load(std::memory_order_relaxed));
        }
        return nullptr;
    }
    /// Const overload of get().
    const T* get() const noexcept { return const_cast<Local*>(this)->get(); }

    /// True when the calling thread has a value. Thread-safe; never allocates.
    bool has_value() const noexcept { return get() != nullptr; }

    /// Returns the calling thread's value, creating it on first use from the initialiser, or by
    /// value-initialisation when there is none and T is default-constructible.
    /// Throws unbound_error (creating nothing) when T cannot be made that way, or when the thread is past
    /// its exit; rethrows what the initialiser throws (creating nothing). Allocates on creation only.
    T& value() {
        if (T* p = get()) return *p;
        return create();
    }
    /// Same as value().
    T& operator*() { return value(); }
    /// Same as &value().
    T* operator->() { return &value(); }

    /// Replaces the calling thread's value with `T(args...)`, destroying the old one, and returns the new
    /// one. If constructing throws, the old value is kept unchanged. Allocates; thread-safe.
    template <class... A>
    T& emplace(A&&... args) {
        detail::Registry::check_can_store();
        check_alive();
        auto fresh = std::make_unique<T>(std::forward<A>(args)...);
        return install(std::move(fresh));
    }

    /// Destroys the calling thread's value (release, not overwrite: the next value() makes a new one).
    /// Does nothing when there is none. Thread-safe.
    void reset() noexcept {
        const std::uint32_t id = id_.load(std::memory_order_acquire);
        if (id == 0 || id == detail::dead_id) return;
        if (void* old = detail::Registry::instance().take(id)) destroy(old);
    }

    /// Calls `f(T&)` for every thread's value, the calling thread's included, in no particular order.
    /// While it runs no visited value is destroyed by its thread exiting, and no thread starts or ends
    /// its exit teardown: keep `f` short. `f` may use Locals (the lock is re-entrant on this thread).
    /// Mutating a value that its own thread uses at the same time is the caller's race.
    /// If `f` throws, the exception propagates and the visit stops.
    template <class F>
    void for_each(F f) {
        const std::uint32_t id = id_.load(std::memory_order_acquire);
        if (id == 0 || id == detail::dead_id) return;
        detail::Registry::instance().visit(id, [&f](void* p) { f(*static_cast<T*>(p)); });
    }

    /// How many threads hold a value at this moment. Takes the registry lock.
    std::size_t count() const {
        const std::uint32_t id = id_.load(std::memory_order_acquire);
        if (id == 0 || id == detail::dead_id) return 0;
        return detail::Registry::instance().count(id);
    }

private:
    static void destroy(void* p) noexcept { delete static_cast<T*>(p); }

    CTXLOCAL_NOINLINE T& create() {
        detail::Registry::check_can_store();  // before init() runs: it may itself use this Local
        check_alive();                        // a destroyed Local's initialiser is gone
        // init() calling value() on this same Local (directly or through other Locals) would recurse
        // forever: refuse it. The mark lives in the thread's record, so the record is made first.
        detail::Registry::instance().ensure_record();
        if (detail::ScopedMark::contains(detail::MarkKind::initialising, this)) throw_reentrant_init();
        const detail::ScopedMark initialising(detail::MarkKind::initialising, this);
        // new T(init()) rather than make_unique: guaranteed elision, so T need not be movable.
        if (init_fn_ != nullptr) return install(std::unique_ptr<T>(new T(init_fn_())));
        if (init_obj_) return install(std::unique_ptr<T>(new T((*init_obj_)())));
        if constexpr (std::is_default_constructible_v<T>) {
            return install(std::make_unique<T>());
        } else {
            throw unbound_error(
                "ctxlocal::Local<" + detail::type_name<T>() +
                ">: this thread has no value, and the Local has no initialiser and the type is "
                "not default-constructible; call emplace(...) first or give the Local an "
                "initialiser");
        }
    }

    T& install(std::unique_ptr<T> fresh) {
        const std::uint32_t id = ensure_id();
        void* old = detail::Registry::instance().exchange(id, fresh.get());
        T& result = *fresh.release();
        if (old != nullptr) destroy(old);
        return result;
    }

    void check_alive() const {
        if (CTXLOCAL_UNLIKELY(id_.load(std::memory_order_acquire) == detail::dead_id)) throw_destroyed();
    }

    [[noreturn]] static CTXLOCAL_NOINLINE void throw_destroyed() {
        throw unbound_error("ctxlocal::Local<" + detail::type_name<T>() +
                            ">: used after it was destroyed (check the destruction order of globals)");
    }

    [[noreturn]] static CTXLOCAL_NOINLINE void throw_reentrant_init() {
        throw unbound_error("ctxlocal::Local<" + detail::type_name<T>() +
                            ">: its initialiser asked for the value it is making (value() called from "
                            "inside the initialiser on the same thread)");
    }

    std::uint32_t ensure_id() {
        std::uint32_t id = id_.load(std::memory_order_acquire);
        if (CTXLOCAL_LIKELY(id != 0 && id != detail::dead_id)) return id;
        if (id == detail::dead_id) throw_destroyed();
        const std::uint32_t fresh = detail::Registry::instance().acquire_id(&Local::destroy);
        if (id_.compare_exchange_strong(id, fresh, std::memory_order_acq_rel)) return fresh;
        detail::Registry::instance().release_id(fresh);  // another thread won the race
        return id;
    }

    std::atomic<std::uint32_t> id_{0};
    T (*init_fn_)() = nullptr;
    // Owned; a raw pointer because at process exit the destructor leaves it alive for other threads.
    std::function<T()>* init_obj_ = nullptr;
};

}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
