// Private machinery behind Contexts<App, Request, G>: the one stack of application and request frames that
// each thread (or Storage) keeps, and every operation on it that is not on the fast path: popping with
// teardown, unwinding to a mark, popping what a destroyed context left, and reporting incidents.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "../config.hpp"
#include "../errors.hpp"
#include "../incident.hpp"
#include "../namespace.hpp"
#include "context_frames.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace detail {

enum class FrameKind : unsigned char { app, request };

/// One pushed context. Application and request frames share one stack, in push order, so that "the active
/// context" is always the top frame and every pop path is the same.
template <class App, class Request, class G>
struct ContextFrame {
    FrameKind kind;
    bool pushed_app;           // request frame: it pushed the implicit application frame right below it
    bool closing;              // teardown running
    bool releasing_g;          // app frame: its g is being destroyed (g reads as unbound meanwhile)
    unsigned depth;            // 1 + how many frames for the same context are below this one
    const void* ctx;           // the AppContext or RequestContext; null for an implicit application frame
    const void* implicit_for;  // implicit app frame: the RequestContext that pushed it
    App* app;                  // the application (of the frame's application context)
    Request* request;          // what `request` reads while this frame is on top (may be null)
    ContextFrame* app_frame;   // the application frame active while this frame is on top
    ContextFrame* g_home;      // app frame: the frame whose g this one uses
    std::optional<G> g;        // app frame: a Namespace is kept, emptied, for the frame's next use
};

/// The stack of one thread or Storage, with what the fast path reads cached in front.
template <class App, class Request, class G>
class ContextState {
public:
    using Frame = ContextFrame<App, Request, G>;

    App* app = nullptr;          // what current_app reads
    Request* request = nullptr;  // what request reads
    Frame* app_top = nullptr;    // the active application frame (for g)
    FrameStack<Frame> frames;
    /// The request context `make_storage` made and pushed, owned by this Storage's state; popped silently
    /// when the Storage is released.
    std::shared_ptr<const void> owned;

    ContextState() = default;
    ContextState(const ContextState&) = delete;
    ContextState& operator=(const ContextState&) = delete;

    /// Points the fast-path fields at the top frame.
    void sync() noexcept {
        const Frame* top = frames.top();
        app_top = top == nullptr ? nullptr : top->app_frame;
        app = app_top == nullptr ? nullptr : app_top->app;
        request = top == nullptr ? nullptr : top->request;
    }

    /// The g of the active application context, made on first use; null when there is no application
    /// context or its g is being destroyed.
    G* g() noexcept {
        Frame* home = app_top == nullptr ? nullptr : app_top->g_home;
        if (home == nullptr || CTXLOCAL_UNLIKELY(home->releasing_g)) return nullptr;
        if (CTXLOCAL_UNLIKELY(!home->g)) home->g.emplace();
        return &*home->g;
    }

    /// The newest frame pushed for `ctx`, or null.
    const Frame* find(const void* ctx) const noexcept {
        for (std::size_t i = frames.size(); i-- > 0;) {
            if (frames.at(i).ctx == ctx) return &frames.at(i);
        }
        return nullptr;
    }

    /// Pushes an application frame (`ctx` null: implicit, for `implicit_for`). Call frames.reserve_next()
    /// first; never throws.
    Frame& push_app(const void* ctx, App* a, const void* implicit_for) noexcept {
        const Frame* previous = ctx == nullptr ? nullptr : find(ctx);
        // An application context pushed inside a request leaves the request bound.
        Frame& f = push_frame(FrameKind::app, ctx, previous, a, request, false);
        f.implicit_for = implicit_for;
        f.app_frame = &f;
        f.g_home = previous == nullptr ? &f : previous->g_home;
        sync();
        return f;
    }

    /// Pushes a request frame over the active application frame. Call frames.reserve_next() first.
    void push_request(const void* ctx, Request* r, bool pushed_app) noexcept {
        Frame* below_app = app_top;
        Frame& f = push_frame(FrameKind::request, ctx, find(ctx), below_app->app, r, pushed_app);
        f.app_frame = below_app;
        sync();
    }

