// Minimal HTTP/1.1 for the example servers: one request parser, one response writer, the step that answers
// every request buffered on a connection (the pool's event loop calls it) and one connection loop (the
// thread- and process-per-connection servers, and httplib_server, which hands each request it frames to
// cpp-httplib). Deliberately small; robust rather than complete:
//   - request line `METHOD SP /target SP HTTP/1.0|1.1`, anything else -> 400 and close;
//   - request head (request line + headers) larger than 8 KiB -> 431 and close;
//   - a body only with Content-Length (at most 64 KiB, else 413); Transfer-Encoding -> 501 and close;
//   - keep-alive: HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`;
//   - a peer that disconnects early, stalls, or resets is closed quietly; nothing here throws out of a
//     connection loop or kills the process (SIGPIPE must be ignored: see server.hpp).
// Linux/POSIX only. No percent-decoding of query values (the example app only sends digits).
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace servers {

/// Largest request head (request line and headers) accepted.
inline constexpr std::size_t max_head_bytes = 8 * 1024;
/// Largest request body accepted.
inline constexpr std::size_t max_body_bytes = 64 * 1024;
/// How long a connection may sit idle between requests (or mid-request) before it is closed.
inline constexpr int idle_timeout_ms = 30'000;
/// How long writing one response may block before the connection is dropped.
inline constexpr int write_timeout_ms = 10'000;

/// One parsed request. Owns its strings.
struct HttpRequest {
    std::string method;
    std::string target;  // as sent: path and query
    std::string path;
    std::string query;  // after '?', without it
    std::string version;
    std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
    std::string body;
    bool keep_alive = false;

    /// The value of query parameter `name`, or nothing when it is absent.
    std::optional<std::string_view> param(std::string_view name) const {
        std::string_view rest = query;
        while (!rest.empty()) {
            const std::size_t amp = rest.find('&');
            const std::string_view pair = rest.substr(0, amp);
            const std::size_t eq = pair.find('=');
            if (pair.substr(0, eq) == name) {
                return eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
            }
            if (amp == std::string_view::npos) break;
            rest.remove_prefix(amp + 1);
        }
        return std::nullopt;
    }

    /// The value of header `name` (lower-case), or nothing.
    std::optional<std::string_view> header(std::string_view name) const {
        for (const auto& [key, value] : headers) {
            if (key == name) return std::string_view(value);
        }
        return std::nullopt;
    }
};

/// A response. `close` forces `Connection: close` and closes after writing.
struct HttpResponse {
    int status = 200;
    std::string body;
    bool close = false;
};

enum class Parse { incomplete, ok, bad_request, head_too_large, body_too_large, not_implemented };

namespace detail {

inline bool is_token_char(char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

inline bool is_token(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s) {
        if (!is_token_char(c)) return false;
    }
    return true;
}

inline std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    return out;
}

inline std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

inline bool equals_ignoring_case(std::string_view a, std::string_view b) { return lower(a) == lower(b); }

}  // namespace detail

