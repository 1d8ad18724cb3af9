// beast_server: the same app on Boost.Beast (Boost 1.74, header-only; Debian: libboost1.74-dev), a
// synchronous server with a thread per connection. Beast parses each request and writes each response;
// ctxlocal's Beast adapter (<ctxlocal/integration/beast.hpp>) runs the connection loop,
// serve_beast_connection(), which binds every request with web::handle() through beast_handle(), so the
// app code (route(), reading web::request and web::g) is the same as in the other servers.
//
// ctxlocal here: each connection's thread serves its keep-alive requests one after another; handle()
// binds each and leaves the thread's stacks empty afterwards.
//
// Stopping: SIGTERM/SIGINT set `stopping` (server.hpp). Beast's synchronous reads block, so the socket is
// wrapped in PollingSocket, whose reads wait for data in steps of 100 ms and fail once `stopping` is set
// or the connection was idle for idle_timeout_ms: idle keep-alive clients, silent ones and half-sent
// requests do not hold up shutdown. Writes wait at most write_timeout_ms for room.
//
//   beast_server --port 0
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http.hpp>
#include <ctxlocal/integration/beast.hpp>

#include "app.hpp"
#include "http.hpp"
#include "server.hpp"

using namespace servers;
namespace asio = boost::asio;
namespace http = boost::beast::http;
using boost::beast::error_code;

namespace {

/// A connected non-blocking TCP socket as a Beast SyncReadStream/SyncWriteStream whose operations give up
/// on `stopping`, after idle_timeout_ms without input (reads) or after write_timeout_ms without room
/// (writes). Used by one thread.
class PollingSocket {
public:
    explicit PollingSocket(asio::ip::tcp::socket& socket) : socket_(socket) { socket_.non_blocking(true); }

    template <class Buffers>
    std::size_t read_some(const Buffers& buffers, error_code& ec) {
        const auto idle_deadline =
            std::chrono::steady_clock::now() + std::chrono::milliseconds(idle_timeout_ms);
        for (;;) {
            const std::size_t n = socket_.read_some(buffers, ec);
            if (ec != asio::error::would_block && ec != asio::error::try_again) return n;
            if (stopping.load(std::memory_order_relaxed)) {
                ec = asio::error::operation_aborted;
                return 0;
            }
            if (std::chrono::steady_clock::now() > idle_deadline) {
                ec = asio::error::timed_out;
                return 0;
            }
            wait(POLLIN, 100);
        }
    }

    template <class Buffers>
    std::size_t write_some(const Buffers& buffers, error_code& ec) {
        for (int waited = 0;; waited += 100) {
            const std::size_t n = socket_.write_some(buffers, ec);
            if (ec != asio::error::would_block && ec != asio::error::try_again) return n;
            if (waited >= write_timeout_ms) {
                ec = asio::error::timed_out;
                return 0;
            }
            wait(POLLOUT, 100);
        }
    }

    // The throwing overloads a SyncReadStream/SyncWriteStream also has.
    template <class Buffers>
    std::size_t read_some(const Buffers& buffers) {
        error_code ec;
        const std::size_t n = read_some(buffers, ec);
        if (ec) throw boost::system::system_error(ec);
        return n;
    }
    template <class Buffers>
    std::size_t write_some(const Buffers& buffers) {
        error_code ec;
        const std::size_t n = write_some(buffers, ec);
        if (ec) throw boost::system::system_error(ec);
        return n;
    }

private:
    void wait(short events, int timeout_ms) {
        pollfd p{socket_.native_handle(), events, 0};
        ::poll(&p, 1, timeout_ms);
    }

    asio::ip::tcp::socket& socket_;
};

/// A Beast string_view (boost::string_view in Boost 1.74) as a std::string.
std::string to_string(boost::beast::string_view text) { return std::string(text.data(), text.size()); }

HttpRequest convert(const http::request<http::string_body>& in) {
    HttpRequest out;
    out.method = to_string(in.method_string());
    out.target = to_string(in.target());
    const std::size_t question = out.target.find('?');
    out.path = out.target.substr(0, question);
    if (question != std::string::npos) out.query = out.target.substr(question + 1);
    out.version = in.version() == 10 ? "HTTP/1.0" : "HTTP/1.1";
    for (const auto& field : in) {
        const auto name = field.name_string();
        out.headers.emplace_back(detail::lower(std::string_view(name.data(), name.size())),
                                 to_string(field.value()));
    }
    out.body = in.body();
    out.keep_alive = in.keep_alive();
    return out;
}

/// The app's answer as a Beast response (run inside web::handle() by the adapter).
http::response<http::string_body> answer(const http::request<http::string_body>& in) {
    const HttpResponse response = route();
    http::response<http::string_body> out{static_cast<http::status>(response.status), in.version()};
    out.set(http::field::content_type, "text/plain");
    out.body() = response.body;
    if (response.close) out.keep_alive(false);
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    const Options options = parse_options(argc, argv, "[--port N]");
    install_stop_signals();
    init_app();
    App app;
    asio::io_context io;  // never run: only the sockets' executor (every operation here is synchronous)
    const int listener = listen_loopback(options.port, true);
    announce(bound_port(listener));

    ctxlocal::integration::BeastConnectionOptions limits;
    limits.header_limit = max_head_bytes;
    limits.body_limit = max_body_bytes;
    limits.stopping = &stopping;

    std::vector<ConnectionThread> connections;
    while (wait_readable(listener)) {
        const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) continue;  // another error or EAGAIN: keep serving
        tune_connection(fd);
        auto done = std::make_shared<std::atomic<bool>>(false);
        try {
            std::thread thread([fd, done, &app, &io, &limits] {
                std::unique_ptr<asio::ip::tcp::socket> socket;
                try {
                    socket = std::make_unique<asio::ip::tcp::socket>(io, asio::ip::tcp::v4(), fd);
                } catch (...) {  // could not register fd: drop the connection
                    ::close(fd);
                }
                if (socket) {  // owns fd, closes it when destroyed
                    try {
                        PollingSocket stream(*socket);
                        ctxlocal::integration::serve_beast_connection<web>(stream, app, convert, answer,
                                                                           limits);
                    } catch (...) {  // making the socket non-blocking failed: drop the connection
                    }
                    error_code ignored;
                    socket->shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
                    socket.reset();
                }
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
