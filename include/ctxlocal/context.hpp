// Flask's application and request contexts in C++: current_app, request, g.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "app_hooks.hpp"
#include "config.hpp"
#include "detail/frames.hpp"
#include "errors.hpp"
#include "local.hpp"
#include "namespace.hpp"
#include "proxy.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {

/// Flask's context model for one choice of application, request and `g` types. A framework picks its
/// types once and gets the contexts and the globals that read them:
///
///     struct MyApp : ctxlocal::AppHooks { std::string name; };
///     struct MyRequest { std::string path; };
///     using web = ctxlocal::Contexts<MyApp, MyRequest>;
///
///     std::string whoami() { return web::current_app->name + " " + web::request->path; }
///
///     web::handle(app, MyRequest{"/"}, [] {        // binds the request for this thread, runs, unbinds
///         web::g->set("user", 7);
///         return whoami();
///     });
///
/// Each thread has two context stacks, an application stack and a request stack. Pushing a
/// RequestContext reuses the active application context when it is for the same App object; otherwise it
/// pushes an implicit application context (with a fresh, empty `g`) that is popped with it.
///
/// Popping a context for the last time on a thread runs teardown: first the App's `teardown_request`
/// callbacks in reverse order (the request still bound), then the request is unbound, then the implicit
/// application context runs the `teardown_appcontext` callbacks in reverse order (`has_request_context()`
/// false, `current_app` and `g` still readable), and is popped, destroying its `g`. For request callbacks
/// r1, r2 and app callbacks a1, a2 the order is r2, r1, a2, a1. Every callback runs even when an earlier
/// one throws; the context is popped regardless; then the one exception is rethrown, or, when several
/// callbacks threw, a teardown_error lists them all.
///
/// Misuse changes nothing and throws context_error: popping a context that is not the active one (the
/// newest pushed on this thread), that is not pushed on this thread, or when none is active.
///
/// Thread-safety: contexts are immutable once built; every thread keeps its own stacks, so one context
/// object may be pushed on several threads at once. Push/pop allocate nothing once a thread's stacks have
/// been as deep before. A thread that exits with contexts still pushed destroys them without teardown;
/// `handle()` never leaves any behind.
template <class App, class Request, class G = Namespace>
class CTXLOCAL_EXPORT Contexts {
    static_assert(std::is_nothrow_default_constructible_v<G>,
                  "ctxlocal::Contexts: G must be nothrow default-constructible (g is made on first use)");

public:
    class AppContext;
    class RequestContext;

    /// The message of the unbound_error thrown by `current_app` and `g` with no application context.
    static constexpr const char* outside_app_context_message =
        "Working outside of application context. Code that needs the current application ran where none is "
        "active. Push one around it, e.g. `web::AppContext ctx{app}; auto guard = ctx.scope();` or "
        "`ctx.run(f)`, or serve the request through `web::handle(app, request, handler)`, which pushes one.";
    /// The message of the unbound_error thrown by `request` with no request context.
    static constexpr const char* outside_request_context_message =
        "Working outside of request context. Code that needs data from the current request ran where no "
        "request is bound. Bind one with `web::RequestContext ctx{app, request}; auto guard = ctx.scope();` "
        "or `ctx.run(f)`, or serve requests through `web::handle(app, request, handler)`.";

private:
    struct AppFrame {
        const AppContext* ctx;  // null for an implicit application context
        App* app;
        const RequestContext* implicit_for;  // the request context that pushed it implicitly
        AppFrame* g_home;                    // the frame whose g this one uses
        std::optional<G> g;                  // a Namespace is kept, emptied, for the frame's next use
        unsigned depth;                      // 1 + how many times ctx is pushed below this frame
        std::uint64_t seq;                   // push order across both stacks
        bool closing;                        // teardown running
    };
    struct RequestFrame {
        const RequestContext* ctx;
        Request* request;
        AppFrame* app_frame;
        bool pushed_app;
        unsigned depth;
        std::uint64_t seq;
        bool closing;
    };
    struct State {
        App* app = nullptr;          // what current_app reads: the top application frame's app
        Request* request = nullptr;  // what request reads: the top request frame's request
        detail::FrameStack<AppFrame> apps;
        detail::FrameStack<RequestFrame> requests;
        std::uint64_t next_seq = 0;