/// Parses one request from the front of `buffer`. On Parse::ok fills `out` and sets `consumed` to the
/// bytes it used (head and body). Parse::incomplete means "read more"; every other result means "answer
/// with an error and close".
inline Parse parse_request(std::string_view buffer, HttpRequest& out, std::size_t& consumed) {
    const std::size_t head_end = buffer.find("\r\n\r\n");
    if (head_end == std::string_view::npos) {
        return buffer.size() > max_head_bytes ? Parse::head_too_large : Parse::incomplete;
    }
    if (head_end + 4 > max_head_bytes) return Parse::head_too_large;
    std::string_view head = buffer.substr(0, head_end);

    const std::size_t line_end = head.find("\r\n");
    const std::string_view line = head.substr(0, line_end);
    head = line_end == std::string_view::npos ? std::string_view() : head.substr(line_end + 2);

    const std::size_t sp1 = line.find(' ');
    const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
        return Parse::bad_request;
    }
    const std::string_view method = line.substr(0, sp1);
    const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string_view version = line.substr(sp2 + 1);
    if (!detail::is_token(method) || target.empty() || target.front() != '/') return Parse::bad_request;
    for (char c : target) {
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return Parse::bad_request;
    }
    if (version != "HTTP/1.1" && version != "HTTP/1.0") return Parse::bad_request;

    HttpRequest request;
    request.method = std::string(method);
    request.target = std::string(target);
    const std::size_t question = target.find('?');
    request.path = std::string(target.substr(0, question));
    if (question != std::string_view::npos) request.query = std::string(target.substr(question + 1));
    request.version = std::string(version);

    std::optional<std::string_view> connection;
    std::size_t content_length = 0;
    bool has_length = false;
    while (!head.empty()) {
        const std::size_t end = head.find("\r\n");
        const std::string_view field = head.substr(0, end);
        head = end == std::string_view::npos ? std::string_view() : head.substr(end + 2);
        const std::size_t colon = field.find(':');
        if (colon == std::string_view::npos || !detail::is_token(field.substr(0, colon))) {
            return Parse::bad_request;
        }
        std::string name = detail::lower(field.substr(0, colon));
        const std::string_view value = detail::trim(field.substr(colon + 1));
        if (name == "transfer-encoding") return Parse::not_implemented;
        if (name == "content-length") {
            if (has_length || value.empty() || value.size() > 9) return Parse::bad_request;
            std::size_t n = 0;
            for (char c : value) {
                if (c < '0' || c > '9') return Parse::bad_request;
                n = n * 10 + static_cast<std::size_t>(c - '0');
            }
            if (n > max_body_bytes) return Parse::body_too_large;
            content_length = n;
            has_length = true;
        }
        request.headers.emplace_back(std::move(name), std::string(value));
        if (request.headers.back().first == "connection") connection = request.headers.back().second;
    }

    const std::size_t total = head_end + 4 + content_length;
    if (buffer.size() < total) return Parse::incomplete;
    request.body = std::string(buffer.substr(head_end + 4, content_length));
    if (request.version == "HTTP/1.1") {
        request.keep_alive = !(connection && detail::equals_ignoring_case(*connection, "close"));
    } else {
        request.keep_alive = connection && detail::equals_ignoring_case(*connection, "keep-alive");
    }
    out = std::move(request);
    consumed = total;
    return Parse::ok;
}

inline const char* reason_phrase(int status) {
    switch (status) {
        case 200:
            return "OK";
        case 400:
            return "Bad Request";
        case 404:
            return "Not Found";
        case 405:
            return "Method Not Allowed";
        case 413:
            return "Payload Too Large";
        case 431:
            return "Request Header Fields Too Large";
        case 500:
            return "Internal Server Error";
        case 501:
            return "Not Implemented";
        default:
            return "Unknown";
    }
}

/// The bytes of `response`, with Content-Length and a Connection header.
inline std::string serialize(const HttpResponse& response, bool keep_alive) {
    std::string out;
    out.reserve(128 + response.body.size());
    out += "HTTP/1.1 ";
    out += std::to_string(response.status);
    out += ' ';
    out += reason_phrase(response.status);
    out += "\r\nContent-Type: text/plain\r\nContent-Length: ";
    out += std::to_string(response.body.size());
    out += keep_alive ? "\r\nConnection: keep-alive\r\n\r\n" : "\r\nConnection: close\r\n\r\n";
    out += response.body;
    return out;
}

/// Writes all of `data` to `fd` (blocking or not), waiting at most write_timeout_ms for the peer to
/// make room each time. False when the peer is gone or too slow.
inline bool write_all(int fd, std::string_view data) {
    while (!data.empty()) {
        const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n > 0) {
            data.remove_prefix(static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            pollfd p{fd, POLLOUT, 0};
            const int ready = ::poll(&p, 1, write_timeout_ms);
            if (ready > 0 || (ready < 0 && errno == EINTR)) continue;
        }
        return false;
    }
    return true;
}

/// The answer to a request that failed to parse (`parsed` is neither Parse::ok nor Parse::incomplete):
/// 431, 413, 501 or 400, with the reason as its body.
inline HttpResponse error_response(Parse parsed) {
    HttpResponse error;
    error.status = parsed == Parse::head_too_large    ? 431
                   : parsed == Parse::body_too_large  ? 413
                   : parsed == Parse::not_implemented ? 501
                                                      : 400;
    error.body = std::string(reason_phrase(error.status)) + "\n";
    error.close = true;
    return error;
}

/// What to do with a connection after its buffered requests were answered.
enum class Next { read_more, close };

