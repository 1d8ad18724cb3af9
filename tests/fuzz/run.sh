#!/usr/bin/env bash
# Builds the libFuzzer target tests/fuzz/fuzz_model.cpp (clang, -fsanitize=fuzzer,address,undefined) and
# runs it for a bounded time on a copy of the checked-in corpus. Exits non-zero when the fuzzer finds a
# crash, a model mismatch, a leak or a hang (the reproducer is left in the output directory).
#
#   bash tests/fuzz/run.sh              # 60 s
#   CTXLOCAL_FUZZ_SECONDS=600 bash tests/fuzz/run.sh
#   build/fuzz/fuzz_model crash-<hash>  # replay a reproducer
#
# Environment: CTXLOCAL_FUZZ_SECONDS (default 60), CTXLOCAL_FUZZ_DIR (default build/fuzz),
# CTXLOCAL_FUZZ_CXX (default clang++).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT="${CTXLOCAL_FUZZ_DIR:-$ROOT/build/fuzz}"
SECONDS_BUDGET="${CTXLOCAL_FUZZ_SECONDS:-60}"
CXX="${CTXLOCAL_FUZZ_CXX:-clang++}"

mkdir -p "$OUT/corpus"
echo "fuzz: building $OUT/fuzz_model with $CXX"
"$CXX" -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -Iinclude -Itests tests/fuzz/fuzz_model.cpp -pthread -o "$OUT/fuzz_model"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
echo "fuzz: running for ${SECONDS_BUDGET}s"
# New inputs go to $OUT/corpus; the checked-in corpus is read only.
"$OUT/fuzz_model" -max_total_time="$SECONDS_BUDGET" -rss_limit_mb=2048 -timeout=30 -max_len=4097 \
    -print_final_stats=1 -artifact_prefix="$OUT/" "$OUT/corpus" "$ROOT/tests/fuzz/corpus"
echo "fuzz: no crash, mismatch, leak or hang in ${SECONDS_BUDGET}s"