        State() noexcept { fast_state_ = this; }
        ~State() {
            if (fast_state_ == this) fast_state_ = nullptr;
        }
        State(const State&) = delete;
        State& operator=(const State&) = delete;
    };

    /// Owns each thread's State: destroyed at thread exit like any Local value, kept by fork's child.
    /// The Local is never destroyed (only the destroying thread's State is, at static destruction): other
    /// threads may still be serving requests then, through their cached fast_state_ pointers.
    struct StateOwner {
        union {
            Local<State> local;
        };
        constexpr StateOwner() noexcept : local() {}
        ~StateOwner() { local.reset(); }
        StateOwner(const StateOwner&) = delete;
        StateOwner& operator=(const StateOwner&) = delete;
    };
    static inline StateOwner state_owner_;
    static inline Local<State>& state_ = state_owner_.local;
    /// The calling thread's State (what state_.get() returns), cached in a plain thread_local so that
    /// reading `request`, `current_app` and `g` is one thread-local load and a null check. Set by State's
    /// constructor, cleared by its destructor.
    static inline thread_local State* fast_state_ = nullptr;

    /// The calling thread's State, or null.
    static State* current_state() noexcept { return fast_state_; }
    static inline std::atomic<void (*)(const Incident&)> incident_handler_{nullptr};

    static App* current_app_pointer() noexcept {
        const State* s = current_state();
        return s == nullptr ? nullptr : s->app;
    }
    static Request* current_request_pointer() noexcept {
        const State* s = current_state();
        return s == nullptr ? nullptr : s->request;
    }
    static G* current_g() noexcept {
        State* s = current_state();
        AppFrame* f = s == nullptr ? nullptr : s->apps.top();
        if (f == nullptr) return nullptr;
        AppFrame* home = f->g_home;
        if (CTXLOCAL_UNLIKELY(!home->g)) home->g.emplace();
        return &*home->g;
    }

public:
    /// The application of the active application context. Throws unbound_error
    /// (outside_app_context_message) when none is active.
    static constexpr LocalProxy<App> current_app{&Contexts::current_app_pointer, outside_app_context_message};
    /// The request of the active request context. Throws unbound_error (outside_request_context_message)
    /// when none is active. `request->field` is a thread-local read and two loads.
    static constexpr LocalProxy<Request> request{&Contexts::current_request_pointer,
                                                 outside_request_context_message};
    /// The `g` of the active application context, made (empty) on first use, destroyed when that
    /// application context is popped. Throws unbound_error (outside_app_context_message) when none is active.
    static constexpr LocalProxy<G> g{&Contexts::current_g, outside_app_context_message};

    /// True when the calling thread has an application context. Never allocates.
    static bool has_app_context() noexcept { return current_app.get() != nullptr; }
    /// True when the calling thread has a request context. Never allocates.
    static bool has_request_context() noexcept { return request.get() != nullptr; }

    /// How many application contexts (explicit and implicit) the calling thread has pushed.
    static std::size_t app_context_depth() noexcept {
        const State* s = current_state();
        return s == nullptr ? 0 : s->apps.size();
    }
    /// How many request contexts the calling thread has pushed.
    static std::size_t request_context_depth() noexcept {
        const State* s = current_state();
        return s == nullptr ? 0 : s->requests.size();
    }

    /// Sets the function that receives incidents (see Incident); null restores the default, which prints
    /// them to stderr. The handler runs on the thread where the incident happened and must not throw.
    /// Thread-safe.
    static void set_incident_handler(void (*handler)(const Incident&)) noexcept {
        incident_handler_.store(handler, std::memory_order_release);
    }

private:
    /// Shared by AppContext and RequestContext: the RAII guard and run().
    template <class Context>
    class Operations {
    public:
        /// Pushes the context; returns a guard that pops it when it goes out of scope. When the scope is
        /// left by an exception, teardown still runs (with a null exception_ptr: a destructor cannot
        /// see the exception in flight — use run() to hand it to teardown) and teardown errors go to the
        /// incident handler; otherwise the guard's destructor throws what pop() throws.
        [[nodiscard]] auto scope() const {
            self().push();
            return Guard(self());
        }

