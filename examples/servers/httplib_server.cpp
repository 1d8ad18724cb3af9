// httplib_server: the same app on cpp-httplib (Debian: libcpp-httplib-dev, 0.11), a real HTTP library
// with its own thread pool. cpp-httplib parses each request, routes it to the handler, and writes the
// response; the handler converts httplib's request and calls web::handle(), so the app code is the same
// as in the other servers. The binding is ctxlocal's cpp-httplib adapter, httplib_handler() from
// <ctxlocal/integration/httplib.hpp>: it builds the HttpRequest with convert() and runs the handler inside
// web::handle().
//
// ctxlocal here: httplib serves each keep-alive connection on one pool thread, request after request;
// web::handle() binds each of them and leaves the thread's stacks empty afterwards.
//
// The connection loop is not cpp-httplib's. Its own (0.11) waits for the next request on an idle
// keep-alive connection for the whole keep-alive timeout without looking at stop(), so an idle client
// held up shutdown for 30 s; it reads ahead into a buffer it drops after each request, losing pipelined
// requests; and it keeps a connection open after answering a malformed request with 400. So Server below
// replaces httplib's per-connection step (its virtual process_and_close_socket(), which the accept loop
// calls on a pool thread for each connection) with serve_requests() from http.hpp: the same framing,
// limits, errors, idle timeout and stop check as every other server. Each request it frames is handed,
// bytes as received, to httplib's process_request() through FramedRequest, a Stream over those bytes.
// Written against cpp-httplib 0.11 (process_request() and process_and_close_socket() are not public
// API and may change in other versions).
//
// Stopping: SIGTERM/SIGINT are blocked in every thread and taken by one thread with sigwait(), which sets
// `stopping` (every connection loop sees it within 100 ms) and calls Server::stop() (not
// async-signal-safe, so it must not run in a signal handler), which closes the listening socket; the
// accept loop then joins the pool threads and listen_after_bind() returns.
//
//   httplib_server --port 0 --threads 32
#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include <ctxlocal/integration/httplib.hpp>

#include "app.hpp"
#include "http.hpp"
#include "server.hpp"

using namespace servers;

namespace {

/// The numeric address and port of a socket address (IPv4 or IPv6); empty and 0 for anything else.
void describe_address(const sockaddr_storage& address, std::string& ip, int& port) {
    char text[INET6_ADDRSTRLEN] = {};
    ip.clear();
    port = 0;
    if (address.ss_family == AF_INET) {
        const auto& in = reinterpret_cast<const sockaddr_in&>(address);
        if (::inet_ntop(AF_INET, &in.sin_addr, text, sizeof text) != nullptr) ip = text;
        port = ntohs(in.sin_port);
    } else if (address.ss_family == AF_INET6) {
        const auto& in6 = reinterpret_cast<const sockaddr_in6&>(address);
        if (::inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof text) != nullptr) ip = text;
        port = ntohs(in6.sin6_port);
    }
}

/// The httplib::Stream of one request already framed by serve_requests(): reads return the request's
/// bytes and then end of stream (0), so httplib never reads past the request or from the socket; writes
/// are collected and sent by flush(). Used by one thread.
class FramedRequest final : public httplib::Stream {
public:
    FramedRequest(int fd, std::string_view raw) : fd_(fd), raw_(raw) {}

    bool is_readable() const override { return !raw_.empty(); }
    bool is_writable() const override { return true; }  // writes are buffered until flush()

    ssize_t read(char* ptr, size_t size) override {
        const std::size_t n = std::min(size, raw_.size());
        std::memcpy(ptr, raw_.data(), n);
        raw_.remove_prefix(n);
        return static_cast<ssize_t>(n);
    }

    ssize_t write(const char* ptr, size_t size) override {
        out_.append(ptr, size);
        return static_cast<ssize_t>(size);
    }

    void get_remote_ip_and_port(std::string& ip, int& port) const override {
        sockaddr_storage address{};
        socklen_t size = sizeof address;
        if (::getpeername(fd_, reinterpret_cast<sockaddr*>(&address), &size) != 0) address.ss_family = 0;
        describe_address(address, ip, port);
    }

