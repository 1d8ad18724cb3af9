// grpc_client: drives grpc_server's WhoAmI service (whoami.proto) for the e2e tests (tests/e2e/).
//
//   grpc_client load --port P [--threads 16] [--calls 200] [--max-delay-ms 1]
//       Each thread makes `calls` calls of Ask on its own channel, each with a unique x-request-id and a
//       random delay; a reply whose request_id or g_id is not the call's own id is a mismatch. Prints
//       `requests=N mismatches=M errors=E throughput=T/s` and exits 0 only when M and E are 0.
//   grpc_client cleanup --port P
//       A handler that leaks two contexts, then one that throws: every later call on their thread must
//       start clean, and the server must report exactly the leaked contexts. Exits 0 when all checks pass.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "whoami.grpc.pb.h"

namespace {

using ctxlocal_example::AskReply;
using ctxlocal_example::AskRequest;
using ctxlocal_example::WhoAmI;

struct Options {
    std::string mode;
    int port = 0;
    int threads = 16;
    int calls = 200;
    int max_delay_ms = 1;
};

Options parse(int argc, char** argv) {
    Options o;
    if (argc >= 2) o.mode = argv[1];
    for (int i = 2; i + 1 < argc; i += 2) {
        const std::string name = argv[i];
        const int value = std::atoi(argv[i + 1]);
        if (name == "--port")
            o.port = value;
        else if (name == "--threads")
            o.threads = value;
        else if (name == "--calls")
            o.calls = value;
        else if (name == "--max-delay-ms")
            o.max_delay_ms = value;
        else
            o.mode.clear();
    }
    if ((o.mode != "load" && o.mode != "cleanup") || o.port <= 0 || o.threads <= 0 || o.calls <= 0 ||
        o.max_delay_ms < 0 || argc % 2 != 0) {
        std::fprintf(stderr, "usage: %s load|cleanup --port P [--threads N] [--calls N] [--max-delay-ms N]\n",
                     argv[0]);
        std::exit(2);
    }
    return o;
}

std::unique_ptr<WhoAmI::Stub> connect(int port) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own per channel
    return WhoAmI::NewStub(grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port),
                                                     grpc::InsecureChannelCredentials(), args));
}

/// Calls `method` with x-request-id `id` (none when empty). The status, and the reply in `reply`.
template <class Method>
grpc::Status call(WhoAmI::Stub& stub, Method method, const std::string& id, long delay_ms, AskReply& reply) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    if (!id.empty()) context.AddMetadata("x-request-id", id);
    AskRequest request;
    request.set_delay_ms(delay_ms);
    return (stub.*method)(&context, request, &reply);
}

long leaks(WhoAmI::Stub& stub) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    ctxlocal_example::StatsReply reply;
    const grpc::Status status = stub.Stats(&context, ctxlocal_example::StatsRequest(), &reply);
    return status.ok() ? static_cast<long>(reply.leaks()) : -1;
}

int run_load(const Options& o) {
    std::atomic<long> requests{0}, mismatches{0}, errors{0};
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < o.threads; ++t) {
        threads.emplace_back([&, t] {
            const auto stub = connect(o.port);
            std::mt19937 random(static_cast<unsigned>(t) * 7919u + 1u);
            std::uniform_int_distribution<int> delay(0, o.max_delay_ms);
            for (int i = 0; i < o.calls; ++i) {
                const std::string id = std::to_string(t) + "-" + std::to_string(i);
                AskReply reply;
                const grpc::Status status = call(*stub, &WhoAmI::Stub::Ask, id, delay(random), reply);
                requests.fetch_add(1);
                if (!status.ok()) {
                    if (errors.fetch_add(1) < 5)
                        std::fprintf(stderr, "error: %s\n", status.error_message().c_str());
                } else if (reply.request_id() != id || reply.g_id() != id) {
                    if (mismatches.fetch_add(1) < 5) {
                        std::fprintf(stderr, "MISMATCH: sent %s, got request_id=%s g_id=%s\n", id.c_str(),
                                     reply.request_id().c_str(), reply.g_id().c_str());
                    }
                }
            }
        });
    }
    for (auto& thread : threads) thread.join();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("requests=%ld mismatches=%ld errors=%ld throughput=%.0f/s\n", requests.load(),
                mismatches.load(), errors.load(),
                static_cast<double>(requests.load()) / std::max(seconds, 1e-9));
    return mismatches.load() == 0 && errors.load() == 0 && requests.load() == long{o.threads} * o.calls ? 0
                                                                                                        : 1;
}