        /// Pushes the context, calls `f()`, pops, and returns what `f` returned. When `f` throws, teardown
        /// gets that exception, which is then rethrown (teardown errors go to the incident handler).
        template <class F>
        std::invoke_result_t<F&> run(F&& f) const {
            using R = std::invoke_result_t<F&>;
            self().push();
            if constexpr (std::is_void_v<R>) {
                try {
                    f();
                } catch (...) {
                    self().pop_quietly(std::current_exception());
                    throw;
                }
                self().pop();
            } else {
                std::optional<detail::Returned<R>> out;
                try {
                    out.emplace(f);
                } catch (...) {
                    self().pop_quietly(std::current_exception());
                    throw;
                }
                self().pop();
                return std::forward<R>(out->value);
            }
        }

        class Guard {
        public:
            explicit Guard(const Context& ctx) noexcept : ctx_(ctx), uncaught_(std::uncaught_exceptions()) {}
            Guard(const Guard&) = delete;
            Guard& operator=(const Guard&) = delete;
            ~Guard() noexcept(false) {
                if (std::uncaught_exceptions() > uncaught_) {
                    ctx_.pop_quietly(nullptr);
                } else {
                    ctx_.pop();
                }
            }

        private:
            const Context& ctx_;
            int uncaught_;
        };

    protected:
        void pop_quietly(const std::exception_ptr& error) const noexcept {
            try {
                self().pop(error);
            } catch (...) {
                report(Incident::Kind::suppressed_teardown_error,
                       "popping " + self().describe() + " while another exception propagated failed: " +
                           detail::message_of(std::current_exception()),
                       std::current_exception());
            }
        }

    private:
        const Context& self() const noexcept { return static_cast<const Context&>(*this); }
    };

public:
    /// An application context for one App object: binds `current_app` and `g` while pushed.
    ///
    ///     web::AppContext ctx{app};
    ///     ctx.run([] { web::g->set("db", open_db()); work(); });
    ///
    /// Not copyable or movable (the stacks refer to it by address): keep it alive while it is pushed.
    class AppContext : public Operations<AppContext> {
    public:
        explicit AppContext(App& app) noexcept : app_(&app) {}
        /// A context must be popped before it is destroyed. If it is still pushed on the destroying
        /// thread, that thread pops it there and then (and everything pushed after it), newest first, with
        /// teardown, reporting each as a leaked_context incident: the stacks never refer to a dead context.
        /// (Destroying a context that another thread still has pushed is a use-after-free bug in the
        /// caller, as with any object one thread destroys while another uses it.)
        ~AppContext() { release_destroyed(this); }
        AppContext(const AppContext&) = delete;
        AppContext& operator=(const AppContext&) = delete;

        /// The application.
        App& app() const noexcept { return *app_; }

        /// Pushes this context on the calling thread, binding `current_app` and a `g` (empty until first
        /// used; pushing the same context again on this thread shares its `g`). May allocate on a
        /// thread's first pushes; never in steady state. If it throws, nothing changed.
        void push() const {
            State& s = state();
            s.apps.reserve_next();
            const AppFrame* previous = find_app(s, this);
            AppFrame& f = s.apps.push();
            f.ctx = this;
            f.app = app_;
            f.implicit_for = nullptr;
            f.g_home = previous == nullptr ? &f : previous->g_home;
            f.depth = previous == nullptr ? 1 : previous->depth + 1;
            f.seq = ++s.next_seq;
            f.closing = false;
            sync(s);
        }

        /// Pops this context from the calling thread. On its last pop there, runs the App's
        /// teardown_appcontext callbacks with `error` (current_app and g still readable), then destroys
        /// its g. Throws context_error, changing nothing, when this context is not the active one; after
        /// popping, rethrows teardown errors (see Contexts).
        void pop(std::exception_ptr error = nullptr) const {
            State* s = current_state();
            check_can_pop(s, s == nullptr ? nullptr : s->apps.top(), this);
            AppFrame& f = *s->apps.top();
            if (CTXLOCAL_LIKELY(f.depth != 1 || !detail::has_teardown(*f.app, false))) {
                drop_app_frame(*s);  // nothing to run: the short path
                return;
            }
            std::vector<std::exception_ptr> errors;
            pop_app_frame(*s, error, errors);
            if (!errors.empty()) detail::throw_teardown_errors(std::move(errors));
        }

        /// "<AppContext 0x...>".
        std::string describe() const { return detail::describe("AppContext", this); }

    private:
        friend class Operations<AppContext>;
        App* app_;
    };

