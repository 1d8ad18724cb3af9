// grpc_server: a synchronous gRPC C++ server (Debian: libgrpc++-dev) whose calls are bound with ctxlocal
// through its gRPC adapter, <ctxlocal/integration/grpc.hpp>: every handler reads the call's metadata
// through web::request and keeps per-call state in web::g, never through parameters. The WhoAmI service is
// whoami.proto; grpc_client drives it (the e2e tests, tests/e2e/).
//
// ctxlocal here: gRPC runs each call on one of its pool threads; the adapter's global callbacks push the
// call's request context before the handler and pop it (and whatever the handler left pushed) after it,
// so the next call on that thread starts clean.
//
// Stopping: SIGTERM/SIGINT are blocked in every thread (before gRPC starts any) and taken by one thread
// with sigwait(), which calls Server::Shutdown() with a 1 s deadline for calls in flight.
//
//   grpc_server --port 0
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include <ctxlocal/ctxlocal.hpp>
#include <ctxlocal/integration/grpc.hpp>

#include "whoami.grpc.pb.h"

namespace {

struct App : ctxlocal::AppHooks {};

/// What a handler may read about its call, built from the grpc::ServerContext before the handler runs.
struct Call {
    std::string request_id;  // the x-request-id metadata entry, `<none>` when absent
};

using web = ctxlocal::Contexts<App, Call>;

std::atomic<long> leaks_reported{0};

long thread_id() { return static_cast<long>(::syscall(SYS_gettid)); }

Call make_call(const grpc::ServerContext& context) {
    const auto& metadata = context.client_metadata();
    const auto found = metadata.find("x-request-id");
    if (found == metadata.end()) return Call{"<none>"};
    return Call{std::string(found->second.data(), found->second.size())};
}

/// Answers from the globals only.
void describe(ctxlocal_example::AskReply& reply) {
    const std::string* g_id = web::g->get_if<std::string>("id");
    reply.set_request_id(web::request->request_id);
    reply.set_g_id(g_id != nullptr ? *g_id : std::string("<none>"));
    reply.set_tid(thread_id());
    reply.set_pid(::getpid());
}

class WhoAmI final : public ctxlocal_example::WhoAmI::Service {
    grpc::Status Ask(grpc::ServerContext*, const ctxlocal_example::AskRequest* in,
                     ctxlocal_example::AskReply* out) override {
        if (in->delay_ms() < 0 || in->delay_ms() > 10'000) {
            return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "delay_ms out of range");
        }
        if (web::request->request_id != "<none>") web::g->set("id", web::request->request_id);
        std::this_thread::sleep_for(std::chrono::milliseconds(in->delay_ms()));
        describe(*out);
        return grpc::Status::OK;
    }

    grpc::Status Leak(grpc::ServerContext*, const ctxlocal_example::AskRequest*,
                      ctxlocal_example::AskReply* out) override {
        // Pushes two contexts and never pops them. They must outlive this handler (the stacks refer to
        // them by address until the adapter pops them), so they are kept per thread until its next Leak.
        struct Leaked {
            explicit Leaked(App& app) : app_context(app), request_context(app, Call{"leaked"}) {}
            web::AppContext app_context;
            web::RequestContext request_context;
        };
        thread_local std::unique_ptr<Leaked> kept;
        kept = std::make_unique<Leaked>(web::current_app.current());
        kept->app_context.push();
        web::g->set("id", std::string("leaked"));  // the leaked application context's own g
        kept->request_context.push();
        describe(*out);
        return grpc::Status::OK;
    }

    grpc::Status Fail(grpc::ServerContext*, const ctxlocal_example::AskRequest*,
                      ctxlocal_example::AskReply*) override {
        web::g->set("id", std::string("failed"));
        throw std::runtime_error("Fail: thrown by the handler on purpose");
    }

    grpc::Status Stats(grpc::ServerContext*, const ctxlocal_example::StatsRequest*,
                       ctxlocal_example::StatsReply* out) override {
        out->set_leaks(leaks_reported.load());
        return grpc::Status::OK;
    }
};

int parse_port(int argc, char** argv) {
    if (argc == 1) return 0;
    char* end = nullptr;
    const long port = argc == 3 && std::strcmp(argv[1], "--port") == 0 ? std::strtol(argv[2], &end, 10) : -1;
    if (end == nullptr || *end != '\0' || port < 0 || port > 65535) {
        std::fprintf(stderr, "usage: %s [--port N]\n", argv[0]);
        std::exit(2);
    }
    return static_cast<int>(port);
}

}  // namespace

int main(int argc, char** argv) {
    const int requested_port = parse_port(argc, argv);
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);  // inherited by every thread created from here on

    web::set_incident_handler([](const ctxlocal::Incident& incident) {
        if (incident.kind == ctxlocal::Incident::Kind::leaked_context) leaks_reported.fetch_add(1);
        std::fprintf(stderr, "incident (tid %ld): %s\n", thread_id(), incident.message.c_str());
    });
    static App app;  // outlives the server and gRPC's global callbacks
    ctxlocal::integration::install_grpc_callbacks<web>(app, make_call);  // before the first grpc::Server

    WhoAmI service;
    int port = 0;
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:" + std::to_string(requested_port), grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&service);
    const std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    if (!server || port == 0) {
        std::fprintf(stderr, "fatal: cannot listen on 127.0.0.1:%d\n", requested_port);
        return 1;
    }
    std::printf("listening on 127.0.0.1:%d\n", port);
    std::fflush(stdout);

    std::thread signals([&] {
        int signal = 0;
        sigwait(&stop_signals, &signal);
        server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    });
    server->Wait();
    signals.join();
    return 0;
}
