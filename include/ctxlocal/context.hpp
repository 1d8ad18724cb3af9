// Flask's application and request contexts in C++: current_app, request, g.
#pragma once

#include <cstddef>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "app_hooks.hpp"
#include "config.hpp"
#include "detail/by_value.hpp"
#include "detail/context_frames.hpp"
#include "detail/context_state.hpp"
#include "errors.hpp"
#include "incident.hpp"
#include "local.hpp"
#include "namespace.hpp"
#include "proxy.hpp"
#include "storage.hpp"

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
///     web::handle(app, MyRequest{"/"}, [] {        // binds the request, runs, unbinds
///         web::g->set("user", 7);
///         return whoami();
///     });
///
/// Each thread has one stack of contexts, and so has each Storage (storage.hpp): while a Storage is entered,
/// the contexts are the Storage's. Pushing a RequestContext reuses the active application context when it
/// is for the same App object; otherwise it pushes an implicit application context (with a fresh, empty
/// `g`) that is popped with it.
///
/// Popping a context for the last time on a stack runs teardown: first the App's `teardown_request`
/// callbacks in reverse order (the request still bound), then the request is unbound, then the implicit
/// application context runs the `teardown_appcontext` callbacks in reverse order (`has_request_context()`
/// false, `current_app` and `g` still readable), and is popped, destroying its `g` (which reads as unbound
/// while its values are destroyed). For request callbacks r1, r2 and app callbacks a1, a2 the order is
/// r2, r1, a2, a1. Every callback runs even when an earlier one throws; the context is popped regardless;
/// then the one exception is rethrown, or, when several callbacks threw, a teardown_error lists them all.
///
/// Misuse changes nothing and throws context_error: popping a context that is not the active one (the
/// newest pushed on this stack), that is not pushed on it, or when none is active.
///
/// Results: `run()`, `handle()` and the callables of `copy_current_request_context` return by value (a
/// reference result is copied before the pop that may destroy what it refers to; a type that cannot be
/// copied is refused at compile time).
///
/// Thread-safety: contexts are immutable once built; each stack belongs to one thread or Storage, so one
/// context object may be pushed on several at once. Push/pop allocate nothing once a stack has been as
/// deep before. A thread that exits with contexts still pushed destroys them without teardown; a released
/// Storage pops them with teardown (reported as leaked_context); `handle()` never leaves any behind.
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
    using Base = detail::ContextState<App, Request, G>;
    using Frame = typename Base::Frame;
    struct State : Base {
        State() {
            // Once per instantiation: a released Storage pops the contexts it still has pushed.
            static const bool hooked =
                (detail::Registry::instance().add_release_hook(&Contexts::on_storage_release), true);
            (void)hooked;
        }
    };

    /// Owns the stacks: one State per thread and per Storage, destroyed with the other values there. The
    /// Local is never destroyed (only the destroying thread's State is, at static destruction): other
    /// threads may still be serving requests then.
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

    /// The stack of the calling thread's current table (a Storage's while one is entered), or null.
    static State* current_state() noexcept { return state_owner_.local.get(); }
    static State& state() { return state_owner_.local.value(); }

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
        return s == nullptr ? nullptr : s->g();
    }

public:
    /// The application of the active application context. Throws unbound_error
    /// (outside_app_context_message) when none is active.
    static constexpr LocalProxy<App> current_app{&Contexts::current_app_pointer, outside_app_context_message};
    /// The request of the active request context. Throws unbound_error (outside_request_context_message)
    /// when none is active.
    static constexpr LocalProxy<Request> request{&Contexts::current_request_pointer,
                                                 outside_request_context_message};
    /// The `g` of the active application context, made (empty) on first use, destroyed when that
    /// application context is popped; unbound (throws unbound_error, outside_app_context_message) when
    /// none is active, and while the destructors of its own values run.
    static constexpr LocalProxy<G> g{&Contexts::current_g, outside_app_context_message};

    /// True when there is an application context. Never allocates.
    static bool has_app_context() noexcept { return current_app.get() != nullptr; }
    /// True when there is a request context. Never allocates.
    static bool has_request_context() noexcept { return request.get() != nullptr; }

    /// How many application contexts (explicit and implicit) are pushed.
    static std::size_t app_context_depth() noexcept { return count(detail::FrameKind::app); }
    /// How many request contexts are pushed.
    static std::size_t request_context_depth() noexcept { return count(detail::FrameKind::request); }

    /// Sets the function that receives incidents (see Incident); null restores the default, which prints
    /// them to stderr. The handler runs on the thread where the incident happened and must not throw.
    /// Thread-safe.
    static void set_incident_handler(void (*handler)(const Incident&)) noexcept {
        Base::set_incident_handler(handler);
    }