    /// A request context: binds `request` (and, through its application context, `current_app` and `g`)
    /// while pushed. Holds the request by shared ownership, so copies made by
    /// copy_current_request_context() keep it alive.
    ///
    ///     web::RequestContext ctx{app, MyRequest{"/"}};
    ///     auto guard = ctx.scope();
    ///     handle_it();   // reads web::request
    ///
    /// Not copyable or movable: keep it alive while it is pushed.
    class RequestContext : public Operations<RequestContext> {
    public:
        /// Takes the request by value. Allocates once (the shared request).
        RequestContext(App& app, Request request)
            : app_(&app), request_(std::make_shared<Request>(std::move(request))) {}
        /// Shares an existing request. Throws context_error when it is null.
        RequestContext(App& app, std::shared_ptr<Request> request)
            : app_(&app), request_(std::move(request)) {
            if (!request_)
                throw context_error("ctxlocal: RequestContext needs a request, got a null shared_ptr");
        }
        /// See ~AppContext(): a request context still pushed on the destroying thread is popped there.
        ~RequestContext() { release_destroyed(this); }
        RequestContext(const RequestContext&) = delete;
        RequestContext& operator=(const RequestContext&) = delete;

        /// The application.
        App& app() const noexcept { return *app_; }
        /// The request.
        Request& request() const noexcept { return *request_; }
        /// The request, shared.
        const std::shared_ptr<Request>& shared_request() const noexcept { return request_; }

        /// Pushes this context on the calling thread, first pushing an implicit application context unless
        /// the active one is for the same App object. May allocate on a thread's first pushes; never in
        /// steady state. If it throws, nothing changed.
        void push() const { push_on(state()); }

        /// Pops this context from the calling thread. On its last pop there, runs the App's
        /// teardown_request callbacks with `error` (request still bound), unbinds the request, then pops
        /// the implicit application context, if this context pushed one (see AppContext::pop). Throws
        /// context_error, changing nothing, when this context is not the active one; after popping,
        /// rethrows teardown errors (see Contexts).
        void pop(std::exception_ptr error = nullptr) const {
            State* s = current_state();
            check_can_pop(s, s == nullptr ? nullptr : s->requests.top(), this);
            const RequestFrame& r = *s->requests.top();
            if (CTXLOCAL_LIKELY(r.depth != 1 || !detail::has_teardown(*r.app_frame->app, true)) &&
                CTXLOCAL_LIKELY(!r.pushed_app || !detail::has_teardown(*r.app_frame->app, false))) {
                const bool pop_app = r.pushed_app;  // nothing to run: the short path
                s->requests.pop();
                s->request = s->requests.top() == nullptr ? nullptr : s->requests.top()->request;
                if (pop_app) drop_app_frame(*s);
                return;
            }
            std::vector<std::exception_ptr> errors;
            pop_request_frame(*s, error, errors);
            if (!errors.empty()) detail::throw_teardown_errors(std::move(errors));
        }

        /// "<RequestContext 0x...>".
        std::string describe() const { return detail::describe("RequestContext", this); }

    private:
        friend class Contexts;
        friend class Operations<RequestContext>;

        RequestContext(App& app, std::shared_ptr<Request> request, bool fresh_app)
            : app_(&app), request_(std::move(request)), fresh_app_(fresh_app) {}

        void push_on(State& s) const {
            s.apps.reserve_next();
            s.requests.reserve_next();
            const RequestFrame* previous = find_request(s, this);
            AppFrame* app_frame = s.apps.top();
            const bool push_app = fresh_app_ || app_frame == nullptr || app_frame->app != app_;
            if (push_app) {
                AppFrame& f = s.apps.push();
                f.ctx = nullptr;
                f.app = app_;
                f.implicit_for = this;
                f.g_home = &f;
                f.depth = 1;
                f.seq = ++s.next_seq;
                f.closing = false;
                app_frame = &f;
            }
            RequestFrame& r = s.requests.push();
            r.ctx = this;
            r.request = request_.get();
            r.app_frame = app_frame;
            r.pushed_app = push_app;
            r.depth = previous == nullptr ? 1 : previous->depth + 1;
            r.seq = ++s.next_seq;
            r.closing = false;
            sync(s);
        }

        App* app_;
        std::shared_ptr<Request> request_;
        bool fresh_app_ = false;
    };

