// prefork_server: N worker processes x M threads, all accepting on one listening socket inherited from
// the master (Apache's prefork MPM, gunicorn). The master only supervises: it restarts a worker that
// dies and, on SIGTERM/SIGINT, stops every worker (SIGTERM, then SIGKILL after a grace period) and exits.
// Workers also die with the master (PR_SET_PDEATHSIG), so none is ever orphaned.
//
// ctxlocal here: fork() happens in the single-threaded master before any request; each worker thread
// binds every request with web::handle() on its own stacks.
//
//   prefork_server --port 0 --workers 2 --threads 8
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

#include "app.hpp"
#include "http.hpp"
#include "server.hpp"

using namespace servers;

namespace {

/// A worker: M threads, each accepting a connection from the shared socket and serving it to the end.
int run_worker(int listener, int threads) {
    App app;
    std::vector<std::thread> pool;
    for (int i = 0; i < threads; ++i) {
        pool.emplace_back([&] {
            while (wait_readable(listener)) {
                // Non-blocking listener: when another thread or worker won the race, accept fails
                // with EAGAIN and this thread waits again.
                const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
                if (fd < 0) continue;
                tune_connection(fd);
                serve_connection(fd, handler_for(app), stopping);
                ::close(fd);
            }
        });
    }
    for (std::thread& t : pool) t.join();
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const Options options = parse_options(argc, argv, "[--port N] [--workers N] [--threads N]");
    install_stop_signals();
    init_app();
    const int listener = listen_loopback(options.port, true);
    announce(bound_port(listener));
    Supervisor workers(options.workers, [&](int) { return run_worker(listener, options.threads); });
    workers.start();
    while (!stopping.load()) {
        workers.check();
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    workers.stop();
    ::close(listener);
    return 0;
}
