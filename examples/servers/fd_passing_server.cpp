// fd_passing_server: the master accepts every connection and hands the client socket to a worker
// process over a Unix socket (SCM_RIGHTS), round robin. Each worker runs M threads that receive sockets
// from its end and serve them to the end. The master restarts a worker that dies (with a new Unix
// socket) and stops all of them on SIGTERM/SIGINT.
//
// ctxlocal here: the worker's threads bind every request with web::handle(); a passed socket is just a
// new file descriptor in the worker, so nothing of the master's state travels with it.
//
//   fd_passing_server --port 0 --workers 2 --threads 8
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include "app.hpp"
#include "http.hpp"
#include "server.hpp"

using namespace servers;

namespace {

/// Sends `fd` over the Unix datagram socket `channel`. False when the worker is gone or full.
bool send_fd(int channel, int fd) {
    char byte = 'F';
    iovec data{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr message{};
    message.msg_iov = &data;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    cmsghdr* header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(header), &fd, sizeof fd);
    for (;;) {
        if (::sendmsg(channel, &message, MSG_NOSIGNAL | MSG_DONTWAIT) == 1) return true;
        if (errno != EINTR) return false;
    }
}

/// Receives one file descriptor from `channel`; -1 when there is none (EAGAIN, or a message without one).
int receive_fd(int channel) {
    char byte = 0;
    iovec data{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr message{};
    message.msg_iov = &data;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    if (::recvmsg(channel, &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) != 1) return -1;
    for (cmsghdr* h = CMSG_FIRSTHDR(&message); h != nullptr; h = CMSG_NXTHDR(&message, h)) {
        if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) {
            int fd = -1;
            std::memcpy(&fd, CMSG_DATA(h), sizeof fd);
            return fd;
        }
    }
    return -1;
}

int run_worker(int channel, int threads) {
    App app;
    std::vector<std::thread> pool;
    for (int i = 0; i < threads; ++i) {
        pool.emplace_back([&] {
            // Every thread waits on the same channel; each datagram (one socket) goes to one of them.
            while (wait_readable(channel)) {
                const int fd = receive_fd(channel);
                if (fd < 0) continue;
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

    // channels[i]: worker i's Unix datagram socket pair; the master keeps [0] and closes [1] once the
    // worker is forked, so sending to a dead worker fails at once (and the next worker gets the socket).
    std::vector<std::array<int, 2>> channels(static_cast<std::size_t>(options.workers), {-1, -1});
    Supervisor workers(
        options.workers,
        [&](int i) {  // in worker i: keep only its own end
            for (auto& pair : channels) {
                if (pair[0] >= 0) ::close(pair[0]);
            }
            ::close(listener);
            return run_worker(channels[static_cast<std::size_t>(i)][1], options.threads);
        },
        [&](int i) {  // before forking worker i: a fresh channel
            auto& pair = channels[static_cast<std::size_t>(i)];
            if (pair[0] >= 0) ::close(pair[0]);
            if (::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, pair.data()) != 0) die("socketpair");
        },
        [&](int i) {  // after forking it
            auto& pair = channels[static_cast<std::size_t>(i)];
            ::close(pair[1]);
            pair[1] = -1;
        });
    workers.start();

    // The master stays single-threaded: it accepts, passes, and checks on its workers.
    std::size_t next = 0;
    while (!stopping.load()) {
        workers.check();
        pollfd p{listener, POLLIN, 0};
        if (::poll(&p, 1, 100) <= 0) continue;
        const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) continue;
        tune_connection(fd);
        for (std::size_t tries = 0; tries < channels.size(); ++tries) {
            const int channel = channels[next][0];
            next = (next + 1) % channels.size();
            if (send_fd(channel, fd)) break;  // else that worker is gone or its queue is full: next one
        }
        ::close(fd);  // the worker holds its own copy now (if no worker took it, the client sees a close)
    }
    workers.stop();
    for (auto& pair : channels) ::close(pair[0]);
    ::close(listener);
    return 0;
}