    /// Returns a callable that, on whichever thread calls it, runs `f(args...)` inside its own copy of the
    /// calling thread's active request context (the same request object; a fresh implicit application
    /// context, so an empty `g`), with teardown, and returns f's result. The callable may be called from
    /// many threads at once: each call pushes its own copy. `f` is called as const.
    /// Inside `handle()` given a Request by value (not a shared_ptr), that request lives only until
    /// handle() returns, so the callable holds a copy of it, made here (Request must then be copyable).
    /// Throws context_error when no request context is active, or when such a request cannot be copied.
    template <class F>
    static auto copy_current_request_context(F f) {
        State* s = current_state();
        const RequestFrame* top = s == nullptr ? nullptr : s->requests.top();
        if (top == nullptr) {
            throw context_error(
                "copy_current_request_context(): Working outside of request context. Call it while a request "
                "is bound (inside web::handle(...) or a pushed web::RequestContext), so that there is a "
                "request to copy.");
        }
        // A pushed context is alive (its destructor pops it on its thread), so top->ctx may be read here.
        return [app = top->app_frame->app, request = shareable(top->ctx->request_),
                f = std::move(f)](auto&&... args) -> decltype(auto) {
            const RequestContext copy(*app, request, true);
            return copy.run([&]() -> decltype(auto) { return f(std::forward<decltype(args)>(args)...); });
        };
    }

    /// What handle() returns for a handler of type H: the result of `handler()`, or of
    /// `handler(Request&)` when it takes the request.
    template <class H>
    using handler_result_t = typename std::conditional_t<std::is_invocable_v<H&>, std::invoke_result<H&>,
                                                         std::invoke_result<H&, Request&>>::type;

    /// The one call for servers: runs `handler()` (or `handler(Request&)`) inside a fresh request
    /// context for `request` and returns its result. `request` is a Request or a std::shared_ptr<Request>:
    /// an rvalue Request is bound where it is (not moved, nothing allocated; handler changes stay in it),
    /// an lvalue Request is copied (no heap allocation of its own), a shared_ptr is shared.
    /// Afterwards the calling thread's stacks are empty, even when the handler threw or left contexts of
    /// its own pushed: those are popped, newest first, with their teardown, and each is reported to the
    /// incident handler as leaked_context. Contexts found pushed when handle() starts are popped and
    /// reported the same way, so every request starts clean. When the handler throws, teardown gets that
    /// exception, which is then rethrown; otherwise teardown errors are thrown after everything is popped.
    /// Called from a teardown callback, it throws context_error and changes nothing.
    template <class R, class H>
    static handler_result_t<H> handle(App& app, R&& request, H&& handler) {
        State& s = state();
        if (s.apps.size() + s.requests.size() != 0) {
            refuse_handle_in_teardown(s);
            std::vector<std::exception_ptr> errors;
            unwind(s, nullptr, nullptr, errors, "found pushed when handle() started a new request");
            report_all(errors, "while handle() popped contexts found pushed at its start");
        }
        if constexpr (std::is_same_v<R, Request>) {
            // A Request handed over by rvalue: bound where it is, neither moved nor allocated (it lives
            // until handle() returns; the caller gave up its state).
            const RequestContext ctx(app, borrow(&request), false);
            return serve(s, ctx, handler);
        } else if constexpr (std::is_same_v<std::remove_cv_t<std::remove_reference_t<R>>, Request>) {
            Request copy(request);  // an lvalue or const Request: copied, as a by-value parameter would be
            const RequestContext ctx(app, borrow(&copy), false);
            return serve(s, ctx, handler);
        } else {
            const RequestContext ctx(app, std::forward<R>(request));
            return serve(s, ctx, handler);
        }
    }

private:
    /// A non-owning, allocation-free shared_ptr to a request that handle() keeps alive itself (the
    /// aliasing constructor with an empty owner: use_count() is 0). copy_current_request_context() copies
    /// such a request instead of sharing it.
    static std::shared_ptr<Request> borrow(Request* request) noexcept {
        return std::shared_ptr<Request>(std::shared_ptr<Request>(), request);
    }

    /// The request for a copy of a request context: the same object when it is shared, a copy when
    /// handle() borrowed it (it dies when handle() returns, the copy may run later).
    static std::shared_ptr<Request> shareable(const std::shared_ptr<Request>& request) {
        if (request.use_count() != 0) return request;
        if constexpr (std::is_copy_constructible_v<Request>) {
            return std::make_shared<Request>(*request);
        } else {
            throw context_error(
                "copy_current_request_context(): the request was given to web::handle() by value and the "
                "Request type cannot be copied; give handle() a std::shared_ptr<Request> to share it");
        }
    }

