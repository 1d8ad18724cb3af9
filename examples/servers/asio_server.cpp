// asio_server: the same app on standalone asio (Debian: libasio-dev) with C++20 coroutines: one coroutine
// per connection, K threads (--threads, default 4) running one io_context. Every request is its own task:
// web::make_storage() makes a Storage with the request bound in it, and the request's coroutine is
// co_spawned on ctxlocal::bind_executor(connection strand, storage), so it is inside that Storage every
// time it runs. Its delay is awaited on an asio::steady_timer, so it usually resumes on another thread
// than the one it started on; web::request and web::g still read its own request there, through the
// same parameterless whoami() as every other server. Each /whoami body also says `threads=K`: on how
// many distinct OS threads the request ran.
//
// Stopping: SIGTERM/SIGINT (an asio::signal_set) close the listener and every connection waiting for a
// request (idle, or part-way through one); a request being answered is finished first, answered with
// `Connection: close`. Then io_context::run() runs out of work and the server exits 0. Connections idle
// for idle_timeout_ms are closed by a sweep once a second.
//
//   asio_server --port 0 --threads 4
// Built as asio_server_explicit (CTXLOCAL_SERVERS_EXPLICIT), the same server without ctxlocal: the
// request and its id are passed to the coroutine as parameters (the baseline of overhead.sh).
#include <signal.h>

#include <algorithm>
#include <array>
#include <asio.hpp>
#include <chrono>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "app.hpp"
#include "http.hpp"
#include "server.hpp"

#ifndef CTXLOCAL_SERVERS_EXPLICIT
#include <ctxlocal/asio.hpp>
#endif

using namespace servers;

namespace {

using Strand = asio::strand<asio::io_context::executor_type>;

/// std::this_thread::get_id() through a pointer the compiler cannot see through: a coroutine must read
/// the id of the thread it runs on after each resume, and clang may otherwise reuse a value it read
/// before a co_await (pthread_self() is declared const).
std::thread::id (*volatile current_thread_id)() = [] { return std::this_thread::get_id(); };

/// The distinct threads one request ran on, recorded at each resume point.
class ThreadsSeen {
public:
    void record() {
        const std::thread::id id = current_thread_id();
        if (std::find(ids_.begin(), ids_.begin() + count_, id) == ids_.begin() + count_ &&
            count_ < ids_.size()) {
            ids_[count_++] = id;
        }
    }
    std::size_t count() const noexcept { return count_; }

private:
    std::array<std::thread::id, 4> ids_{};
    std::size_t count_ = 0;
};

/// `body` (a whoami answer, ending in a newline) with ` threads=K` added before the newline.
std::string with_threads(std::string body, const ThreadsSeen& threads) {
    if (!body.empty() && body.back() == '\n') body.pop_back();
    return body + " threads=" + std::to_string(threads.count()) + "\n";
}

#ifndef CTXLOCAL_SERVERS_EXPLICIT

/// GET /whoami, run inside the request's Storage: stores the id in g, awaits the delay on a timer made
/// from the coroutine's executor (so the wait completes, and the coroutine resumes, inside the Storage,
/// on any thread), then answers from the globals.
asio::awaitable<HttpResponse> whoami_async() {
    ThreadsSeen threads;
    threads.record();
    const Params p = read_params(*web::request);
    if (!p.valid) co_return text(400, "bad id or delay_ms\n");
    if (p.id) web::g->set("id", *p.id);
    if (p.delay_ms > 0) {
        asio::steady_timer timer(co_await asio::this_coro::executor, std::chrono::milliseconds(p.delay_ms));
        co_await timer.async_wait(asio::use_awaitable);
        threads.record();
    }
    co_return text(200, with_threads(whoami(), threads));
}

/// Serves one request in a Storage of its own. /whoami runs as a coroutine on the connection's strand
/// wrapped by ctxlocal::bind_executor; every other path is answered at once by the app's route() (the
/// Storage is released right there, so a /leak's contexts are popped and reported on the thread that
/// leaked them, while they still exist).
asio::awaitable<HttpResponse> answer(App& app, const Strand& strand, HttpRequest&& request) {
    const bool async = request.path == "/whoami" && request.method == "GET";
    ctxlocal::Storage storage = web::make_storage(app, std::move(request));
    if (!async) co_return storage.run([] { return route(); });
    co_return co_await asio::co_spawn(ctxlocal::bind_executor(strand, storage), whoami_async(),
                                      asio::use_awaitable);
}

#else  // CTXLOCAL_SERVERS_EXPLICIT: the same coroutine, the request and its id passed explicitly

asio::awaitable<HttpResponse> whoami_async(std::shared_ptr<HttpRequest> request) {
    ThreadsSeen threads;
    threads.record();
    const Params p = read_params(*request);
    if (!p.valid) co_return text(400, "bad id or delay_ms\n");
    const std::optional<long long> g_id = p.id;
    if (p.delay_ms > 0) {
        asio::steady_timer timer(co_await asio::this_coro::executor, std::chrono::milliseconds(p.delay_ms));
        co_await timer.async_wait(asio::use_awaitable);
        threads.record();
    }
    co_return text(200, with_threads(whoami(*request, g_id), threads));
}

asio::awaitable<HttpResponse> answer(App& app, const Strand& strand, HttpRequest&& request) {
    if (request.path != "/whoami" || request.method != "GET") co_return serve(app, std::move(request));
    co_return co_await asio::co_spawn(strand, whoami_async(std::make_shared<HttpRequest>(std::move(request))),
                                      asio::use_awaitable);
}

#endif

/// One client connection. Its coroutine and everything touching `socket`, `reading` and `idle_since`
/// run on `strand`.
struct Connection {
    explicit Connection(asio::io_context& ioc) : strand(asio::make_strand(ioc)), socket(strand) {}
    Strand strand;
    asio::ip::tcp::socket socket;
    bool reading = false;  // waiting for (more of) a request: may be closed at once on stop
    std::chrono::steady_clock::time_point idle_since = std::chrono::steady_clock::now();

