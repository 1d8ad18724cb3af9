// Plumbing shared by the example servers: command line, the loopback listening socket, the first output
// line, SIGTERM/SIGINT handling and worker-process supervision. Linux only.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace servers {

/// Command-line options. Every server takes --port; the others only where they mean something.
struct Options {
    int port = 0;     // 0: a free port
    int threads = 8;  // threads per process
    int workers = 2;  // worker processes
};

/// Parses `--port N`, `--threads N`, `--workers N` (and `--help`) over `defaults`. Exits with status 2 on
/// anything else.
inline Options parse_options(int argc, char** argv, const char* usage, Options defaults = {}) {
    Options options = defaults;
    int i = 1;
    while (i < argc) {
        const std::string_view arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            std::printf("usage: %s %s\n", argv[0], usage);
            std::exit(0);
        }
        int* slot = arg == "--port"      ? &options.port
                    : arg == "--threads" ? &options.threads
                    : arg == "--workers" ? &options.workers
                                         : nullptr;
        char* end = nullptr;
        const long value = (slot != nullptr && i + 1 < argc) ? std::strtol(argv[i + 1], &end, 10) : -1;
        if (slot == nullptr || end == nullptr || *end != '\0' || value < 0 || value > 65535 ||
            (slot != &options.port && value == 0)) {
            std::fprintf(stderr, "%s: bad argument '%s'\nusage: %s %s\n", argv[0], argv[i], argv[0], usage);
            std::exit(2);
        }
        *slot = static_cast<int>(value);
        i += 2;
    }
    return options;
}

/// Exits with a message naming the failed call.
[[noreturn]] inline void die(const char* what) {
    std::fprintf(stderr, "fatal: %s: %s\n", what, std::strerror(errno));
    std::exit(1);
}

/// A listening TCP socket bound to 127.0.0.1:`port` (0: a free port), close-on-exec.
inline int listen_loopback(int port, bool nonblocking) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) die("socket");
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) die("bind");
    if (::listen(fd, 1024) != 0) die("listen");
    return fd;
}

/// The port a socket is bound to.
inline int bound_port(int fd) {
    sockaddr_in address{};
    socklen_t size = sizeof address;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) != 0) die("getsockname");
    return ntohs(address.sin_port);
}

/// Prints the first line of output every server promises, and flushes it.
inline void announce(int port) {
    std::printf("listening on 127.0.0.1:%d\n", port);
    std::fflush(stdout);
}

/// Disables Nagle on an accepted connection (responses are small and written whole).
inline void tune_connection(int fd) {
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/// Set by SIGTERM and SIGINT once stop signals are installed. Lock-free, so safe in a signal handler.
inline std::atomic<bool> stopping{false};
static_assert(std::atomic<bool>::is_always_lock_free);

/// Ignores SIGPIPE and makes SIGTERM/SIGINT set `stopping` (without SA_RESTART, so blocking calls return
/// EINTR in the thread that takes the signal; every loop also polls `stopping` at least every 100 ms).
inline void install_stop_signals() {
    ::signal(SIGPIPE, SIG_IGN);
    struct sigaction action {};
    action.sa_handler = [](int) { stopping.store(true); };
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;
    ::sigaction(SIGTERM, &action, nullptr);
    ::sigaction(SIGINT, &action, nullptr);
}

/// The kernel thread id of the calling thread (what `ps -L` and /proc show).
inline long thread_id() {
    thread_local const long id = static_cast<long>(::syscall(SYS_gettid));
    return id;
}

/// Waits until `fd` is readable or `stopping` is set (checking every 100 ms). True when readable.
inline bool wait_readable(int fd) {
    while (!stopping.load(std::memory_order_relaxed)) {
        pollfd p{fd, POLLIN, 0};
        const int ready = ::poll(&p, 1, 100);
        if (ready > 0) return true;
        if (ready < 0 && errno != EINTR) return false;
    }
    return false;
}

/// Sends `signal` to every pid in `pids` that is still running, then reaps them, waiting at most
/// `grace`; whatever is left after that is killed with SIGKILL and reaped. Clears `pids`.
inline void stop_children(std::vector<pid_t>& pids, int signal, std::chrono::milliseconds grace) {
    for (pid_t pid : pids) ::kill(pid, signal);
    const auto deadline = std::chrono::steady_clock::now() + grace;
    std::vector<pid_t> left = pids;
    while (!left.empty() && std::chrono::steady_clock::now() < deadline) {
        for (std::size_t i = 0; i < left.size();) {
            const pid_t done = ::waitpid(left[i], nullptr, WNOHANG);
            if (done == left[i] || (done < 0 && errno == ECHILD)) {
                left[i] = left.back();
                left.pop_back();
            } else {
                ++i;
            }
        }
        if (!left.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    for (pid_t pid : left) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
    }
    pids.clear();
}

/// In a freshly forked worker: dies with SIGTERM when the master dies, so no worker outlives it even
/// when the master is killed with SIGKILL.
inline void die_with_parent(pid_t master) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != master) std::_Exit(0);  // the master died before prctl took effect
}