    /// handle() once its request context is made: push, call, pop everything.
    template <class H>
    static handler_result_t<H> serve(State& s, const RequestContext& ctx, H& handler) {
        ctx.push_on(s);
        auto call = [&]() -> decltype(auto) {
            if constexpr (std::is_invocable_v<H&>) {
                return handler();
            } else {
                return handler(ctx.request());
            }
        };
        using Result = handler_result_t<H>;
        std::vector<std::exception_ptr> errors;
        std::optional<detail::Returned<Result>> out;
        try {
            out.emplace(call);
        } catch (...) {
            const std::exception_ptr failure = std::current_exception();
            unwind(s, &ctx, failure, errors, "left pushed by the handler");
            report_all(errors, "while another exception propagated");
            throw;
        }
        unwind(s, &ctx, nullptr, errors, "left pushed by the handler");
        if (!errors.empty()) detail::throw_teardown_errors(std::move(errors));
        if constexpr (!std::is_void_v<Result>) return std::forward<Result>(out->value);
    }

    static State& state() {
        if (State* s = current_state()) return *s;
        return state_.value();
    }

    /// Points the fast-path Locals at the current tops.
    static void sync(State& s) noexcept {
        const AppFrame* a = s.apps.top();
        const RequestFrame* r = s.requests.top();
        s.app = a == nullptr ? nullptr : a->app;
        s.request = r == nullptr ? nullptr : r->request;
    }

    static const AppFrame* find_app(const State& s, const AppContext* ctx) noexcept {
        for (std::size_t i = s.apps.size(); i-- > 0;) {
            if (s.apps.at(i).ctx == ctx) return &s.apps.at(i);
        }
        return nullptr;
    }
    static const AppFrame* find_app(const State* s, const AppContext* ctx) noexcept {
        return s == nullptr ? nullptr : find_app(*s, ctx);
    }
    static const RequestFrame* find_request(const State& s, const RequestContext* ctx) noexcept {
        for (std::size_t i = s.requests.size(); i-- > 0;) {
            if (s.requests.at(i).ctx == ctx) return &s.requests.at(i);
        }
        return nullptr;
    }
    static const RequestFrame* find_request(const State* s, const RequestContext* ctx) noexcept {
        return s == nullptr ? nullptr : find_request(*s, ctx);
    }

    /// True when the newest frame of the thread is a request frame (rather than an application frame).
    static bool newest_is_request(const State& s) noexcept {
        const RequestFrame* r = s.requests.top();
        const AppFrame* a = s.apps.top();
        return r != nullptr && (a == nullptr || r->seq > a->seq);
    }

    // Frames name their contexts by address only: a frame never dereferences its context object.
    static std::string describe_app_frame(const AppFrame& f) {
        if (f.ctx != nullptr) return detail::describe("AppContext", f.ctx);
        return "<implicit AppContext of " + detail::describe("RequestContext", f.implicit_for) + ">";
    }
    static std::string describe_newest(const State& s) {
        return newest_is_request(s) ? detail::describe("RequestContext", s.requests.top()->ctx)
                                    : describe_app_frame(*s.apps.top());
    }

    /// Throws context_error unless `frame` (the newest frame pushed for the context being popped, or null)
    /// is the newest frame on the thread and not already being popped.
    /// The context's name is formatted only on the error paths: a good pop formats nothing, allocates
    /// nothing.
    /// `top` is the top frame of ctx's kind (null when there is none): a pop is allowed when it belongs
    /// to ctx, is the newest frame of the thread, and is not being popped already.
    template <class Frame, class Context>
    static void check_can_pop(const State* s, const Frame* top, const Context* ctx) {
        if (CTXLOCAL_LIKELY(s != nullptr && top != nullptr && top->ctx == ctx && !top->closing &&
                            top->seq == newest_seq(*s))) {
            return;
        }
        refuse_pop(s, ctx);
    }