/// Answers every complete request at the front of `buffer`, removing them from it. A request that fails
/// to parse is answered here with error_response() and closes the connection. Each parsed one goes to
/// `respond(std::string_view raw, HttpRequest&& request) -> bool`, where `raw` is its bytes as received
/// (head and body); `respond` writes the answer to `fd` itself and returns whether the connection stays
/// open. Returns Next::close when it must be closed, otherwise Next::read_more.
template <class Respond>
Next respond_buffered(int fd, std::string& buffer, Respond& respond) {
    std::size_t offset = 0;
    Next next = Next::read_more;
    while (next == Next::read_more) {
        HttpRequest request;
        std::size_t consumed = 0;
        const std::string_view rest = std::string_view(buffer).substr(offset);
        const Parse parsed = parse_request(rest, request, consumed);
        if (parsed == Parse::incomplete) break;
        if (parsed != Parse::ok) {
            write_all(fd, serialize(error_response(parsed), false));
            return Next::close;
        }
        if (!respond(rest.substr(0, consumed), std::move(request))) next = Next::close;
        offset += consumed;
    }
    buffer.erase(0, offset);
    return next;
}

namespace detail {

/// The `respond` of respond_buffered() for `handler(HttpRequest&&) -> HttpResponse` (an exception becomes
/// a 500 that closes): keeps the connection open unless the request or the response asks for close, the
/// write fails, or `stopping` is set.
template <class Handler>
auto responder(int fd, Handler& handler, const std::atomic<bool>& stopping) {
    return [fd, &handler, &stopping](std::string_view, HttpRequest&& request) {
        const bool keep_alive = request.keep_alive;
        HttpResponse response;
        try {
            response = handler(std::move(request));
        } catch (...) {
            response = HttpResponse{500, "Internal Server Error\n", true};
        }
        const bool keep = keep_alive && !response.close && !stopping.load(std::memory_order_relaxed);
        return write_all(fd, serialize(response, keep)) && keep;
    };
}

}  // namespace detail

/// Answers every complete request at the front of `buffer` with `handler(HttpRequest&&) -> HttpResponse`,
/// removing them from it. Returns Next::close when the connection must be closed (error answered, peer
/// asked for close, write failed, or `stopping` is set), otherwise Next::read_more.
template <class Handler>
Next answer_buffered(int fd, std::string& buffer, Handler& handler, const std::atomic<bool>& stopping) {
    auto respond = detail::responder(fd, handler, stopping);
    return respond_buffered(fd, buffer, respond);
}

/// Serves one connection (a blocking or non-blocking socket) until the peer closes it, an error, an idle
/// timeout (idle_timeout_ms without receiving anything), or `stopping`
/// (checked at least every 100 ms while waiting; a request being answered is finished first). Every
/// request is answered as by respond_buffered(fd, buffer, respond). Does not close `fd`. Never throws
/// (an exception from `respond`, e.g. out of memory, drops the connection).
template <class Respond>
void serve_requests(int fd, Respond&& respond, const std::atomic<bool>& stopping) noexcept {
    try {
        std::string buffer;
        char chunk[16 * 1024];
        auto idle_since = std::chrono::steady_clock::now();
        while (!stopping.load(std::memory_order_relaxed)) {
            pollfd p{fd, POLLIN, 0};
            const int ready = ::poll(&p, 1, 100);
            if (ready < 0 && errno != EINTR) return;
            if (ready <= 0) {
                if (std::chrono::steady_clock::now() - idle_since >
                    std::chrono::milliseconds(idle_timeout_ms)) {
                    return;
                }
                continue;
            }
            const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
            if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
            if (n <= 0) return;  // peer closed or reset: close quietly
            buffer.append(chunk, static_cast<std::size_t>(n));
            if (respond_buffered(fd, buffer, respond) == Next::close) return;
            idle_since = std::chrono::steady_clock::now();
        }
    } catch (...) {
        // Out of memory while buffering: drop the connection, keep the server.
    }
}

/// serve_requests() answering with `handler(HttpRequest&&) -> HttpResponse`, as answer_buffered() does.
template <class Handler>
void serve_connection(int fd, Handler&& handler, const std::atomic<bool>& stopping) noexcept {
    serve_requests(fd, detail::responder(fd, handler, stopping), stopping);
}

}  // namespace servers