    /// True when popping the top frame runs no callback (the short path).
    bool top_pops_quietly() const noexcept {
        const Frame& f = *frames.top();
        if (f.kind == FrameKind::app) return f.depth != 1 || !has_teardown(*f.app, false);
        return (f.depth != 1 || !has_teardown(*f.app, true)) &&
               (!f.pushed_app || !has_teardown(*f.app, false));
    }

    /// Pops the top frame without teardown (see top_pops_quietly), with its implicit application frame.
    void drop_top() noexcept {
        Frame& f = *frames.top();
        const bool pop_app = f.pushed_app;
        if (f.kind == FrameKind::app) release_g(f);
        frames.pop();
        sync();
        if (pop_app) {
            release_g(*frames.top());
            frames.pop();
            sync();
        }
    }

    /// Pops the top frame: its teardown on its last pop (then whatever teardown left pushed above it),
    /// then the frame (an application frame's g destroyed), then a request frame's implicit application
    /// frame the same way.
    void pop_top(const std::exception_ptr& error, TeardownErrors& errors) noexcept {
        Frame& f = *frames.top();
        const bool is_request = f.kind == FrameKind::request;
        if (f.depth == 1) {
            f.closing = true;
            run_teardown(*f.app, is_request, error, errors);
            if (CTXLOCAL_UNLIKELY(frames.top() != &f)) pop_above(f, errors);
        }
        if (!is_request) release_g(f);
        const bool pop_app = is_request && f.pushed_app;
        frames.pop();
        sync();
        if (pop_app) pop_top(error, errors);
    }

    /// Pops every frame above index `mark`, newest first, with teardown. The frame for `own` (pushed at
    /// `mark`) gets `error` and is popped silently; every other is reported as leaked_context with `why`.
    /// Stops at a frame whose own pop is running further up the call stack.
    void unwind(std::size_t mark, const void* own, const std::exception_ptr& error, TeardownErrors& errors,
                const char* why) noexcept {
        while (frames.size() > mark && !frames.top()->closing) {
            const Frame& f = *frames.top();
            if (f.kind == FrameKind::app || f.ctx != own || f.depth != 1) report_leak(*frames.top(), why);
            pop_top(error, errors);
        }
    }

    /// For a context being destroyed: pops, newest first and with teardown, every frame from the top down
    /// to the oldest one pushed for `ctx`, reporting each as leaked.
    void release_destroyed(const void* ctx, const char* kind) noexcept {
        std::size_t oldest = frames.size();
        for (std::size_t i = 0; i < frames.size() && oldest == frames.size(); ++i) {
            if (frames.at(i).ctx == ctx) oldest = i;
        }
        if (oldest == frames.size()) return;
        std::string newer;  // why the frames pushed after it are popped
        try {
            newer = "pushed after " + describe(kind, ctx) + ", which was destroyed while still pushed";
        } catch (...) {  // out of memory: a shorter message
        }
        TeardownErrors errors;
        while (frames.size() > oldest && !frames.top()->closing) {
            const bool own = frames.top()->ctx == ctx;
            report_leak(*frames.top(), own             ? "destroyed while still pushed"
                                       : newer.empty() ? "pushed after a context destroyed while still pushed"
                                                       : newer.c_str());
            pop_top(nullptr, errors);
        }
        report_all(errors, "while a context destroyed while still pushed was popped");
    }

    /// "<RequestContext 0x...>", "<AppContext 0x...>" or "<implicit AppContext of <RequestContext 0x...>>".
    static std::string describe_frame(const Frame& f) {
        if (f.kind == FrameKind::request) return describe("RequestContext", f.ctx);
        if (f.ctx != nullptr) return describe("AppContext", f.ctx);
        return "<implicit AppContext of " + describe("RequestContext", f.implicit_for) + ">";
    }
    std::string describe_top() const { return describe_frame(*frames.top()); }

    /// The description of a frame being popped (the closing one), or an empty string.
    std::string describe_closing() const {
        for (std::size_t i = 0; i < frames.size(); ++i) {
            if (frames.at(i).closing) return describe_frame(frames.at(i));
        }
        return {};
    }

