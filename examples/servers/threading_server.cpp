// threading_server: a new thread per connection (Python's socketserver.ThreadingMixIn).
//
// ctxlocal here: each connection's thread binds every request with web::handle(); its values die with
// the thread. Nothing is shared between requests except the App.
//
//   threading_server --port 0
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <memory>
#include <thread>
#include <vector>

#include "app.hpp"
#include "http.hpp"
#include "server.hpp"

using namespace servers;

int main(int argc, char** argv) {
    const Options options = parse_options(argc, argv, "[--port N]");
    install_stop_signals();
    init_app();
    App app;
    const int listener = listen_loopback(options.port, true);
    announce(bound_port(listener));

    std::vector<ConnectionThread> connections;
    while (wait_readable(listener)) {
        const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) continue;  // another error or EAGAIN: keep serving
        tune_connection(fd);
        auto done = std::make_shared<std::atomic<bool>>(false);
        try {
            std::thread thread([fd, done, &app] {
                serve_connection(fd, handler_for(app), stopping);
                ::close(fd);
                done->store(true);
            });
            connections.push_back({std::move(thread), done});
        } catch (...) {  // no thread available: drop this connection, keep serving
            ::close(fd);
        }
        join_finished(connections, false);
    }
    join_finished(connections, true);  // every connection loop sees `stopping` within 100 ms
    ::close(listener);
    return 0;
}
