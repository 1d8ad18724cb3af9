// ctxlocal/integration/beast.hpp — binds each request of a synchronous Boost.Beast HTTP server with
// ctxlocal. Optional: needs Boost.Beast (Boost >= 1.70, header-only use; Debian: libboost1.74-dev); not
// included by ctxlocal.hpp.
//
//     using web = ctxlocal::Contexts<App, MyRequest>;
//     namespace http = boost::beast::http;
//     auto make_request = [](const http::request<http::string_body>& in) {
//         return MyRequest{std::string(in.target())};
//     };
//     auto handler = [](const http::request<http::string_body>& in) {
//         http::response<http::string_body> out{http::status::ok, in.version()};
//         out.body() = "target=" + web::request->target;
//         return out;
//     };
//     // on the connection's thread, socket a connected boost::asio::ip::tcp::socket:
//     ctxlocal::integration::serve_beast_connection<web>(socket, app, make_request, handler);
//
// beast_handle() binds one request: the user handler runs inside `web::handle(app, make_request(in), ...)`,
// with handle()'s guarantees (the request and a fresh `g` bound for the handler and what it calls; afterwards
// the thread's context stacks as they were before, also when the handler threw or left contexts pushed,
// which are popped and reported as leaked_context). serve_beast_connection() is a keep-alive loop
// that reads each request with Beast and answers it through beast_handle(). Synchronous only: the
// asynchronous Beast server (a request's handler spread over completion handlers on io_context threads) needs
// context propagation across those handlers and is not covered here.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "../config.hpp"

namespace ctxlocal {
inline namespace CTXLOCAL_ABI_NAMESPACE {
namespace integration {

/// Runs `handler(in)` inside `Web::handle(app, make_request(in), ...)` and returns what it returned
/// (typically a boost::beast::http::response). `make_request(in)` returns the Web's Request type (or a
/// std::shared_ptr to one). An exception from make_request or handler propagates (one from the handler
/// first reaches the request's teardown, as in handle()). Thread-safe if make_request and handler are.
template <class Web, class App, class Body, class Fields, class MakeRequest, class Handler>
decltype(auto) beast_handle(App& app, const boost::beast::http::request<Body, Fields>& in,
                            const MakeRequest& make_request, Handler&& handler) {
    return Web::handle(app, make_request(in), [&]() -> decltype(auto) { return handler(in); });
}

/// Limits and the stop flag of serve_beast_connection().
struct BeastConnectionOptions {
    std::size_t header_limit = 8 * 1024;  // request line and headers; larger -> 431 and close
    std::size_t body_limit = 64 * 1024;   // larger -> 413 and close
    /// When set (not null) and true after a response, that response says `Connection: close` and the
    /// loop ends. Read with relaxed loads.
    const std::atomic<bool>* stopping = nullptr;
};

namespace detail {

/// A plain-text response that closes the connection.
inline boost::beast::http::response<boost::beast::http::string_body> beast_error_response(
    boost::beast::http::status status, unsigned version) {
    boost::beast::http::response<boost::beast::http::string_body> out{status, version < 10 ? 11 : version};
    out.set(boost::beast::http::field::content_type, "text/plain");
    const auto reason = boost::beast::http::obsolete_reason(status);
    out.body() = std::string(reason.data(), reason.size()) + "\n";
    out.keep_alive(false);
    out.prepare_payload();
    return out;
}

}  // namespace detail

/// Serves HTTP/1.x requests from `stream` (a Beast SyncReadStream and SyncWriteStream, e.g. a connected
/// boost::asio::ip::tcp::socket) on the calling thread, one after the other, until the peer closes, a read
/// or write fails, a request or response is not keep-alive, or `options.stopping` is set. Each request
/// (read into an http::request<http::string_body>) is answered with beast_handle(app, request,
/// make_request, handler); `handler` returns an http::response (any body), whose payload is prepared
/// here (prepare_payload()) and whose keep-alive is the request's unless the handler asked for close. A
/// request Beast cannot parse gets 400 (431/413 over the limits) and closes; an exception from
/// make_request or the handler gets 500 and closes. Never throws; does not close `stream`. The calling
/// thread's context stacks are after every request as before it (handle()'s guarantee).
template <class Web, class Stream, class App, class MakeRequest, class Handler>
void serve_beast_connection(Stream& stream, App& app, const MakeRequest& make_request, Handler&& handler,
                            const BeastConnectionOptions& options = {}) noexcept {
    namespace http = boost::beast::http;
    try {
        boost::beast::flat_buffer buffer;
        for (;;) {
            http::request_parser<http::string_body> parser;
            parser.header_limit(static_cast<std::uint32_t>(options.header_limit));
            parser.body_limit(options.body_limit);
            boost::beast::error_code ec;
            http::read(stream, buffer, parser, ec);
            if (ec) {
                // A closed, reset or timed-out connection ends quietly; a bad request is answered.
                if (ec.category() != http::make_error_code(http::error::bad_version).category() ||
                    ec == http::error::end_of_stream || ec == http::error::partial_message) {
                    return;
                }
                const http::status status = ec == http::error::header_limit
                                                ? http::status::request_header_fields_too_large
                                            : ec == http::error::body_limit ? http::status::payload_too_large
                                                                            : http::status::bad_request;
                auto error = detail::beast_error_response(status, 11);
                http::write(stream, error, ec);
                return;
            }
            const http::request<http::string_body>& request = parser.get();
            using Response = std::decay_t<decltype(beast_handle<Web>(app, request, make_request, handler))>;
            std::optional<Response> response;
            try {
                response.emplace(beast_handle<Web>(app, request, make_request, handler));
            } catch (...) {  // from make_request or the handler (handle() has popped everything)
            }
            if (!response) {
                auto error =
                    detail::beast_error_response(http::status::internal_server_error, request.version());
                http::write(stream, error, ec);
                return;
            }
            const bool keep =
                request.keep_alive() && response->keep_alive() &&
                !(options.stopping != nullptr && options.stopping->load(std::memory_order_relaxed));
            response->keep_alive(keep);
            response->prepare_payload();
            http::write(stream, *response, ec);
            if (ec || !keep) return;
        }
    } catch (...) {
        // Out of memory while reading or writing: drop the connection.
    }
}

}  // namespace integration
}  // namespace CTXLOCAL_ABI_NAMESPACE
}  // namespace ctxlocal
