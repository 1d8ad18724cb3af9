// forking_server: a forked child process per connection (Python's socketserver.ForkingMixIn).
//
// ctxlocal here: the child is a copy of the (single-threaded) parent taken by fork(); it keeps only the
// forking thread's thread-local values, and the parent never binds a request, so every child starts with
// empty context stacks and binds each request with web::handle().
//
//   forking_server --port 0
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <vector>

#include "app.hpp"
#include "http.hpp"
#include "server.hpp"

using namespace servers;

namespace {

void reap(std::vector<pid_t>& children) {
    for (std::size_t i = 0; i < children.size();) {
        const pid_t done = ::waitpid(children[i], nullptr, WNOHANG);
        if (done == children[i] || (done < 0 && errno == ECHILD)) {
            children[i] = children.back();
            children.pop_back();
        } else {
            ++i;
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    const Options options = parse_options(argc, argv, "[--port N]");
    install_stop_signals();
    init_app();
    App app;
    const int listener = listen_loopback(options.port, true);
    announce(bound_port(listener));
    const pid_t parent = ::getpid();

    std::vector<pid_t> children;
    while (wait_readable(listener)) {
        reap(children);
        const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) continue;
        tune_connection(fd);
        std::fflush(stderr);
        const pid_t pid = ::fork();
        if (pid == 0) {
            die_with_parent(parent);
            ::close(listener);
            serve_connection(fd, handler_for(app), stopping);
            ::close(fd);
            std::fflush(stderr);
            std::_Exit(0);  // no atexit handlers or static destructors of the parent's copy
        }
        if (pid < 0)
            std::perror("fork");  // drop this connection, keep serving
        else
            children.push_back(pid);
        ::close(fd);
    }
    // Children notice SIGTERM themselves when it is sent to the process group; send it to each anyway
    // (the signal may have been sent to this process alone), then wait for them.
    stop_children(children, SIGTERM, std::chrono::seconds(10));
    ::close(listener);
    return 0;
}