    static void set_incident_handler(void (*handler)(const Incident&)) noexcept {
        incident_handler_.store(handler, std::memory_order_release);
    }

    static void report(Incident::Kind kind, std::string message, std::exception_ptr error) noexcept {
        try {
            const Incident incident{kind, std::move(message), std::move(error)};
            if (auto* handler = incident_handler_.load(std::memory_order_acquire)) {
                handler(incident);
            } else {
                std::fprintf(stderr, "%s\n", incident.message.c_str());
            }
        } catch (...) {  // out of memory making the message: the incident is dropped
        }
    }

    /// Reports `f` as leaked_context (dropped when there is no memory for the message).
    static void report_leak(const Frame& f, const char* why) noexcept {
        try {
            report(Incident::Kind::leaked_context,
                   "ctxlocal: " + describe_frame(f) + " was " + why + "; it was popped and its teardown ran",
                   nullptr);
        } catch (...) {
        }
    }

    /// Reports each error as suppressed_teardown_error: "a teardown callback threw <when>: <what>".
    static void report_all(const TeardownErrors& errors, const char* when) noexcept {
        for (std::size_t i = 0; i < errors.size(); ++i) {
            try {
                report(
                    Incident::Kind::suppressed_teardown_error,
                    std::string("ctxlocal: a teardown callback threw ") + when + ": " + message_of(errors[i]),
                    errors[i]);
            } catch (...) {
            }
        }
        if (errors.lost() == 0) return;
        try {
            report(Incident::Kind::suppressed_teardown_error,
                   "ctxlocal: teardown callbacks threw, and their exceptions were lost (out of memory)",
                   nullptr);
        } catch (...) {
        }
    }

private:
    static inline std::atomic<void (*)(const Incident&)> incident_handler_{nullptr};

    /// The fields every pushed frame sets; the caller sets the application-frame links.
    Frame& push_frame(FrameKind kind, const void* ctx, const Frame* previous, App* a, Request* r,
                      bool pushed_app) noexcept {
        Frame& f = frames.push();
        f.kind = kind;
        f.pushed_app = pushed_app;
        f.closing = false;
        f.releasing_g = false;
        f.depth = previous == nullptr ? 1 : previous->depth + 1;
        f.ctx = ctx;
        f.implicit_for = nullptr;
        f.app = a;
        f.request = r;
        f.app_frame = nullptr;
        f.g_home = nullptr;
        return f;
    }

    /// Ends an application frame's g: destroys it, or for a Namespace destroys its values and keeps the
    /// emptied Namespace (and its capacity) for the frame's next push. While its values are destroyed, g
    /// reads as unbound: a destructor that reads g cannot re-create it, nor change what is being cleared.
    void release_g(Frame& f) noexcept {
        if (!f.g) return;
        f.releasing_g = true;
        if constexpr (std::is_same_v<G, Namespace>) {
            f.g->clear();
        } else {
            f.g.reset();
        }
        f.releasing_g = false;
        if (CTXLOCAL_UNLIKELY(frames.top() != &f)) pop_left_by_g(f);
    }

    /// A destructor of a value in g left contexts pushed above its frame: they are popped (leaked).
    CTXLOCAL_NOINLINE void pop_left_by_g(const Frame& f) noexcept {
        TeardownErrors errors;
        while (frames.top() != &f) {
            report_leak(*frames.top(), "left pushed by the destructor of a value in g");
            pop_top(nullptr, errors);
        }
        report_all(errors, "while contexts left pushed by a destructor of a value in g were popped");
    }

    /// Pops, with teardown, every frame above `f` (left pushed by f's teardown callbacks), recording a
    /// context_error for each.
    CTXLOCAL_NOINLINE void pop_above(const Frame& f, TeardownErrors& errors) noexcept {
        while (frames.top() != &f) {
            try {
                throw context_error("ctxlocal: a teardown callback left " + describe_top() +
                                    " pushed; it was popped");
            } catch (...) {
                errors.add(std::current_exception());
            }
            pop_top(nullptr, errors);
        }
    }
};

}  // namespace detail
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
