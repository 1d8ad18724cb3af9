// The out-of-line members of Contexts<App, Request, G> (context.hpp): serving a request (handle, the
// callables of copy_current_request_context, make_storage), the release hook, and the error paths.
// Included at the end of context.hpp; not a header of its own.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "../context.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {

template <class App, class Request, class G>
template <class F>
auto Contexts<App, Request, G>::copy_current_request_context(F f) {
    const Frame* top = active_request_frame();
    if (top == nullptr) {
        throw context_error(
            "copy_current_request_context(): Working outside of request context. Call it while a request "
            "is bound (inside web::handle(...) or a pushed web::RequestContext), so that there is a "
            "request to copy.");
    }
    // A pushed context is alive (its destructor pops it), so its request may be read here.
    const auto* ctx = static_cast<const RequestContext*>(top->ctx);
    return [app = top->app, request = shareable(ctx->request_), f = std::move(f)](auto&&... args) {
        const Storage storage;
        const Storage::Scope in(storage);
        State& s = state();
        const RequestContext copy(*app, request, true);
        auto call = [&]() -> decltype(auto) { return f(std::forward<decltype(args)>(args)...); };
        return serve(s, copy, call);
    };
}

template <class App, class Request, class G>
Storage Contexts<App, Request, G>::copy_current_request_storage() {
    const Frame* top = active_request_frame();
    if (top == nullptr) {
        throw context_error(
            "copy_current_request_storage(): Working outside of request context. Call it while a request "
            "is bound (inside web::handle(...), a pushed web::RequestContext or a Storage from "
            "web::make_storage), so that there is a request to copy.");
    }
    const auto* ctx = static_cast<const RequestContext*>(top->ctx);
    return make_storage(*top->app, shareable(ctx->request_));
}

template <class App, class Request, class G>
template <class R, class H>
auto Contexts<App, Request, G>::handle(App& app, R&& request, H&& handler)
    -> detail::by_value_t<handler_result_t<H>> {
    State& s = state();
    if constexpr (std::is_base_of_v<AppHooks, App>) {
        const AppHooks& hooks = app;
        if (CTXLOCAL_UNLIKELY(detail::ScopedMark::contains(detail::MarkKind::running_hooks, &hooks))) {
            refuse_handle_in_own_teardown(s);
        }
    }
    if constexpr (std::is_same_v<R, Request>) {
        // A Request handed over by rvalue: bound where it is, neither moved nor allocated (it lives
        // until handle() returns; the caller gave up its state).
        const RequestContext ctx(app, borrow(&request), true);
        return serve(s, ctx, handler);
    } else if constexpr (std::is_same_v<std::remove_cv_t<std::remove_reference_t<R>>, Request>) {
        Request copy(request);  // an lvalue or const Request: copied, as a by-value parameter would be
        const RequestContext ctx(app, borrow(&copy), true);
        return serve(s, ctx, handler);
    } else {
        const RequestContext ctx(app, shared(std::forward<R>(request)), true);
        return serve(s, ctx, handler);
    }
}

template <class App, class Request, class G>
template <class R>
Storage Contexts<App, Request, G>::make_storage(App& app, R&& request) {
    auto ctx = std::make_shared<RequestContext>(app, shared(std::forward<R>(request)));
    Storage storage;
    const Storage::Scope in(storage);
    State& s = state();
    ctx->push_on(s);
    s.owned = std::move(ctx);
    return storage;
}

/// A non-owning, allocation-free shared_ptr to a request that handle() keeps alive itself (the
/// aliasing constructor with an empty owner: use_count() is 0). copy_current_request_context() copies
/// such a request instead of sharing it.
template <class App, class Request, class G>
std::shared_ptr<Request> Contexts<App, Request, G>::borrow(Request* request) noexcept {
    return std::shared_ptr<Request>(std::shared_ptr<Request>(), request);
}

template <class App, class Request, class G>
template <class R>
std::shared_ptr<Request> Contexts<App, Request, G>::shared(R&& request) {
    if constexpr (std::is_convertible_v<R&&, std::shared_ptr<Request>>) {
        std::shared_ptr<Request> out(std::forward<R>(request));
        if (!out) throw context_error("ctxlocal: RequestContext needs a request, got a null shared_ptr");
        return out;
    } else {
        return std::make_shared<Request>(std::forward<R>(request));
    }
}

