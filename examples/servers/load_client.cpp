// load_client: the proof that requests never mix. Opens C concurrent keep-alive connections to
// 127.0.0.1:PORT (a thread each); each sends R requests `GET /whoami?id=N&delay_ms=D` with an id unique
// across the whole run and a random delay 0..max, and checks that the answer names its own id in BOTH
// fields (`id=N g=N`): the request as the server's globals saw it, and what the request stored in `g`.
// Any other answer is a mismatch (a contamination). A connection the server closes is reopened; a
// failed connect, a bad status, a malformed or missing answer is an error.
//
//   load_client --port 8080 --connections 16 --requests-per-connection 1000 --max-delay-ms 1
//
// Prints one line and exits 0 only when there was no mismatch and no error:
//   requests=16000 mismatches=0 errors=0 throughput=9876/s p50=0.61ms p99=1.90ms
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

struct Settings {
    int port = 0;
    int connections = 16;
    int requests = 1000;
    int max_delay_ms = 1;
    int timeout_ms = 30'000;  // per response
    bool verbose = false;
};

[[noreturn]] void usage(const char* self, const char* bad) {
    if (bad != nullptr) std::fprintf(stderr, "%s: bad argument '%s'\n", self, bad);
    std::fprintf(stderr,
                 "usage: %s --port N [--connections C] [--requests-per-connection R] [--max-delay-ms D] "
                 "[--timeout-ms T] [--verbose]\n",
                 self);
    std::exit(2);
}

Settings parse(int argc, char** argv) {
    Settings s;
    int i = 1;
    while (i < argc) {
        const std::string_view arg = argv[i];
        if (arg == "--verbose") {
            s.verbose = true;
            ++i;
            continue;
        }
        if (arg == "--help" || arg == "-h") usage(argv[0], nullptr);
        int* slot = arg == "--port"                      ? &s.port
                    : arg == "--connections"             ? &s.connections
                    : arg == "--requests-per-connection" ? &s.requests
                    : arg == "--max-delay-ms"            ? &s.max_delay_ms
                    : arg == "--timeout-ms"              ? &s.timeout_ms
                                                         : nullptr;
        if (slot == nullptr || i + 1 >= argc) usage(argv[0], argv[i]);
        char* end = nullptr;
        const long value = std::strtol(argv[i + 1], &end, 10);
        if (*end != '\0' || value < 0 || value > 100'000'000) usage(argv[0], argv[i + 1]);
        *slot = static_cast<int>(value);
        i += 2;
    }
    if (s.port <= 0 || s.port > 65535 || s.connections < 1) usage(argv[0], "--port/--connections");
    return s;
}

int connect_loopback(int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
        ::close(fd);
        return -1;
    }
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

