// GrpcCallbacks (ctxlocal/integration/grpc.hpp) driven directly, the way gRPC's synchronous server calls
// it (Pre, the handler, Post on one thread), without a server: what is bound during the "call" and what is
// left on the thread after it. Built with examples/grpc/ (gRPC found, gcc leg). The e2e tests run it in a
// real server (tests/e2e/, e2e.grpc_server.*).
#include <doctest/doctest.h>
#include <grpcpp/server_context.h>

#include <ctxlocal/ctxlocal.hpp>
#include <ctxlocal/integration/grpc.hpp>

#include <memory>
#include <string>

#include "../support/incidents.hpp"

namespace {

struct App : ctxlocal::AppHooks {};
struct Call {
    std::string id;
};
using web = ctxlocal::Contexts<App, Call>;
using Capture = test_support::IncidentCapture<web>;
constexpr auto leaked = ctxlocal::Incident::Kind::leaked_context;

struct NextId {
    int* counter;
    Call operator()(const grpc::ServerContext&) const { return Call{"call-" + std::to_string(++*counter)}; }
};

using Callbacks = ctxlocal::integration::GrpcCallbacks<web, App, NextId>;

bool clean() { return web::app_context_depth() == 0 && web::request_context_depth() == 0; }

}  // namespace

TEST_CASE("GrpcCallbacks.Pre.binds_the_request_built_for_the_call") {
    Capture capture;
    App app;
    int counter = 0;
    Callbacks callbacks(app, NextId{&counter});
    grpc::ServerContext context;
    callbacks.PreSynchronousRequest(&context);
    REQUIRE(web::has_request_context());
    CHECK(web::request->id == "call-1");
    CHECK(&web::current_app.current() == &app);
    web::g->set("id", 1);
    callbacks.PostSynchronousRequest(&context);
    CHECK(clean());
    CHECK(capture.all().empty());

    grpc::ServerContext second;  // the next call on the thread: its own request, a fresh g
    callbacks.PreSynchronousRequest(&second);
    CHECK(web::request->id == "call-2");
    CHECK(web::g->get_if<int>("id") == nullptr);
    callbacks.PostSynchronousRequest(&second);
    CHECK(clean());
}

TEST_CASE("GrpcCallbacks.Post.pops_what_the_handler_left_pushed_and_reports_it") {
    Capture capture;
    App app;
    int counter = 0;
    Callbacks callbacks(app, NextId{&counter});
    grpc::ServerContext context;
    callbacks.PreSynchronousRequest(&context);
    auto app_context = std::make_unique<web::AppContext>(app);
    auto request_context = std::make_unique<web::RequestContext>(app, Call{"leaked"});
    app_context->push();
    request_context->push();
    callbacks.PostSynchronousRequest(&context);
    CHECK(clean());
    // The two leaked contexts and the call's own (see the limits in grpc.hpp).
    CHECK(capture.count(leaked) == 3);
}

TEST_CASE("GrpcCallbacks.Post.pops_the_call_context_after_a_destroyed_leak") {
    Capture capture;
    App app;
    int counter = 0;
    Callbacks callbacks(app, NextId{&counter});
    grpc::ServerContext context;
    callbacks.PreSynchronousRequest(&context);
    // The handler pushes a context of its own and never pops it; it is destroyed before Post (which is
    // then left with its own context only, but the stacks must still end empty).
    {
        web::RequestContext other(app, Call{"other"});
        other.push();
    }  // its destructor pops it (reported as leaked_context)
    CHECK(web::request_context_depth() == 1);
    callbacks.PostSynchronousRequest(&context);
    CHECK(clean());
    CHECK(capture.count(leaked) == 1);
}

TEST_CASE("GrpcCallbacks.Post.leaves_contexts_pushed_before_the_call_as_found") {
    Capture capture;
    App app;
    int counter = 0;
    Callbacks callbacks(app, NextId{&counter});
    web::RequestContext outer(app, Call{"outer"});
    outer.push();
    grpc::ServerContext context;
    callbacks.PreSynchronousRequest(&context);
    CHECK(web::request_context_depth() == 2);
    CHECK(web::request->id == "call-1");
    callbacks.PostSynchronousRequest(&context);
    CHECK(web::request_context_depth() == 1);
    CHECK(web::request->id == "outer");
    CHECK(capture.all().empty());

    // A leak inside such a call: popped down to the call's own context, the outer one stays.
    callbacks.PreSynchronousRequest(&context);
    web::AppContext leaked_app(app);
    leaked_app.push();
    callbacks.PostSynchronousRequest(&context);
    CHECK(web::request_context_depth() == 1);
    CHECK(web::request->id == "outer");
    CHECK(capture.count(leaked) == 2);  // leaked_app and the call's own
    outer.pop();
    CHECK(clean());
}

TEST_CASE("GrpcCallbacks.Post.ignores_a_call_it_did_not_bind") {
    Capture capture;
    App app;
    int counter = 0;
    Callbacks callbacks(app, NextId{&counter});
    grpc::ServerContext bound;
    grpc::ServerContext other;
    callbacks.PreSynchronousRequest(&bound);
    callbacks.PostSynchronousRequest(&other);  // not this thread's call: nothing popped
    CHECK(web::request_context_depth() == 1);
    callbacks.PostSynchronousRequest(&bound);
    CHECK(clean());
    CHECK(capture.all().empty());
}
