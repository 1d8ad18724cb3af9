// ctxlocal::detail::BasicLocal<T, W>: the implementation shared by Local (W = task: the value of the
// thread, or of the Storage it runs in) and ThreadLocal (W = thread: always the OS thread's own value).
// The public contracts are documented on Local and ThreadLocal in local.hpp.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "../config.hpp"
#include "../errors.hpp"
#include "marks.hpp"
#include "record.hpp"
#include "registry.hpp"
#include "type_name.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {

template <class T, Where W>
class BasicLocal {
    static_assert(std::is_object_v<T> && !std::is_array_v<T> && !std::is_const_v<T>,
                  "ctxlocal::Local<T>: T must be a non-const, non-array object type");

public:
    using value_type = T;

    /// Makes a Local whose values are value-initialised (`T{}`) on first `value()`.
    /// constexpr: a namespace-scope Local is constant-initialised (no static-initialisation-order
    /// problem). Takes no storage slot until first used. Never allocates, never throws.
    constexpr BasicLocal() noexcept = default;

    /// Makes a Local whose values are made by `init()` on first `value()` on each thread. `init` is
    /// called on that thread, outside every ctxlocal lock, and may itself use other Locals. A function
    /// pointer or capture-less lambda keeps the constructor constexpr.
    template <class F, std::enable_if_t<std::is_convertible_v<F, T (*)()>, int> = 0>
    constexpr explicit BasicLocal(F init) noexcept : init_fn_(static_cast<T (*)()>(init)) {}

    /// As above, for an initialiser with state (a lambda with captures, a function object). Allocates
    /// once, here.
    template <class F, std::enable_if_t<!std::is_convertible_v<F, T (*)()> && std::is_invocable_v<F&> &&
                                            !std::is_base_of_v<BasicLocal, std::decay_t<F>>,
                                        int> = 0>
    explicit BasicLocal(F init) : init_obj_(new std::function<T()>(std::move(init))) {}

    BasicLocal(const BasicLocal&) = delete;
    BasicLocal& operator=(const BasicLocal&) = delete;

    /// Destroys every thread's value (see the class comment).
    ~BasicLocal() {
        if (process_exiting.load(std::memory_order_acquire)) {
            // exit() is running and other threads may still use this Local: destroy only the calling
            // thread's value and leave the Local usable (its initialiser too) for them and for later
            // static destructors and atexit handlers. The operating system reclaims the rest.
            // The initialiser is deliberately not freed: another thread may be calling it.
            reset();
            return;
        }
        const std::uint32_t id = id_.load(std::memory_order_acquire);
        id_.store(dead_id, std::memory_order_release);
        if (id != 0 && id != dead_id) Registry::instance().release_id(id);
        delete init_obj_;
    }

    /// Returns the calling thread's value, or nullptr when it has none. Never creates one.
    /// The fast path: the id, one thread-local load, a bounds check and the slot. No lock, no atomic
    /// read-modify-write, never allocates. Thread-safe.
    T* get() noexcept {
        // Relaxed: nothing read here was published by the thread that set the id. The slot is the calling
        // table's own (written by the thread that runs on it, or under the lock that entering a Storage
        // synchronises with); a thread that stored a value read or wrote this id before, so it sees at
        // least that id (coherence); an id not seen yet reads as "no value", which is what it is.
        const std::uint32_t id = id_.load(std::memory_order_relaxed);
        const Table* t = table_of<W>();
        if (CTXLOCAL_LIKELY(id < t->capacity)) {
            return static_cast<T*>(t->slots()[id].load(std::memory_order_relaxed));
        }
        return nullptr;
    }
    /// Const overload of get().
    const T* get() const noexcept { return const_cast<BasicLocal*>(this)->get(); }

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
        Registry::check_can_store<W>();
        check_alive();
        auto fresh = std::make_unique<T>(std::forward<A>(args)...);
        return install(std::move(fresh));
    }

    /// Destroys the calling thread's value (release, not overwrite: the next value() makes a new one).
    /// Does nothing when there is none. Thread-safe.
    void reset() noexcept {
        const std::uint32_t id = id_.load(std::memory_order_acquire);
        if (id == 0 || id == dead_id) return;
        if (void* old = Registry::instance().template take<W>(id)) destroy(old);
    }

    /// Calls `f(T&)` for every thread's value, the calling thread's included, in no particular order.
    /// While it runs no visited value is destroyed by its thread exiting, and no thread starts or ends
    /// its exit teardown: keep `f` short. `f` may use Locals (the lock is re-entrant on this thread).
    /// Mutating a value that its own thread uses at the same time is the caller's race.
    /// If `f` throws, the exception propagates and the visit stops.
    template <class F>
    void for_each(F f) {
        const std::uint32_t id = id_.load(std::memory_order_acquire);
        if (id == 0 || id == dead_id) return;
        Registry::instance().visit(id, [&f](void* p) { f(*static_cast<T*>(p)); });
    }

    /// How many threads hold a value at this moment. Takes the registry lock.
    std::size_t count() const {
        const std::uint32_t id = id_.load(std::memory_order_acquire);
        if (id == 0 || id == dead_id) return 0;
        return Registry::instance().count(id);
    }

