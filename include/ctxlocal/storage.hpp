// ctxlocal::Storage: a table of Local values that belongs to a task, not a thread; and ctxlocal::wrap.
#pragma once

#include <functional>
#include <string>
#include <type_traits>
#include <utility>

#include "config.hpp"
#include "detail/record.hpp"
#include "detail/registry.hpp"
#include "detail/storage_entry.hpp"
#include "errors.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {
struct StorageAccess;
}  // namespace detail

/// The values of one task — a request served by coroutines, callbacks and thread-pool hops — carried with
/// the task instead of left on the thread that happens to run it. Python's `contextvars.Context`, for
/// ctxlocal: while a Storage is entered on a thread, every `Local`, `LocalStack`, `LocalProxy`,
/// `LocalManager` and the contexts of `Contexts<...>` (`request`, `current_app`, `g`) read and write the
/// Storage's values instead of the thread's; leaving restores the thread exactly. (`ThreadLocal` always
/// stays the thread's.)
///
///     ctxlocal::Storage task;                         // a new, empty table
///     task.run([] { user.value() = "ana"; });         // on one thread...
///     std::thread([task] {
///         task.run([] { assert(*user.get() == "ana"); });   // ...and later on another
///     }).join();
///
/// A Storage is a handle: copies refer to the same table (reference-counted, thread-safe). Its values are
/// destroyed when the last handle is released — on the releasing thread, with the Storage entered while
/// their destructors run, so they see their own task's values — or each by its Local's destructor. One
/// Storage runs on one thread at a time: entering it while another thread has it entered throws
/// context_error (like running one `contextvars.Context` on two threads). Entering it again on the same
/// thread (nested) is allowed.
///
/// Thread-safety: handles may be copied, compared and released from any threads at once. Allocation:
/// `Storage()` allocates one record; its table is allocated on the first value stored in it and grows like
/// a thread's; entering and leaving never allocate (but a thread's first entry makes its own record).
class Storage {
public:
    /// Makes a new, empty Storage. Allocates; throws std::bad_alloc.
    Storage() : record_(new detail::Record(detail::RecordKind::storage)) {
        record_->storage_state.store(detail::storage_one_ref, std::memory_order_relaxed);
    }
    Storage(const Storage& other) noexcept : record_(other.record_) {
        if (record_ != nullptr) detail::add_reference(*record_);
    }
    Storage(Storage&& other) noexcept : record_(other.record_) { other.record_ = nullptr; }
    Storage& operator=(Storage other) noexcept {
        std::swap(record_, other.record_);
        return *this;
    }
    /// Releases this handle; the last one destroys the values (see the class comment).
    ~Storage() {
        if (record_ != nullptr) detail::drop_reference(*record_);
    }

    /// The null handle, the value of a moved-from Storage: runs nothing (run() throws context_error).
    static Storage null() noexcept { return Storage(nullptr); }

    /// The Storage entered on the calling thread (the innermost one), or a null handle when the thread
    /// runs on its own values. Never allocates; takes a reference.
    static Storage current() noexcept {
        detail::Record* r = detail::current_table->record;
        if (r == nullptr || r->kind != detail::RecordKind::storage) return Storage(nullptr);
        detail::add_reference(*r);
        return Storage(r);
    }

    /// False for a null or moved-from handle.
    explicit operator bool() const noexcept { return record_ != nullptr; }
    /// True when both refer to the same table (or both are null).
    friend bool operator==(const Storage& a, const Storage& b) noexcept { return a.record_ == b.record_; }
    friend bool operator!=(const Storage& a, const Storage& b) noexcept { return a.record_ != b.record_; }