/// Keeps `workers` child processes running, each `std::_Exit(run(index))`. Call its members from one
/// thread of a single-threaded master (fork() copies only the calling thread).
///
///     Supervisor workers(2, [](int i) { return serve_as_worker(i); });
///     workers.start();
///     while (!stopping) { ...; workers.check(); }
///     workers.stop();
class Supervisor {
public:
    /// `prepare(i)` runs in the master before worker i is forked (e.g. to make its channel), `run(i)` in
    /// the worker, `forked(i)` in the master after the fork (e.g. to close the worker's end).
    Supervisor(int workers, std::function<int(int)> run, std::function<void(int)> prepare = {},
               std::function<void(int)> forked = {})
        : pids_(static_cast<std::size_t>(workers), -1),
          run_(std::move(run)),
          prepare_(std::move(prepare)),
          forked_(std::move(forked)) {}

    /// Forks every worker.
    void start() {
        for (std::size_t i = 0; i < pids_.size(); ++i) spawn(i);
    }

    /// Reaps workers that exited and, unless `stopping` is set, starts a replacement for each.
    void check() {
        for (;;) {
            int status = 0;
            const pid_t pid = ::waitpid(-1, &status, WNOHANG);
            if (pid <= 0) return;
            for (std::size_t i = 0; i < pids_.size(); ++i) {
                if (pids_[i] != pid) continue;
                pids_[i] = -1;
                if (stopping.load()) continue;
                std::fprintf(stderr, "master %d: worker %zu (pid %d) died (%s %d); restarting it\n",
                             static_cast<int>(::getpid()), i, static_cast<int>(pid),
                             WIFSIGNALED(status) ? "signal" : "exit status",
                             WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
                spawn(i);
            }
        }
    }

    /// Stops every worker: SIGTERM, up to 10 s to finish, then SIGKILL. Reaps them all.
    void stop() {
        std::vector<pid_t> running;
        for (pid_t& pid : pids_) {
            if (pid > 0) running.push_back(pid);
            pid = -1;
        }
        stop_children(running, SIGTERM, std::chrono::seconds(10));
    }

private:
    void spawn(std::size_t i) {
        const int index = static_cast<int>(i);
        if (prepare_) prepare_(index);
        std::fflush(stdout);
        std::fflush(stderr);
        const pid_t master = ::getpid();
        const pid_t pid = ::fork();
        if (pid < 0) die("fork");
        if (pid == 0) {
            die_with_parent(master);
            const int status = run_(index);
            std::fflush(stderr);
            std::_Exit(status);
        }
        pids_[i] = pid;
        if (forked_) forked_(index);
    }

    std::vector<pid_t> pids_;
    std::function<int(int)> run_;
    std::function<void(int)> prepare_;
    std::function<void(int)> forked_;
};

/// A thread serving one connection, and the flag it sets when it is done (thread-per-connection servers).
struct ConnectionThread {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
};

/// Joins and forgets the connection threads that are done (every one when `all`).
inline void join_finished(std::vector<ConnectionThread>& connections, bool all) {
    for (std::size_t i = 0; i < connections.size();) {
        if (all || connections[i].done->load()) {
            connections[i].thread.join();
            connections[i] = std::move(connections.back());
            connections.pop_back();
        } else {
            ++i;
        }
    }
}

}  // namespace servers