private:
    static void destroy(void* p) noexcept { delete static_cast<T*>(p); }

    CTXLOCAL_NOINLINE T& create() {
        Registry::check_can_store<W>();  // before init() runs: it may itself use this Local
        check_alive();                   // a destroyed Local's initialiser is gone
        // init() calling value() on this same Local (directly or through other Locals) would recurse
        // forever: refuse it. The mark lives in the thread's record, so the record is made first.
        Registry::instance().ensure_record();
        if (ScopedMark::contains(MarkKind::initialising, this)) throw_reentrant_init();
        const ScopedMark initialising(MarkKind::initialising, this);
        // new T(init()) rather than make_unique: guaranteed elision, so T need not be movable.
        if (init_fn_ != nullptr) return install(std::unique_ptr<T>(new T(init_fn_())));
        if (init_obj_) return install(std::unique_ptr<T>(new T((*init_obj_)())));
        if constexpr (std::is_default_constructible_v<T>) {
            return install(std::make_unique<T>());
        } else {
            throw unbound_error(
                name() +
                ": this thread has no value, and the Local has no initialiser and the type is "
                "not default-constructible; call emplace(...) first or give the Local an "
                "initialiser");
        }
    }

    T& install(std::unique_ptr<T> fresh) {
        const std::uint32_t id = ensure_id();
        void* old = Registry::instance().template exchange<W>(id, fresh.get());
        T& result = *fresh.release();
        if (old != nullptr) destroy(old);
        return result;
    }

    void check_alive() const {
        if (CTXLOCAL_UNLIKELY(id_.load(std::memory_order_acquire) == dead_id)) throw_destroyed();
    }

    [[noreturn]] static CTXLOCAL_NOINLINE void throw_destroyed() {
        throw unbound_error(name() +
                            ": used after it was destroyed (check the destruction order of globals)");
    }

    [[noreturn]] static CTXLOCAL_NOINLINE void throw_reentrant_init() {
        throw unbound_error(name() +
                            ": its initialiser asked for the value it is making (value() called from "
                            "inside the initialiser on the same thread)");
    }

    /// "ctxlocal::Local<T>" or "ctxlocal::ThreadLocal<T>", for error messages.
    static std::string name() {
        return std::string(W == Where::task ? "ctxlocal::Local<" : "ctxlocal::ThreadLocal<") +
               type_name<T>() + ">";
    }

    std::uint32_t ensure_id() {
        std::uint32_t id = id_.load(std::memory_order_acquire);
        if (CTXLOCAL_LIKELY(id != 0 && id != dead_id)) return id;
        if (id == dead_id) throw_destroyed();
        const std::uint32_t fresh = Registry::instance().acquire_id(&BasicLocal::destroy);
        if (id_.compare_exchange_strong(id, fresh, std::memory_order_acq_rel)) return fresh;
        Registry::instance().release_id(fresh);  // another thread won the race
        return id;
    }

    std::atomic<std::uint32_t> id_{0};
    T (*init_fn_)() = nullptr;
    // Owned; a raw pointer because at process exit the destructor leaves it alive for other threads.
    std::function<T()>* init_obj_ = nullptr;
};

}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
