// httplib_server: the same app on cpp-httplib (Debian: libcpp-httplib-dev), a real HTTP library with
// its own thread pool. Its request handler is the hook where each request is bound: the handler
// converts httplib's request and calls web::handle(), so the app code is the same as in the other servers.
//
// ctxlocal here: httplib serves each keep-alive connection on one pool thread, request after request;
// web::handle() binds each of them and leaves the thread's stacks empty afterwards.
//
// Stopping: SIGTERM/SIGINT are blocked in every thread and taken by one thread with sigwait(), which
// calls Server::stop() (not async-signal-safe, so it must not run in a signal handler).
//
//   httplib_server --port 0 --threads 32
#include <httplib.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <utility>

#include "app.hpp"
#include "http.hpp"
#include "server.hpp"

using namespace servers;

namespace {

HttpRequest convert(const httplib::Request& in) {
    HttpRequest out;
    out.method = in.method;
    out.target = in.target;
    out.path = in.path;
    const std::size_t question = in.target.find('?');
    if (question != std::string::npos) out.query = in.target.substr(question + 1);
    out.version = in.version;
    for (const auto& [name, value] : in.headers) out.headers.emplace_back(detail::lower(name), value);
    out.body = in.body;
    out.keep_alive = true;
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    Options defaults;
    defaults.threads = 32;  // httplib keeps a pool thread per open keep-alive connection
    const Options options = parse_options(argc, argv, "[--port N] [--threads N]", defaults);
    ::signal(SIGPIPE, SIG_IGN);
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);  // inherited by every thread created from here on
    init_app();
    App app;

    httplib::Server server;
    const auto threads = static_cast<std::size_t>(options.threads);
    server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    server.set_keep_alive_max_count(1'000'000);
    server.set_keep_alive_timeout(idle_timeout_ms / 1000);
    server.set_tcp_nodelay(true);  // httplib writes head and body separately: avoid Nagle + delayed ACK
    server.Get(R"(/.*)", [&app](const httplib::Request& in, httplib::Response& out) {
        const HttpResponse response = serve(app, convert(in));
        out.status = response.status;
        out.set_content(response.body, "text/plain");
        if (response.close) out.set_header("Connection", "close");
    });

    int port = options.port;
    if (port == 0) {
        port = server.bind_to_any_port("127.0.0.1");
    } else if (!server.bind_to_port("127.0.0.1", port)) {
        port = -1;
    }
    if (port < 0) {
        std::fprintf(stderr, "fatal: cannot bind 127.0.0.1:%d\n", options.port);
        return 1;
    }
    announce(port);

    std::atomic<bool> signalled{false};
    std::thread signals([&] {
        int signal = 0;
        sigwait(&stop_signals, &signal);
        signalled.store(true);
        server.stop();
    });
    const bool ok = server.listen_after_bind();
    if (!signalled.load()) {
        // listen_after_bind() failed on its own: wake the signal thread so that it can be joined.
        ::kill(::getpid(), SIGTERM);
    }
    signals.join();
    return ok ? 0 : 1;
}