/// The request for a copy of a request context: the same object when it is shared, a copy when
/// handle() borrowed it (it dies when handle() returns, the copy may run later).
template <class App, class Request, class G>
std::shared_ptr<Request> Contexts<App, Request, G>::shareable(const std::shared_ptr<Request>& request) {
    if (request.use_count() != 0) return request;
    if constexpr (std::is_copy_constructible_v<Request>) {
        return std::make_shared<Request>(*request);
    } else {
        throw context_error(
            "copy_current_request_context(): the request was given to web::handle() by value and the "
            "Request type cannot be copied; give handle() a std::shared_ptr<Request> to share it");
    }
}

/// handle() once its request context is made: push on `s`, call, pop back to where `s` was.
template <class App, class Request, class G>
template <class H>
auto Contexts<App, Request, G>::serve(State& s, const RequestContext& ctx, H& handler)
    -> detail::by_value_t<handler_result_t<H>> {
    const std::size_t mark = s.frames.size();
    ctx.push_on(s);
    auto call = [&]() -> decltype(auto) {
        if constexpr (std::is_invocable_v<H&>) {
            return handler();
        } else {
            return handler(ctx.request());
        }
    };
    using Result = handler_result_t<H>;
    detail::TeardownErrors errors;
    std::optional<detail::Returned<Result>> out;
    try {
        out.emplace(call);
    } catch (...) {
        s.unwind(mark, &ctx, std::current_exception(), errors, "left pushed by the handler");
        Base::report_all(errors, "while another exception propagated");
        throw;
    }
    s.unwind(mark, &ctx, nullptr, errors, "left pushed by the handler");
    if (!errors.empty()) detail::throw_teardown_errors(errors);
    if constexpr (!std::is_void_v<Result>) return std::move(out->value);
}

template <class App, class Request, class G>
void Contexts<App, Request, G>::refuse_handle_in_own_teardown(const State& s) {
    throw context_error("ctxlocal: handle() called from a teardown callback of the same application (" +
                        s.describe_closing() +
                        " is being popped); its teardown would call it again without end: serve the "
                        "request with another App object, or after the teardown");
}

template <class App, class Request, class G>
auto Contexts<App, Request, G>::active_request_frame() noexcept -> const Frame* {
    const State* s = current_state();
    if (s == nullptr || s->request == nullptr) return nullptr;
    for (std::size_t i = s->frames.size(); i-- > 0;) {
        if (s->frames.at(i).kind == detail::FrameKind::request) return &s->frames.at(i);
    }
    return nullptr;
}

template <class App, class Request, class G>
std::size_t Contexts<App, Request, G>::count(detail::FrameKind kind) noexcept {
    const State* s = current_state();
    std::size_t n = 0;
    for (std::size_t i = 0; s != nullptr && i < s->frames.size(); ++i) n += s->frames.at(i).kind == kind;
    return n;
}

template <class App, class Request, class G>
void Contexts<App, Request, G>::refuse_pop(const State* s, const void* ctx, const std::string& name) {
    const Frame* top = s == nullptr ? nullptr : s->frames.top();
    if (top == nullptr)
        throw context_error("Cannot pop this context (" + name + "), there is no active context.");
    if (s->find(ctx) == nullptr)
        throw context_error("Cannot pop this context (" + name + "), it is not pushed.");
    if (top->ctx == ctx) {
        throw context_error("Cannot pop this context (" + name +
                            "), it is already being popped (a teardown callback tried to pop it).");
    }
    throw context_error("Cannot pop this context (" + name + "), it is not the active context (" +
                        Base::describe_frame(*top) + ").");
}

/// The release hook: pops, with teardown, what a released Storage still has pushed — make_storage's
/// own request context silently, anything else reported as leaked — before its values are destroyed.
template <class App, class Request, class G>
void Contexts<App, Request, G>::on_storage_release() noexcept {
    State* s = current_state();
    if (s == nullptr) return;
    detail::TeardownErrors errors;
    s->unwind(0, s->owned.get(), nullptr, errors, "left pushed in a Storage whose last handle was released");
    Base::report_all(errors, "while a released Storage's contexts were popped");
    s->owned.reset();
}

}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