    /// On the strand: closes the socket when it is waiting for a request and `stop` is set or it has
    /// been idle too long. The pending read then fails and the connection's coroutine ends.
    void close_if_idle(bool stop) {
        if (!reading || !socket.is_open()) return;
        if (stop ||
            std::chrono::steady_clock::now() - idle_since > std::chrono::milliseconds(idle_timeout_ms)) {
            asio::error_code ignored;
            socket.close(ignored);
        }
    }
};

/// The connections open now, so that stop and the idle sweep can reach them.
class OpenSet {
public:
    void add(const std::shared_ptr<Connection>& c) {
        std::lock_guard<std::mutex> lock(mutex_);
        open_.insert(c);
    }
    void remove(const std::shared_ptr<Connection>& c) {
        std::lock_guard<std::mutex> lock(mutex_);
        open_.erase(c);
    }
    /// Posts close_if_idle(stop) to every open connection's strand.
    void close_idle(bool stop) {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto& c : open_) asio::post(c->strand, [c, stop] { c->close_if_idle(stop); });
    }

private:
    std::mutex mutex_;
    std::unordered_set<std::shared_ptr<Connection>> open_;
};

/// Writes `data` whole; false when the peer is gone.
asio::awaitable<bool> write(Connection& c, const std::string& data) {
    asio::error_code error;
    co_await asio::async_write(c.socket, asio::buffer(data),
                               asio::redirect_error(asio::use_awaitable, error));
    co_return !error;
}

