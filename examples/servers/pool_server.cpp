// pool_server: a fixed pool of threads reused across requests of every connection, driven by one epoll
// loop (the model where stale per-thread state would leak into someone else's request if anything did).
//
// The main thread waits for readable connections; a pool thread takes one, answers every complete
// request buffered on it, and re-arms it (EPOLLONESHOT: a connection is on one pool thread at a time,
// but its successive requests may run on different threads, interleaved with other connections').
// ctxlocal here: every request is bound with web::handle(), which pops whatever the handler left pushed,
// so the pool thread is clean after every request and the next one starts clean.
//
//   pool_server --port 0 --threads 8
// Built as pool_server_explicit (CTXLOCAL_SERVERS_EXPLICIT), the same server without ctxlocal.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "app.hpp"
#include "http.hpp"
#include "server.hpp"

using namespace servers;

namespace {

struct Connection {
    int fd;
    std::string buffer;
};

/// Connections ready to read, handed from the epoll loop to the pool.
class ReadyQueue {
public:
    void put(Connection* c) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            ready_.push_back(c);
        }
        wake_.notify_one();
    }
    /// The next ready connection, or null once closed and drained.
    Connection* take() {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return closed_ || !ready_.empty(); });
        if (ready_.empty()) return nullptr;
        Connection* c = ready_.front();
        ready_.pop_front();
        return c;
    }
    void close() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            closed_ = true;
        }
        wake_.notify_all();
    }
    /// Hands a connection a pool thread has finished with back to epoll (EPOLLONESHOT re-arm). Done under
    /// the queue's mutex, which put() takes for every event, so that the next thread to get this
    /// connection visibly happens after this one let go of it (ThreadSanitizer does not treat
    /// EPOLL_CTL_MOD as a release; the kernel orders it anyway). False when epoll refused it.
    bool rearm(int epoll, Connection* c) {
        epoll_event event{};
        event.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
        event.data.ptr = c;
        std::lock_guard<std::mutex> lock(mutex_);
        return ::epoll_ctl(epoll, EPOLL_CTL_MOD, c->fd, &event) == 0;
    }

private:
    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<Connection*> ready_;
    bool closed_ = false;
};

/// Connections currently open, so that shutdown can free them.
class OpenSet {
public:
    void add(Connection* c) {
        std::lock_guard<std::mutex> lock(mutex_);
        open_.push_back(c);
    }
    void remove_and_close(Connection* c) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            for (auto& slot : open_) {
                if (slot == c) {
                    slot = open_.back();
                    open_.pop_back();
                    break;
                }
            }
        }
        ::close(c->fd);
        delete c;
    }
    void close_all() {
        std::lock_guard<std::mutex> lock(mutex_);
        for (Connection* c : open_) {
            ::close(c->fd);
            delete c;
        }
        open_.clear();
    }

private:
    std::mutex mutex_;
    std::vector<Connection*> open_;
};

/// Reads what is available on a non-blocking connection and answers it. False: close it.
bool on_readable(App& app, Connection& c) {
    char chunk[16 * 1024];
    for (;;) {
        const ssize_t n = ::recv(c.fd, chunk, sizeof chunk, 0);
        if (n > 0) {
            c.buffer.append(chunk, static_cast<std::size_t>(n));
            if (c.buffer.size() > max_head_bytes + max_body_bytes + sizeof chunk) break;  // parser rejects it
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        return false;  // peer closed or reset: close quietly
    }
    auto handler = [&app](HttpRequest&& r) { return serve(app, std::move(r)); };
    return answer_buffered(c.fd, c.buffer, handler, stopping) == Next::read_more;
}

}  // namespace

int main(int argc, char** argv) {
    const Options options = parse_options(argc, argv, "[--port N] [--threads N]");
    install_stop_signals();
    init_app();
    App app;
    const int listener = listen_loopback(options.port, true);
    const int epoll = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll < 0) die("epoll_create1");
    epoll_event listen_event{};
    listen_event.events = EPOLLIN;
    listen_event.data.ptr = nullptr;
    if (::epoll_ctl(epoll, EPOLL_CTL_ADD, listener, &listen_event) != 0) die("epoll_ctl");
    announce(bound_port(listener));

    ReadyQueue ready;
    OpenSet open;
    std::vector<std::thread> pool;
    for (int i = 0; i < options.threads; ++i) {
        pool.emplace_back([&] {
            while (Connection* c = ready.take()) {
                if (!on_readable(app, *c) || !ready.rearm(epoll, c)) open.remove_and_close(c);
            }
        });
    }

    epoll_event events[64];
    while (!stopping.load()) {
        const int n = ::epoll_wait(epoll, events, 64, 100);
        for (int i = 0; i < n; ++i) {
            auto* c = static_cast<Connection*>(events[i].data.ptr);
            if (c != nullptr) {
                ready.put(c);
                continue;
            }
            for (;;) {  // the listener: accept everything pending
                const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (fd < 0) break;
                tune_connection(fd);
                auto* connection = new Connection{fd, {}};
                open.add(connection);
                epoll_event event{};
                event.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
                event.data.ptr = connection;
                if (::epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) != 0) open.remove_and_close(connection);
            }
        }
    }
    ready.close();  // the pool finishes the requests it holds, then exits
    for (std::thread& t : pool) t.join();
    open.close_all();
    ::close(epoll);
    ::close(listener);
    return 0;
}
