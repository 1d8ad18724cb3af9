// ctxlocal/integration/grpc.hpp — binds each call of a synchronous gRPC C++ server with ctxlocal, through
// grpc::Server::GlobalCallbacks. Optional: needs gRPC C++ (`grpc++`; Debian: libgrpc++-dev); not included
// by ctxlocal.hpp.
//
//     struct Call { std::string request_id; };
//     using web = ctxlocal::Contexts<App, Call>;
//     App app;  // outlives every server
//     ctxlocal::integration::install_grpc_callbacks<web>(app, [](const grpc::ServerContext& context) {
//         const auto found = context.client_metadata().find("x-request-id");
//         return Call{found == context.client_metadata().end()
//                         ? std::string() : std::string(found->second.data(), found->second.size())};
//     });
//     // then build the grpc::Server; every synchronous handler can read web::request->request_id.
//
// For each synchronous call, PreSynchronousRequest (on the thread about to run the handler) builds the
// Request with `make_request(const grpc::ServerContext&)` and pushes a RequestContext for it (with an
// implicit application context, so a fresh `g`, unless an application context for the same App is already
// active on the thread); PostSynchronousRequest (on the same thread, after the handler returned or threw;
// gRPC turns a handler's exception into status UNKNOWN) pops it. The guarantees are handle()'s: the thread's
// stacks are after the call exactly as before it (empty on gRPC's own pool threads); contexts the handler
// left pushed are popped newest first, with teardown, and reported as leaked_context. Limits, from the
// shape of the gRPC hooks:
//   - when the handler left contexts pushed, the call's own request context is reported as well (it is
//     popped by destroying it, after the leaked ones; see RequestContext's destructor);
//   - teardown callbacks get no exception from a throwing handler (Post does not see it), and an exception
//     a teardown callback throws in Post cannot reach the client (the status is already sent): it is
//     written to stderr;
//   - if make_request throws, the call is cancelled (the client gets CANCELLED), the reason is written to
//     stderr, and the handler runs unbound (web::request throws unbound_error);
//   - only synchronous services: the callback and async APIs do not call these hooks.
#pragma once

#include <grpcpp/server.h>
#include <grpcpp/server_context.h>

#include <atomic>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "../config.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace integration {
namespace detail {
/// Set by the first install_grpc_callbacks().
inline std::atomic<bool> grpc_callbacks_installed{false};
}  // namespace detail

/// grpc::Server::GlobalCallbacks that bind each synchronous call (see the top of this file). `Web` is a
/// ctxlocal::Contexts<App, Request, G>; `make_request(const grpc::ServerContext&)` returns a Request. Usually
/// installed with install_grpc_callbacks(); derive from it to add other hooks (call the base Pre/Post).
/// Thread-safe: gRPC calls the hooks concurrently from its pool threads (make_request must be thread-safe
/// as called; it is called as const). Allocation per call: the shared Request and what make_request does.
template <class Web, class App, class MakeRequest>
class GrpcCallbacks : public ::grpc::Server::GlobalCallbacks {
public:
    using RequestContext = typename Web::RequestContext;
    using Request = std::remove_pointer_t<decltype(Web::request.get())>;

    GrpcCallbacks(App& app, MakeRequest make_request) : app_(&app), make_request_(std::move(make_request)) {}

    /// Pushes the call's request context on the calling thread, on top of whatever is pushed there
    /// already (left as found, as handle() does). Never throws (see the top of this file for a throwing
    /// make_request).
    void PreSynchronousRequest(::grpc::ServerContext* context) override {
        Slot& slot = slot_;
        slot.call = nullptr;
        slot.ctx.reset();  // a context left by a Pre without Post (not expected) is popped and reported
        slot.request.reset();
        try {
            auto request = std::make_shared<Request>(make_request_(std::as_const(*context)));
            auto ctx = std::make_unique<RequestContext>(*app_, request);
            ctx->push();
            slot.app_depth = Web::app_context_depth();
            slot.request_depth = Web::request_context_depth();
            slot.ctx = std::move(ctx);
            slot.request = std::move(request);
            slot.call = context;
        } catch (...) {
            slot.ctx.reset();
            std::fprintf(stderr, "ctxlocal: gRPC call not bound, cancelled: %s\n",
                         what(std::current_exception()));
            context->TryCancel();
        }
    }

    /// Pops the call's request context, and everything the handler left pushed above it, from the calling
    /// thread; what was pushed below it stays. Never throws.
    void PostSynchronousRequest(::grpc::ServerContext* context) override {
        Slot& slot = slot_;
        if (slot.call != context || !slot.ctx) return;  // not bound in Pre
        std::unique_ptr<RequestContext> ctx = std::move(slot.ctx);
        const std::shared_ptr<Request> request = std::move(slot.request);
        slot.call = nullptr;
        const bool only_ours = Web::app_context_depth() == slot.app_depth &&
                               Web::request_context_depth() == slot.request_depth &&
                               Web::request.get() == request.get();
        if (only_ours) {
            try {
                ctx->pop();
            } catch (...) {  // a teardown callback threw; the context is popped
                std::fprintf(stderr, "ctxlocal: teardown failed after a gRPC call: %s\n",
                             what(std::current_exception()));
            }
        }
        // Otherwise the handler left contexts pushed: destroying ctx pops them and then ctx, newest first,
        // with teardown, reporting each as leaked_context. (The handler cannot pop ctx: it has no access.)
        ctx.reset();
    }

private:
    struct Slot {
        const ::grpc::ServerContext* call = nullptr;
        std::unique_ptr<RequestContext> ctx;
        std::shared_ptr<Request> request;  // the one ctx binds
        std::size_t app_depth = 0;         // the depths right after ctx was pushed
        std::size_t request_depth = 0;
    };
    // One call at a time per thread: gRPC runs Pre, the handler and Post of a call on one thread.
    static inline thread_local Slot slot_;

    static const char* what(const std::exception_ptr& error) noexcept {
        try {
            std::rethrow_exception(error);
        } catch (const std::exception& e) {
            return e.what();
        } catch (...) {
            return "unknown exception";
        }
    }

    App* app_;
    MakeRequest make_request_;
};

/// Installs GrpcCallbacks<Web, App, MakeRequest>{app, make_request} as the process's gRPC global callbacks
/// and returns them. gRPC allows this once per process, before the first grpc::Server is created (it
/// aborts otherwise), and keeps the object until exit; `app` must outlive every server. Throws
/// std::logic_error, changing nothing, when called a second time. Thread-safe.
template <class Web, class App, class MakeRequest>
GrpcCallbacks<Web, App, MakeRequest>& install_grpc_callbacks(App& app, MakeRequest make_request) {
    if (detail::grpc_callbacks_installed.exchange(true)) {
        throw std::logic_error(
            "ctxlocal: install_grpc_callbacks() called twice; gRPC accepts one GlobalCallbacks per process "
            "(grpc::Server::SetGlobalCallbacks): bind every service through one installation");
    }
    auto* callbacks = new GrpcCallbacks<Web, App, MakeRequest>(app, std::move(make_request));
    ::grpc::Server::SetGlobalCallbacks(callbacks);  // owned by gRPC from here on
    return *callbacks;
}

}  // namespace integration
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