bool send_all(int fd, std::string_view data) {
    while (!data.empty()) {
        const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

struct Response {
    int status = 0;
    bool close = false;
    std::string body;
};

enum class Read { ok, closed_before_response, failed };

/// Reads one response (Content-Length framed) into `out`, keeping bytes after it in `buffer`.
Read read_response(int fd, std::string& buffer, Response& out, int timeout_ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    char chunk[4096];
    for (;;) {
        const std::size_t head_end = buffer.find("\r\n\r\n");
        if (head_end != std::string::npos) {
            const std::string head = buffer.substr(0, head_end);
            if (head.compare(0, 9, "HTTP/1.1 ") != 0 || head.size() < 12) return Read::failed;
            out.status = std::atoi(head.c_str() + 9);
            std::string lower = head;
            std::transform(lower.begin(), lower.end(), lower.begin(),
                           [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
            const std::size_t length_at = lower.find("\r\ncontent-length:");
            if (length_at == std::string::npos) return Read::failed;
            const std::size_t length = std::strtoul(lower.c_str() + length_at + 17, nullptr, 10);
            out.close = lower.find("\r\nconnection: close") != std::string::npos;
            if (buffer.size() >= head_end + 4 + length) {
                out.body = buffer.substr(head_end + 4, length);
                buffer.erase(0, head_end + 4 + length);
                return Read::ok;
            }
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return Read::failed;
        pollfd p{fd, POLLIN, 0};
        const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) return Read::failed;
        const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return buffer.empty() ? Read::closed_before_response : Read::failed;
        buffer.append(chunk, static_cast<std::size_t>(n));
    }
}

/// The value of `key=` in a whoami body ("id=5 g=5 pid=.. tid=.."), or "" when absent.
std::string_view field(std::string_view body, std::string_view key) {
    std::size_t at = 0;
    while ((at = body.find(key, at)) != std::string_view::npos) {
        if (at == 0 || body[at - 1] == ' ') {
            const std::size_t start = at + key.size();
            const std::size_t end = body.find_first_of(" \n", start);
            return body.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
        }
        at += key.size();
    }
    return {};
}

struct Tally {
    long requests = 0;
    long mismatches = 0;
    long errors = 0;
    std::vector<double> latencies_ms;
};

void run_connection(const Settings& s, int index, Tally& tally) {
    std::mt19937 random(static_cast<unsigned>(index) * 2654435761u + 12345u);
    std::uniform_int_distribution<int> delay(0, s.max_delay_ms);
    tally.latencies_ms.reserve(static_cast<std::size_t>(s.requests));
    int fd = -1;
    std::string buffer;
    for (int r = 0; r < s.requests; ++r) {
        const long long id = static_cast<long long>(index) * s.requests + r + 1;
        const std::string request = "GET /whoami?id=" + std::to_string(id) +
                                    "&delay_ms=" + std::to_string(delay(random)) +
                                    " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        Response response;
        Read result = Read::failed;
        const auto start = std::chrono::steady_clock::now();
        // One retry, only for a kept-alive connection that the server closed between two requests.
        for (int attempt = 0; attempt < 2; ++attempt) {
            const bool reused = fd >= 0;
            if (fd < 0) {
                fd = connect_loopback(s.port);
                buffer.clear();
                if (fd < 0) break;
            }
            result = send_all(fd, request) ? read_response(fd, buffer, response, s.timeout_ms) : Read::failed;
            if (result == Read::ok) break;
            ::close(fd);
            fd = -1;
            if (!(reused && result == Read::closed_before_response)) break;
        }
        const auto elapsed =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start);
        ++tally.requests;
        if (result != Read::ok || response.status != 200) {
            ++tally.errors;
            if (s.verbose || tally.errors <= 3) {
                std::fprintf(stderr, "error: id=%lld: %s (status %d)\n", id,
                             result == Read::ok ? "bad status" : "no response", response.status);
            }
            continue;
        }
        tally.latencies_ms.push_back(elapsed.count());
        const std::string expected = std::to_string(id);
        if (field(response.body, "id=") != expected || field(response.body, "g=") != expected) {
            ++tally.mismatches;
            std::fprintf(stderr, "MISMATCH: sent id=%lld, got: %s", id, response.body.c_str());
        }
        if (response.close && fd >= 0) {
            ::close(fd);
            fd = -1;
        }
    }
    if (fd >= 0) ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
    ::signal(SIGPIPE, SIG_IGN);
    const Settings s = parse(argc, argv);
    std::vector<Tally> tallies(static_cast<std::size_t>(s.connections));
    const auto start = std::chrono::steady_clock::now();
    {
        std::vector<std::thread> threads;
        threads.reserve(tallies.size());
        for (int i = 0; i < s.connections; ++i) {
            threads.emplace_back(run_connection, std::cref(s), i,
                                 std::ref(tallies[static_cast<std::size_t>(i)]));
        }
        for (std::thread& t : threads) t.join();
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    Tally total;
    for (Tally& t : tallies) {
        total.requests += t.requests;
        total.mismatches += t.mismatches;
        total.errors += t.errors;
        total.latencies_ms.insert(total.latencies_ms.end(), t.latencies_ms.begin(), t.latencies_ms.end());
    }
    std::sort(total.latencies_ms.begin(), total.latencies_ms.end());
    auto percentile = [&](double p) {
        if (total.latencies_ms.empty()) return 0.0;
        const auto at = static_cast<std::size_t>(p * static_cast<double>(total.latencies_ms.size() - 1));
        return total.latencies_ms[at];
    };
    std::printf("requests=%ld mismatches=%ld errors=%ld throughput=%.0f/s p50=%.2fms p99=%.2fms\n",
                total.requests, total.mismatches, total.errors,
                seconds > 0 ? static_cast<double>(total.requests) / seconds : 0.0, percentile(0.50),
                percentile(0.99));
    return total.mismatches == 0 && total.errors == 0 ? 0 : 1;
}