private:
    /// Shared by AppContext and RequestContext: pop, the RAII guard and run().
    template <class Context>
    class Operations {
    public:
        /// Pops this context. On its last pop, runs its teardown callbacks with `error` (see Contexts).
        /// Throws context_error, changing nothing, when this context is not the active one; after popping,
        /// rethrows teardown errors.
        void pop(std::exception_ptr error = nullptr) const {
            State* s = current_state();
            check_can_pop(s, &self());
            if (CTXLOCAL_LIKELY(s->top_pops_quietly())) {
                s->drop_top();  // nothing to run: the short path
                return;
            }
            detail::TeardownErrors errors;
            s->pop_top(error, errors);
            if (!errors.empty()) detail::throw_teardown_errors(errors);
        }

        /// Pushes the context; returns a guard that pops it when it goes out of scope. When the scope is
        /// left by an exception, teardown still runs (with a null exception_ptr: a destructor cannot
        /// see the exception in flight — use run() to hand it to teardown) and teardown errors go to the
        /// incident handler; otherwise the guard's destructor throws what pop() throws.
        [[nodiscard]] auto scope() const {
            self().push();
            return Guard(self());
        }

        /// Pushes the context, calls `f()`, pops, and returns what `f` returned, by value. When `f`
        /// throws, teardown gets that exception, which is then rethrown (teardown errors go to the incident
        /// handler).
        template <class F>
        detail::by_value_t<std::invoke_result_t<F&>> run(F&& f) const {
            using R = std::invoke_result_t<F&>;
            self().push();
            std::optional<detail::Returned<R>> out;
            try {
                out.emplace(f);
            } catch (...) {
                pop_quietly(std::current_exception());
                throw;
            }
            pop();
            if constexpr (!std::is_void_v<R>) return std::move(out->value);
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

        /// "<AppContext 0x...>" or "<RequestContext 0x...>".
        std::string describe() const { return detail::describe(Context::kind, this); }

    protected:
        void pop_quietly(const std::exception_ptr& error) const noexcept {
            try {
                pop(error);
            } catch (...) {
                Base::report(Incident::Kind::suppressed_teardown_error,
                             "popping " + describe() + " while another exception propagated failed: " +
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
        static constexpr const char* kind = "AppContext";

        explicit AppContext(App& app) noexcept : app_(&app) {}
        /// A context must be popped before it is destroyed. If it is still pushed on the destroying
        /// thread's current stack, it is popped there and then (and everything pushed after it), newest
        /// first, with teardown, each reported as a leaked_context incident: the stacks never refer to a
        /// dead context. (Destroying a context that another thread or Storage still has pushed is a
        /// use-after-free bug in the caller, as with any object destroyed while another thread uses it.)
        ~AppContext() { release_destroyed(this); }
        AppContext(const AppContext&) = delete;
        AppContext& operator=(const AppContext&) = delete;

        /// The application.
        App& app() const noexcept { return *app_; }

        /// Pushes this context, binding `current_app` and a `g` (empty until first used; pushing the same
        /// context again on the same stack shares its `g`). May allocate on a stack's first pushes; never
        /// in steady state. If it throws, nothing changed.
        void push() const {
            State& s = state();
            s.frames.reserve_next();
            s.push_app(this, app_, nullptr);
        }

    private:
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
        static constexpr const char* kind = "RequestContext";

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

        /// Pushes this context, first pushing an implicit application context unless the active one is for
        /// the same App object. May allocate on a stack's first pushes; never in steady state. If it
        /// throws, nothing changed.
        void push() const { push_on(state()); }

    private:
        friend class Contexts;

        RequestContext(App& app, std::shared_ptr<Request> request, bool fresh_app)
            : app_(&app), request_(std::move(request)), fresh_app_(fresh_app) {}

        void push_on(State& s) const {
            s.frames.reserve_next(2);
            const bool push_app = fresh_app_ || s.app_top == nullptr || s.app_top->app != app_;
            if (push_app) s.push_app(nullptr, app_, this);
            s.push_request(this, request_.get(), push_app);
        }

        App* app_;
        std::shared_ptr<Request> request_;
        bool fresh_app_ = false;
    };

    /// Returns a callable that, on whichever thread calls it, runs `f(args...)` inside its own copy of the
    /// active request context — the same request object and App; a fresh application context, so an empty
    /// `g` — in a fresh Storage of its own (so it sees none of the executing thread's values and contexts,
    /// and concurrent copies share nothing mutable), with teardown, and returns f's result by value.
    /// Contexts f leaves pushed are popped and reported as with handle(). The callable may be called from
    /// many threads at once; `f` is called as const. Each call allocates (its Storage and stack).
    /// Inside `handle()` given a Request by value (not a shared_ptr), that request lives only until
    /// handle() returns, so the callable holds a copy of it, made here (Request must then be copyable).
    /// Throws context_error when no request context is active, or when such a request cannot be copied.
    template <class F>
    static auto copy_current_request_context(F f);

    /// What handle() calls the handler for, for a handler of type H: the result of `handler()`, or of
    /// `handler(Request&)` when it takes the request. handle() returns it by value.
    template <class H>
    using handler_result_t = typename std::conditional_t<std::is_invocable_v<H&>, std::invoke_result<H&>,
                                                         std::invoke_result<H&, Request&>>::type;

    /// The one call for servers: runs `handler()` (or `handler(Request&)`) inside a fresh request
    /// context for `request` — with its own application context and so its own `g` — and returns its
    /// result by value. `request` is a Request or a std::shared_ptr<Request>: an rvalue Request is bound
    /// where it is (not moved, nothing allocated; handler changes stay in it), an lvalue Request is copied
    /// (no heap allocation of its own), a shared_ptr is shared.
    /// handle() leaves the stack exactly as it found it: contexts the caller has pushed (a worker's
    /// application context) stay pushed and untouched, and contexts the handler leaves pushed are
    /// popped, newest first, with their teardown, each reported to the incident handler as leaked_context.
    /// It may be called from inside a handler (an internal redirect) or a teardown callback: the inner
    /// request has its own request context and `g`, the outer ones are intact afterwards. Called from a
    /// teardown callback of the same App, whose teardown would then run it again without end, it throws
    /// context_error and changes nothing. When the
    /// handler throws, teardown gets that exception, which is then rethrown; otherwise teardown errors are
    /// thrown after everything is popped.
    template <class R, class H>
    static detail::by_value_t<handler_result_t<H>> handle(App& app, R&& request, H&& handler);

    /// The asynchronous counterpart of handle(): a new Storage with a request context for `request` (a
    /// Request, taken by value, or a std::shared_ptr<Request>, shared) pushed in it, with its own
    /// application context and `g`. Enter it wherever the request's work runs (Storage::Scope,
    /// Storage::run, ctxlocal::wrap, ctxlocal::bind_executor, ctxlocal::task): `request`, `current_app` and
    /// `g` read this request there, on any thread. When its last handle is released, the request
    /// context's teardown runs (on the releasing thread, inside the Storage); contexts left pushed above it
    /// are popped first and reported as leaked_context. Allocates; throws context_error for a null
    /// shared_ptr.
    template <class R>
    static Storage make_storage(App& app, R&& request);

    /// Fan-out for tasks: a new Storage with a copy of the active request context pushed in it (the same
    /// request object and App; its own application context, `g`, stack and teardown), as make_storage
    /// would make for it. Start each concurrent task of a request in one: `ctxlocal::start(t,
    /// web::copy_current_request_storage())`. A request given to handle() by value is copied (see
    /// copy_current_request_context). Throws context_error when no request context is active, or when such
    /// a request cannot be copied. Allocates.
    static Storage copy_current_request_storage();

private:
    // Defined in detail/context_serve.hpp.
    static std::shared_ptr<Request> borrow(Request* request) noexcept;
    template <class R>
    static std::shared_ptr<Request> shared(R&& request);
    static std::shared_ptr<Request> shareable(const std::shared_ptr<Request>& request);
    template <class H>
    static detail::by_value_t<handler_result_t<H>> serve(State& s, const RequestContext& ctx, H& handler);
    [[noreturn]] CTXLOCAL_NOINLINE static void refuse_handle_in_own_teardown(const State& s);
    static const Frame* active_request_frame() noexcept;
    static std::size_t count(detail::FrameKind kind) noexcept;
    [[noreturn]] CTXLOCAL_NOINLINE static void refuse_pop(const State* s, const void* ctx,
                                                          const std::string& name);
    static void on_storage_release() noexcept;

    /// Throws context_error, changing nothing, unless `ctx`'s newest frame is the top one and not already
    /// being popped. A good pop formats nothing, allocates nothing.
    template <class Context>
    static void check_can_pop(const State* s, const Context* ctx) {
        const Frame* top = s == nullptr ? nullptr : s->frames.top();
        if (CTXLOCAL_LIKELY(top != nullptr && top->ctx == ctx && !top->closing)) return;
        refuse_pop(s, ctx, ctx->describe());
    }

    template <class Context>
    static void release_destroyed(const Context* ctx) noexcept {
        if (State* s = current_state()) s->release_destroyed(ctx, Context::kind);
    }
};

}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal

#include "detail/context_serve.hpp"  // IWYU pragma: export