int failures = 0;

void check(bool ok, const std::string& what) {
    std::printf("%s: %s\n", ok ? "ok" : "FAILED", what.c_str());
    if (!ok) ++failures;
}

/// Calls Ask without an id until one runs on thread `tid` (at most 500 calls); each must start clean.
void expect_clean_on(WhoAmI::Stub& stub, long tid, const char* after) {
    for (int attempt = 0; attempt < 500; ++attempt) {
        AskReply reply;
        const grpc::Status status = call(stub, &WhoAmI::Stub::Ask, "", 0, reply);
        if (!status.ok() || reply.request_id() != "<none>" || reply.g_id() != "<none>") {
            check(false, std::string("call after ") + after +
                             " starts clean (request_id=" + reply.request_id() + " g_id=" + reply.g_id() +
                             " status " + status.error_message() + ")");
            return;
        }
        if (tid == 0 || reply.tid() == tid) {
            check(true, std::string("call ") + std::to_string(attempt + 1) + " after " + after +
                            " ran on its thread and started clean");
            return;
        }
    }
    check(false, std::string("a call after ") + after + " ran on its thread (not meaningful otherwise)");
}

int run_cleanup(const Options& o) {
    const auto stub = connect(o.port);
    const long before = leaks(*stub);
    check(before >= 0, "Stats answers");

    AskReply reply;
    grpc::Status status = call(*stub, &WhoAmI::Stub::Ask, "41", 0, reply);
    check(status.ok() && reply.request_id() == "41" && reply.g_id() == "41", "baseline call sees its id");

    status = call(*stub, &WhoAmI::Stub::Leak, "777", 0, reply);
    check(status.ok(), "Leak answers");
    const long leak_tid = reply.tid();
    expect_clean_on(*stub, leak_tid, "a handler that leaked two contexts");
    // The two leaked contexts, and the call's own request context: the adapter pops it by destroying it
    // once the handler left contexts above it (see ctxlocal/integration/grpc.hpp).
    const long after_leak = leaks(*stub);
    check(after_leak - before == 3, "leaked_context reported 3 times (2 leaked + the call's own), got " +
                                        std::to_string(after_leak - before));

    status = call(*stub, &WhoAmI::Stub::Fail, "13", 0, reply);
    check(status.error_code() == grpc::StatusCode::UNKNOWN, "a throwing handler gives UNKNOWN");
    for (int i = 0; i < 20; ++i) {
        status = call(*stub, &WhoAmI::Stub::Ask, "", 0, reply);
        if (!status.ok() || reply.g_id() != "<none>" || reply.request_id() != "<none>") {
            check(false, "calls after a throwing handler start clean (g_id=" + reply.g_id() + ")");
            break;
        }
    }
    check(leaks(*stub) == after_leak, "a throwing handler leaves nothing pushed (no new leaked_context)");

    status = call(*stub, &WhoAmI::Stub::Ask, "42", 0, reply);
    check(status.ok() && reply.request_id() == "42" && reply.g_id() == "42", "a later call sees its own id");
    std::printf("%s: %d failed\n", failures == 0 ? "PASSED" : "FAILED", failures);
    return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse(argc, argv);
    return o.mode == "load" ? run_load(o) : run_cleanup(o);
}
