// Model-based random testing (issue 6): random sequences of operations on Locals, LocalStacks, a
// LocalManager and contexts, run over several lockstep worker threads by tests/model/interpreter.hpp and
// checked after every step against a plain reference model: which values exist on which thread, which
// die (exactly, and on which thread), teardown order, wrong pops, thread exit.
//
// Budget: at least CTXLOCAL_MODEL_OPS applied operations in total (default 1,200,000; 150,000 under a
// sanitizer), split over the thread counts below. A failure prints the seed and a shrunk sequence;
// rerun one seed with   CTXLOCAL_MODEL_SEED=<seed> ./model_test -tc='Model.RandomSequences.<n>threads'
// CTXLOCAL_MODEL_SEED_BASE=<n> starts the seeds elsewhere (the default is fixed, so CI is reproducible).
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "model/interpreter.hpp"
#include "support/environment.hpp"

namespace {

using test_support::sanitized;

constexpr std::size_t ops_per_seed = 4000;
constexpr int thread_counts[] = {2, 3, 4};

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
    const char* text = std::getenv(name);
    if (text == nullptr || *text == '\0') return fallback;
    return std::strtoull(text, nullptr, 10);
}

std::size_t total_ops() { return env_number("CTXLOCAL_MODEL_OPS", sanitized ? 150000 : 1200000); }

/// Reports a failing sequence: the seed, the shrunk sequence and what went wrong on it.
void report_failure(std::uint64_t seed, int threads, const std::vector<ctxmodel::Op>& ops,
                    const ctxmodel::Result& result) {
    const std::vector<ctxmodel::Op> minimal = ctxmodel::shrink(ops, threads);
    const ctxmodel::Result again = ctxmodel::run_ops(minimal, threads);
    const std::string text =
        "model mismatch with seed " + std::to_string(seed) + ", " + std::to_string(threads) +
        " threads\n  first failure: " + result.message + "\n  minimal sequence (" +
        std::to_string(minimal.size()) + " operations) fails with: " + again.message + "\n" +
        ctxmodel::describe(minimal, threads) + "  rerun: CTXLOCAL_MODEL_SEED=" + std::to_string(seed) +
        " ./model_test -tc='Model.RandomSequences." + std::to_string(threads) + "threads'";
    std::fprintf(stderr, "%s\n", text.c_str());
    FAIL_CHECK(text);
}

/// Runs seeds until `target` operations were applied with `threads` workers (or the one seed of
/// CTXLOCAL_MODEL_SEED), failing with a shrunk sequence at the first mismatch.
void run_model(int threads, std::size_t target) {
    const std::uint64_t only = env_number("CTXLOCAL_MODEL_SEED", 0);
    const std::uint64_t base = env_number("CTXLOCAL_MODEL_SEED_BASE", 1);
    const auto start = std::chrono::steady_clock::now();
    std::size_t applied = 0;
    std::size_t seeds = 0;
    for (std::uint64_t i = 0; only != 0 ? i < 1 : applied < target; ++i) {
        const std::uint64_t seed = only != 0 ? only : (base + i) * 16 + static_cast<std::uint64_t>(threads);
        const std::vector<ctxmodel::Op> ops = ctxmodel::generate(seed, ops_per_seed, threads);
        const ctxmodel::Result result = ctxmodel::run_ops(ops, threads);
        ++seeds;
        applied += result.executed;
        if (!result.ok) {
            report_failure(seed, threads, ops, result);
            return;
        }
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    MESSAGE("model: " << applied << " operations applied, " << seeds << " seeds, " << threads << " threads, "
                      << seconds << " s");
    std::printf("model: %zu operations applied, %zu seeds, %d threads, %.2f s\n", applied, seeds, threads,
                seconds);
    if (only == 0) CHECK(applied >= target);
}

}  // namespace

TEST_CASE("Model.RandomSequences.2threads" * doctest::timeout(600)) {
    run_model(2, total_ops() / std::size(thread_counts));
}

TEST_CASE("Model.RandomSequences.3threads" * doctest::timeout(600)) {
    run_model(3, total_ops() / std::size(thread_counts));
}

TEST_CASE("Model.RandomSequences.4threads" * doctest::timeout(600)) {
    run_model(4, total_ops() / std::size(thread_counts));
}

// The checker itself: a test that cannot fail is a defect, so inject defects into the interpreter's real
// side and require the model to catch them and the shrinker to boil them down.

TEST_CASE("Model.Checker.catches_a_value_that_reset_did_not_destroy" * doctest::timeout(120)) {
    using namespace ctxmodel;
    bool caught = false;
    for (std::uint64_t seed = 1; seed <= 20 && !caught; ++seed) {
        const std::vector<Op> ops = generate(seed, 2000, 2);
        const Result result = run_ops(ops, 2, Fault::skip_reset);
        if (result.ok) continue;
        caught = true;
        CHECK(result.message.find("reset") != std::string::npos);
        const std::vector<Op> minimal = shrink(ops, 2, Fault::skip_reset, std::chrono::seconds(60));
        INFO(describe(minimal, 2));
        CHECK_FALSE(run_ops(minimal, 2, Fault::skip_reset).ok);
        CHECK(run_ops(minimal, 2).ok);  // the sequence itself is fine; only the defect fails it
        // local_create, something that creates a value, reset.
        CHECK(minimal.size() <= 3);
        CHECK(minimal.back().kind == Kind::reset);
    }
    CHECK(caught);
}

TEST_CASE("Model.Checker.catches_a_value_read_from_another_thread" * doctest::timeout(120)) {
    using namespace ctxmodel;
    bool caught = false;
    for (std::uint64_t seed = 1; seed <= 20 && !caught; ++seed) {
        const std::vector<Op> ops = generate(seed, 2000, 3);
        const Result result = run_ops(ops, 3, Fault::read_other_thread);
        if (result.ok) continue;
        caught = true;
        const std::vector<Op> minimal = shrink(ops, 3, Fault::read_other_thread, std::chrono::seconds(60));
        INFO(describe(minimal, 3));
        CHECK_FALSE(run_ops(minimal, 3, Fault::read_other_thread).ok);
        // local_create, a value on one thread, get on another.
        CHECK(minimal.size() <= 3);
        CHECK(minimal.back().kind == Kind::get);
    }
    CHECK(caught);
}

TEST_CASE("Model.Generator.same_seed_same_run" * doctest::timeout(60)) {
    using namespace ctxmodel;
    const std::vector<Op> a = generate(42, 3000, 3);
    CHECK(a == generate(42, 3000, 3));
    CHECK_FALSE(a == generate(43, 3000, 3));
    const Result first = run_ops(a, 3);
    const Result second = run_ops(a, 3);
    CHECK(first.ok);
    CHECK(first.executed == second.executed);
    // Most generated operations apply (the budget counts applied operations only).
    CHECK(first.executed > a.size() * 8 / 10);
}