    template <class Context>
    [[noreturn]] CTXLOCAL_NOINLINE static void refuse_pop(const State* s, const Context* ctx) {
        const auto* frame = [&] {
            if constexpr (std::is_same_v<Context, AppContext>) {
                return find_app(s, ctx);
            } else {
                return find_request(s, ctx);
            }
        }();
        const std::string name = ctx->describe();
        if (s == nullptr || s->apps.size() + s->requests.size() == 0) {
            throw context_error("Cannot pop this context (" + name + "), there is no active context.");
        }
        if (frame == nullptr)
            throw context_error("Cannot pop this context (" + name + "), it is not pushed.");
        if (frame->seq != newest_seq(*s)) {
            throw context_error("Cannot pop this context (" + name + "), it is not the active context (" +
                                describe_newest(*s) + ").");
        }
        throw context_error("Cannot pop this context (" + name +
                            "), it is already being popped (a teardown callback tried to pop it).");
    }

    /// Throws context_error when a frame on the thread is being popped: handle() was called from a
    /// teardown callback, and would pop (and tear down again) the context whose teardown is running.
    CTXLOCAL_NOINLINE static void refuse_handle_in_teardown(const State& s) {
        std::string closing;
        for (std::size_t i = 0; i < s.requests.size() && closing.empty(); ++i) {
            if (s.requests.at(i).closing) closing = detail::describe("RequestContext", s.requests.at(i).ctx);
        }
        for (std::size_t i = 0; i < s.apps.size() && closing.empty(); ++i) {
            if (s.apps.at(i).closing) closing = describe_app_frame(s.apps.at(i));
        }
        if (closing.empty()) return;
        throw context_error("ctxlocal: handle() called from a teardown callback (" + closing +
                            " is being popped); a teardown callback cannot serve a request");
    }

    /// The sequence number of the newest frame on the thread (0 when there is none).
    static std::uint64_t newest_seq(const State& s) noexcept {
        const RequestFrame* r = s.requests.top();
        const AppFrame* a = s.apps.top();
        const std::uint64_t rs = r == nullptr ? 0 : r->seq;
        const std::uint64_t as = a == nullptr ? 0 : a->seq;
        return rs > as ? rs : as;
    }

    /// Called by a context's destructor: pops, newest first and with teardown, every frame on the calling
    /// thread from the newest down to the oldest one pushed for `ctx`, reporting each as leaked.
    template <class Context>
    static void release_destroyed(const Context* ctx) noexcept {
        State* s = current_state();
        if (s == nullptr) return;
        std::uint64_t oldest = 0;
        if constexpr (std::is_same_v<Context, AppContext>) {
            for (std::size_t i = 0; i < s->apps.size() && oldest == 0; ++i) {
                if (s->apps.at(i).ctx == ctx) oldest = s->apps.at(i).seq;
            }
        } else {
            for (std::size_t i = 0; i < s->requests.size() && oldest == 0; ++i) {
                if (s->requests.at(i).ctx == ctx) oldest = s->requests.at(i).seq;
            }
        }
        if (oldest == 0) return;
        std::vector<std::exception_ptr> errors;
        std::string newer_why;  // for the frames pushed after ctx
        try {
            newer_why = "pushed after " + ctx->describe() + ", which was destroyed while still pushed";
        } catch (...) {  // out of memory: a shorter message
        }
        while (newest_seq(*s) >= oldest) {
            const bool request = newest_is_request(*s);
            const void* top_ctx = request ? static_cast<const void*>(s->requests.top()->ctx)
                                          : static_cast<const void*>(s->apps.top()->ctx);
            // A frame that is closing has its own pop() running further up this call stack.
            if (request ? s->requests.top()->closing : s->apps.top()->closing) break;
            report_leak(describe_newest(*s), top_ctx == ctx ? "destroyed while still pushed"
                                             : newer_why.empty()
                                                 ? "pushed after a context destroyed while still pushed"
                                                 : newer_why.c_str());
            if (request) {
                pop_request_frame(*s, nullptr, errors);
            } else {
                pop_app_frame(*s, nullptr, errors);
            }
        }
        report_all(errors, "while a context destroyed while still pushed was popped");
    }