    /// Enters the Storage on the calling thread for the length of a scope; the destructor leaves it,
    /// restoring exactly what was current before (the thread's own values, or an outer Storage). The
    /// Scope holds a reference: a Storage released from inside its own Scope is destroyed when the Scope
    /// ends, after the thread has left it.
    ///
    ///     { ctxlocal::Storage::Scope in(task); handle_it(); }
    ///
    /// Throws context_error, changing nothing, for a null handle, when another thread has the Storage
    /// entered, or when 64 Scopes are already entered one inside the other on this thread. A Scope is a
    /// stack object: destroy it on the thread that made it, in reverse order of construction. A Scope
    /// destroyed out of order first leaves the Scopes entered after it (those then do nothing when they
    /// are destroyed); one destroyed on another thread changes nothing there. Both are reported to the
    /// misuse handler (`Storage::set_misuse_handler`, default: stderr). Never allocates (but see the class
    /// comment about a thread's first entry).
    class Scope {
    public:
        explicit Scope(const Storage& storage) : id_(detail::enter(checked(storage))) {}
        ~Scope() { detail::leave(id_); }
        Scope(const Scope&) = delete;
        Scope& operator=(const Scope&) = delete;

    private:
        static detail::Record& checked(const Storage& storage) {
            if (storage.record_ == nullptr) throw_null("Storage::Scope");
            return *storage.record_;
        }
        detail::EntryId id_;
    };

    /// Enters the Storage, calls `f(args...)`, leaves (also when f throws), and returns what f returned,
    /// references included (leaving destroys nothing). A null handle: context_error, f is not called.
    template <class F, class... A>
    decltype(auto) run(F&& f, A&&... args) const {
        if (record_ == nullptr) throw_null("Storage::run()");
        const Scope scope(*this);
        return std::invoke(std::forward<F>(f), std::forward<A>(args)...);
    }

    /// Sets the function that receives the misuses no exception can report (see Scope); null restores the
    /// default, which writes them to stderr. The handler must not throw. Thread-safe.
    static void set_misuse_handler(void (*handler)(const char* message)) noexcept {
        detail::misuse_handler.store(handler, std::memory_order_release);
    }

private:
    friend struct detail::StorageAccess;
    explicit Storage(detail::Record* r) noexcept : record_(r) {}

    [[noreturn]] CTXLOCAL_NOINLINE static void throw_null(const char* what) {
        throw context_error(std::string("ctxlocal::") + what +
                            ": the Storage is null (moved from, or made by Storage::null()); make one "
                            "with ctxlocal::Storage() or take Storage::current()");
    }

    detail::Record* record_;
};

namespace detail {
/// The record behind a Storage handle, for the task machinery.
struct StorageAccess {
    static Record* record(const Storage& s) noexcept { return s.record_; }
};
}  // namespace detail

/// The callable that ctxlocal::wrap returns: calls the wrapped function inside the Storage it captured.
template <class F>
class Wrapped {
public:
    Wrapped(Storage storage, F f) : storage_(std::move(storage)), f_(std::move(f)) {}

    template <class... A>
    decltype(auto) operator()(A&&... args) {
        return storage_.run(f_, std::forward<A>(args)...);
    }
    template <class... A>
    decltype(auto) operator()(A&&... args) const {
        return storage_.run(f_, std::forward<A>(args)...);
    }

    /// The Storage the callable runs in.
    const Storage& storage() const noexcept { return storage_; }

private:
    Storage storage_;
    F f_;
};

/// Captures `Storage::current()` now and returns a callable that runs `f(args...)` inside it, on whichever
/// thread calls it: a sequential hand-off of one task to another thread (a callback, a thread-pool job).
/// With no Storage current here, `f` runs inside a fresh, empty Storage (made now, shared by every call
/// of the callable and its copies): it never sees the executing thread's own values, nor this thread's.
/// The callable is copyable when F is; copies share the Storage, so calling them on two threads at once
/// throws context_error in the second (give concurrent work its own Storage, e.g. with
/// `web::copy_current_request_context`). Allocates only for a fresh Storage; thread-safe.
template <class F>
auto wrap(F f) {
    Storage storage = Storage::current();
    if (!storage) storage = Storage();
    return Wrapped<F>(std::move(storage), std::move(f));
}

}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