/// Serves one connection until the peer closes it, an error, `Connection: close`, or stop.
asio::awaitable<void> serve_connection(App& app, std::shared_ptr<Connection> c, OpenSet& open) {
    std::string buffer;
    std::array<char, 16 * 1024> chunk;
    bool keep_open = true;
    while (keep_open && !stopping.load(std::memory_order_relaxed)) {
        c->reading = true;
        c->idle_since = std::chrono::steady_clock::now();
        asio::error_code error;
        const std::size_t n = co_await c->socket.async_read_some(
            asio::buffer(chunk), asio::redirect_error(asio::use_awaitable, error));
        c->reading = false;
        if (error) break;  // peer closed or reset, or closed by stop or the idle sweep: close quietly
        buffer.append(chunk.data(), n);
        // Every complete request in the buffer, in order (pipelining).
        std::size_t offset = 0;
        while (keep_open) {
            HttpRequest request;
            std::size_t consumed = 0;
            const Parse parsed = parse_request(std::string_view(buffer).substr(offset), request, consumed);
            if (parsed == Parse::incomplete) break;
            if (parsed != Parse::ok) {
                co_await write(*c, serialize(error_response(parsed), false));
                keep_open = false;
                break;
            }
            offset += consumed;
            const bool keep_alive = request.keep_alive;
            HttpResponse response;
            try {
                response = co_await answer(app, c->strand, std::move(request));
            } catch (...) {
                response = HttpResponse{500, "Internal Server Error\n", true};
            }
            const bool keep = keep_alive && !response.close && !stopping.load(std::memory_order_relaxed);
            keep_open = co_await write(*c, serialize(response, keep)) && keep;
        }
        buffer.erase(0, offset);
    }
    asio::error_code ignored;
    c->socket.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    c->socket.close(ignored);
    open.remove(c);
}

/// Accepts connections until the acceptor is closed; each gets its own strand and coroutine.
asio::awaitable<void> accept_loop(asio::io_context& ioc, App& app, asio::ip::tcp::acceptor& acceptor,
                                  OpenSet& open) {
    for (;;) {
        auto c = std::make_shared<Connection>(ioc);
        asio::error_code error;
        co_await acceptor.async_accept(c->socket, asio::redirect_error(asio::use_awaitable, error));
        if (error) {
            if (!acceptor.is_open()) co_return;
            continue;  // e.g. out of descriptors: try again
        }
        c->socket.set_option(asio::ip::tcp::no_delay(true), error);
        open.add(c);
        asio::co_spawn(c->strand, serve_connection(app, c, open), asio::detached);
    }
}

/// Closes idle connections once a second, until stopped.
asio::awaitable<void> sweep_loop(asio::steady_timer& timer, OpenSet& open) {
    for (;;) {
        timer.expires_after(std::chrono::seconds(1));
        asio::error_code error;
        co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, error));
        if (error || stopping.load()) co_return;
        open.close_idle(false);
    }
}

}  // namespace

int main(int argc, char** argv) {
    const Options options = parse_options(argc, argv, "[--port N] [--threads N]", Options{0, 4, 2});
    ::signal(SIGPIPE, SIG_IGN);
    init_app();
    App app;

    asio::io_context ioc(options.threads);
    // The listener, the idle sweep and the signal handler share one strand (asio objects are not safe to
    // use from two threads at once).
    const Strand control = asio::make_strand(ioc);
    asio::ip::tcp::acceptor acceptor(control);
    acceptor.assign(asio::ip::tcp::v4(), listen_loopback(options.port, true));
    OpenSet open;
    asio::steady_timer sweep(control);
    asio::signal_set signals(control, SIGTERM, SIGINT);
    signals.async_wait([&](const asio::error_code& error, int) {
        if (error) return;
        stopping.store(true);
        asio::error_code ignored;
        acceptor.close(ignored);
        sweep.cancel();
        open.close_idle(true);
    });
    announce(acceptor.local_endpoint().port());

    asio::co_spawn(control, accept_loop(ioc, app, acceptor, open), asio::detached);
    asio::co_spawn(control, sweep_loop(sweep, open), asio::detached);
    std::vector<std::thread> threads;
    for (int i = 1; i < options.threads; ++i) threads.emplace_back([&] { ioc.run(); });
    ioc.run();
    for (std::thread& t : threads) t.join();
    return 0;
}