    /// Pops, with teardown, every frame newer than the one with sequence number `seq` (left behind by
    /// teardown callbacks), recording a context_error for each.
    CTXLOCAL_NOINLINE static void pop_newer_than(State& s, std::uint64_t seq,
                                                 std::vector<std::exception_ptr>& errors) noexcept {
        for (;;) {
            const bool request = newest_is_request(s);
            const std::uint64_t newest = request                   ? s.requests.top()->seq
                                         : s.apps.top() != nullptr ? s.apps.top()->seq
                                                                   : 0;
            if (newest <= seq) return;
            try {
                throw context_error("ctxlocal: a teardown callback left " + describe_newest(s) +
                                    " pushed; it was popped");
            } catch (...) {
                errors.push_back(std::current_exception());
            }
            if (request) {
                pop_request_frame(s, nullptr, errors);
            } else {
                pop_app_frame(s, nullptr, errors);
            }
        }
    }

    /// Ends the frame's g: destroys it, or for a Namespace destroys its values and keeps the emptied
    /// Namespace (and its capacity) for the frame's next push, so that a request that uses g allocates
    /// nothing for it in steady state.
    static void release_g(AppFrame& f) noexcept {
        if constexpr (std::is_same_v<G, Namespace>) {
            if (f.g) f.g->clear();
        } else {
            f.g.reset();
        }
    }

    /// Pops the top application frame and destroys its g, without teardown.
    static void drop_app_frame(State& s) noexcept {
        AppFrame& f = *s.apps.top();
        release_g(f);
        s.apps.pop();
        const AppFrame* top = s.apps.top();
        s.app = top == nullptr ? nullptr : top->app;
    }

    /// Pops the top application frame: teardown on its last pop, then the frame and its g.
    static void pop_app_frame(State& s, const std::exception_ptr& error,
                              std::vector<std::exception_ptr>& errors) noexcept {
        AppFrame& f = *s.apps.top();
        if (f.depth == 1) {
            f.closing = true;
            detail::run_teardown(*f.app, false, error, errors);
            if (CTXLOCAL_UNLIKELY(newest_seq(s) > f.seq)) pop_newer_than(s, f.seq, errors);
        }
        release_g(f);
        s.apps.pop();
        sync(s);
    }

    /// Pops the top request frame: request teardown on its last pop, unbinding, then its implicit
    /// application context.
    static void pop_request_frame(State& s, const std::exception_ptr& error,
                                  std::vector<std::exception_ptr>& errors) noexcept {
        RequestFrame& r = *s.requests.top();
        if (r.depth == 1) {
            r.closing = true;
            detail::run_teardown(*r.app_frame->app, true, error, errors);
            if (CTXLOCAL_UNLIKELY(newest_seq(s) > r.seq)) pop_newer_than(s, r.seq, errors);
        }
        const bool pop_app = r.pushed_app;
        s.requests.pop();
        sync(s);
        if (pop_app) pop_app_frame(s, error, errors);
    }

    /// Pops every frame, newest first. `own` (if pushed) gets `error` and is popped silently; every other
    /// frame is reported as leaked_context with `why`.
    static void unwind(State& s, const RequestContext* own, const std::exception_ptr& error,
                       std::vector<std::exception_ptr>& errors, const char* why) noexcept {
        while (s.apps.size() + s.requests.size() != 0) {
            if (newest_is_request(s)) {
                const RequestFrame& r = *s.requests.top();
                if (r.ctx != own || r.depth != 1) report_leak(describe_newest(s), why);
                pop_request_frame(s, error, errors);
            } else {
                report_leak(describe_newest(s), why);
                pop_app_frame(s, error, errors);
            }
        }
    }

    static void report_leak(const std::string& name, const char* why) noexcept {
        try {
            report(Incident::Kind::leaked_context,
                   "ctxlocal: " + name + " was " + why + "; it was popped and its teardown ran", nullptr);
        } catch (...) {
        }
    }

    /// Reports each error as suppressed_teardown_error: "a teardown callback threw <when>: <what>".
    static void report_all(const std::vector<std::exception_ptr>& errors, const char* when) noexcept {
        for (const std::exception_ptr& e : errors) {
            try {
                report(
                    Incident::Kind::suppressed_teardown_error,
                    std::string("ctxlocal: a teardown callback threw ") + when + ": " + detail::message_of(e),
                    e);
            } catch (...) {
            }
        }
    }

    static void report(Incident::Kind kind, std::string message, std::exception_ptr error) noexcept {
        try {
            const Incident incident{kind, std::move(message), std::move(error)};
            if (auto* handler = incident_handler_.load(std::memory_order_acquire)) {
                handler(incident);
            } else {
                std::fprintf(stderr, "%s\n", incident.message.c_str());
            }
        } catch (...) {
        }
    }
};

}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
