// libFuzzer target: the model interpreter of tests/model/interpreter.hpp driven by the fuzzer's bytes.
// Byte 0 picks the number of worker threads (1 to 4); then every 4 bytes are one operation (kind, thread,
// a, b; see ctxmodel::Kind). Any mismatch with the reference model prints the sequence and aborts, which
// libFuzzer reports as a crash (and saves the input). Build and run: bash tests/fuzz/run.sh
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../model/interpreter.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const int threads = 1 + data[0] % 4;
    const std::vector<ctxmodel::Op> ops = ctxmodel::decode(data + 1, size - 1, 1024);
    const ctxmodel::Result result = ctxmodel::run_ops(ops, threads);
    if (!result.ok) {
        std::fprintf(stderr, "ctxlocal model mismatch (%d threads): %s\n%s", threads, result.message.c_str(),
                     ctxmodel::describe(ops, threads).c_str());
        std::abort();
    }
    return 0;
}