    void get_local_ip_and_port(std::string& ip, int& port) const override {
        sockaddr_storage address{};
        socklen_t size = sizeof address;
        if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &size) != 0) address.ss_family = 0;
        describe_address(address, ip, port);
    }

    ::socket_t socket() const override { return fd_; }

    /// Sends everything written so far (waiting at most write_timeout_ms for room each time). False
    /// when the peer is gone or too slow.
    bool flush() {
        const bool sent = write_all(fd_, out_);
        out_.clear();
        return sent;
    }

private:
    int fd_;
    std::string_view raw_;
    std::string out_;
};

/// Set by the handler when the app's response asks to close the connection; read and cleared by the
/// connection loop, which runs the handler on its own thread (inside process_request()).
thread_local bool close_requested = false;

/// httplib::Server with the connection loop of the other servers (see the top of this file).
class Server final : public httplib::Server {
private:
    /// Serves the accepted connection `sock` on the calling pool thread until it closes, then closes it.
    bool process_and_close_socket(::socket_t sock) override {
        // Non-blocking, so that only the timeouts of serve_requests() and write_all() apply (httplib set
        // SO_RCVTIMEO/SO_SNDTIMEO on it).
        ::fcntl(sock, F_SETFL, ::fcntl(sock, F_GETFL) | O_NONBLOCK);
        tune_connection(sock);
        serve_requests(
            sock,
            [this, sock](std::string_view raw, HttpRequest&& request) {
                const bool keep = request.keep_alive && !stopping.load(std::memory_order_relaxed);
                FramedRequest stream(sock, raw);
                bool closed = false;
                close_requested = false;
                // Parses `raw` again into httplib's Request, routes it, and writes the response with
                // `Connection: close` unless `keep`.
                const bool answered = process_request(stream, !keep, closed, nullptr);
                return stream.flush() && answered && keep && !closed && !close_requested;
            },
            stopping);
        ::shutdown(sock, SHUT_RDWR);
        ::close(sock);
        return true;
    }
};

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
    defaults.threads = 32;  // a pool thread per open keep-alive connection (more wait for a free thread)
    const Options options = parse_options(argc, argv, "[--port N] [--threads N]", defaults);
    ::signal(SIGPIPE, SIG_IGN);
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);  // inherited by every thread created from here on
    init_app();
    App app;

    Server server;
    const auto threads = static_cast<std::size_t>(options.threads);
    server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    // Only for the Keep-Alive header httplib writes: the connection loop above enforces idle_timeout_ms
    // and no request count.
    server.set_keep_alive_max_count(1'000'000);
    server.set_keep_alive_timeout(idle_timeout_ms / 1000);
    // Every method httplib routes goes to the app, which answers 405 to all but GET, as the other servers.
    // httplib_handler() (ctxlocal/integration/httplib.hpp) runs the lambda inside web::handle() with the
    // HttpRequest convert() builds, so route() reads it through web::request.
    const auto handler = ctxlocal::integration::httplib_handler<web>(
        app, convert, [](const httplib::Request&, httplib::Response& out) {
            const HttpResponse response = route();
            out.status = response.status;
            out.set_content(response.body, "text/plain");
            if (response.close) {
                out.set_header("Connection", "close");
                close_requested = true;
            }
        });
    ctxlocal::integration::route_all(server, ".*", handler);

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
    std::atomic<bool> listen_returned{false};
    std::thread signals([&] {
        int signal = 0;
        sigwait(&stop_signals, &signal);
        signalled.store(true);
        stopping.store(true);
        // stop() does nothing before listen_after_bind() has started its accept loop: wait for that
        // (a signal can arrive right after the first line), unless listen_after_bind() already returned.
        while (!server.is_running() && !listen_returned.load()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        server.stop();
    });
    const bool ok = server.listen_after_bind();
    listen_returned.store(true);
    if (!signalled.load()) {
        // listen_after_bind() failed on its own: wake the signal thread so that it can be joined.
        ::kill(::getpid(), SIGTERM);
    }
    signals.join();
    return ok ? 0 : 1;
}
