// Private machinery behind the context stack: a frame stack that allocates nothing in steady state, and
// teardown helpers (running callbacks, collecting their errors without allocating, naming contexts).
#pragma once

#include <cstddef>
#include <cstdio>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../app_hooks.hpp"
#include "../config.hpp"
#include "../errors.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {

/// A stack of frames that keeps each frame's memory when it is popped: push/pop allocate nothing once the
/// stack has been as deep before, and a frame keeps its address while it is pushed.
template <class Frame>
class FrameStack {
public:
    /// Makes sure the next `n` push() calls cannot throw. May allocate.
    void reserve_next(std::size_t n = 1) {
        while (size_ + n > frames_.size()) frames_.push_back(std::make_unique<Frame>());
    }
    /// Pushes a frame and returns it, with the field values the previous user left (the caller sets
    /// every field). Call reserve_next() first.
    Frame& push() noexcept { return *frames_[size_++]; }
    void pop() noexcept { --size_; }
    Frame* top() const noexcept { return size_ == 0 ? nullptr : frames_[size_ - 1].get(); }
    Frame& at(std::size_t i) const noexcept { return *frames_[i]; }
    std::size_t size() const noexcept { return size_; }

private:
    std::vector<std::unique_ptr<Frame>> frames_;
    std::size_t size_ = 0;
};

/// "<AppContext 0x...>": how error messages name a context.
inline std::string describe(const char* kind, const void* address) {
    char text[96];
    std::snprintf(text, sizeof text, "<%s %p>", kind, address);
    return text;
}

/// True when `app` has teardown callbacks of one kind.
template <class App>
inline bool has_teardown(const App& app, bool request_callbacks) noexcept {
    if constexpr (std::is_base_of_v<AppHooks, App>) {
        const AppHooks& hooks = app;
        return request_callbacks ? !hooks.teardown_request_callbacks().empty()
                                 : !hooks.teardown_appcontext_callbacks().empty();
    } else {
        (void)app, (void)request_callbacks;
        return false;
    }
}

/// The exceptions teardown callbacks threw during one pop, first first. Collecting them never allocates
/// for the first `inline_capacity` (teardown runs in noexcept paths, where an allocation failure would
/// end the process); more are kept in a vector when memory allows, and counted as lost when not.
class TeardownErrors {
public:
    static constexpr std::size_t inline_capacity = 8;

    void add(std::exception_ptr error) noexcept {
        if (size_ < inline_capacity) {
            first_[size_++] = std::move(error);
            return;
        }
        try {
            more_.push_back(std::move(error));
            ++size_;
        } catch (...) {
            ++lost_;  // out of memory: counted, reported with the others
        }
    }
    bool empty() const noexcept { return size_ == 0 && lost_ == 0; }
    std::size_t size() const noexcept { return size_; }
    /// How many could not be kept for lack of memory.
    std::size_t lost() const noexcept { return lost_; }
    const std::exception_ptr& operator[](std::size_t i) const noexcept {
        return i < inline_capacity ? first_[i] : more_[i - inline_capacity];
    }
    /// Every kept exception, as a vector. Allocates.
    std::vector<std::exception_ptr> to_vector() const {
        std::vector<std::exception_ptr> out;
        out.reserve(size_);
        for (std::size_t i = 0; i < size_; ++i) out.push_back((*this)[i]);
        return out;
    }

private:
    std::exception_ptr first_[inline_capacity];
    std::vector<std::exception_ptr> more_;
    std::size_t size_ = 0;
    std::size_t lost_ = 0;
};

/// Calls every teardown callback of `app` of one kind in reverse registration order, each with `error`,
/// collecting what they throw into `errors`. Does nothing for an App that does not derive from AppHooks.
template <class App>
inline void run_teardown(App& app, bool request_callbacks, const std::exception_ptr& error,
                         TeardownErrors& errors) noexcept {
    if constexpr (std::is_base_of_v<AppHooks, App>) {
        const AppHooks& hooks = app;
        const auto& callbacks =
            request_callbacks ? hooks.teardown_request_callbacks() : hooks.teardown_appcontext_callbacks();
        if (callbacks.empty()) return;  // the common case; keeps the pop path short
        // Marks the callbacks as running on this thread: registering more now throws (see AppHooks).
        const ScopedMark running(MarkKind::running_hooks, &hooks);
        for (std::size_t i = callbacks.size(); i-- > 0;) {
            try {
                callbacks[i](error);
            } catch (...) {
                errors.add(std::current_exception());
            }
        }
    } else {
        (void)app, (void)request_callbacks, (void)error, (void)errors;
    }
}

/// The what() of an exception_ptr's exception, or a placeholder for a non-standard one.
inline std::string message_of(const std::exception_ptr& error) {
    try {
        std::rethrow_exception(error);
    } catch (const std::exception& e) {
        return e.what();
    } catch (...) {
        return "(an exception not derived from std::exception)";
    }
}

/// Throws what teardown collected: the one exception itself, or a teardown_error listing them all.
[[noreturn]] inline void throw_teardown_errors(const TeardownErrors& errors) {
    if (errors.size() == 1 && errors.lost() == 0) std::rethrow_exception(errors[0]);
    std::string message = "ctxlocal: " + std::to_string(errors.size() + errors.lost()) +
                          " teardown callbacks threw (the context was popped and every callback ran): ";
    for (std::size_t i = 0; i < errors.size(); ++i) {
        message += (i == 0 ? "" : "; ") + message_of(errors[i]);
    }
    if (errors.lost() != 0) message += "; " + std::to_string(errors.lost()) + " more lost (out of memory)";
    throw teardown_error(message, errors.to_vector());
}

}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
