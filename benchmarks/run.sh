#!/usr/bin/env bash
# Builds the benchmarks in Release (-O2) and runs everything: the Google Benchmark binary (5 repetitions,
# medians), the callgrind instruction counts, callgrind profiles of selected rows, the werkzeug/Flask and
# contextvars/asyncio timings, and the server overhead under wrk (examples/servers/overhead.sh); then
# writes benchmarks/RESULTS.md and benchmarks/results.svg.
#
#   bash benchmarks/run.sh            # everything (about 5-8 minutes on 2 cores)
#   BENCH_FILTER='Read|PushPop' bash benchmarks/run.sh    # a subset of rows (the report shows what ran)
#
# Environment: BENCH_BUILD_DIR (default benchmarks/.build), BENCH_MIN_TIME (seconds per repetition, default
# 0.2), BENCH_REPETITIONS (default 5), BENCH_FILTER (regex, default all), CXX (compiler),
# BENCH_OVERHEAD_RUNS (alternating wrk runs of the server overhead, default 3; 0 skips it).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="${BENCH_BUILD_DIR:-$here/.build}"
out="$build/results"
min_time="${BENCH_MIN_TIME:-0.2}"
reps="${BENCH_REPETITIONS:-5}"
filter="${BENCH_FILTER:-.}"
flags="-O2 -DNDEBUG"

# --- packages -------------------------------------------------------------------------------------------
packages=(cmake make g++ libbenchmark-dev libboost-thread-dev libtbb-dev valgrind gnuplot-nox python3
          python3-werkzeug python3-flask wrk)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "== installing: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

# --- build ----------------------------------------------------------------------------------------------
echo "== configure + build ($flags) in $build"
cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="$flags" >/dev/null
cmake --build "$build" -j "$(nproc)"
mkdir -p "$out"
compiler="$(grep -E '^CMAKE_CXX_COMPILER:' "$build/CMakeCache.txt" | cut -d= -f2)"
compiler_version="$("$compiler" --version | head -1)"

# --- Google Benchmark -----------------------------------------------------------------------------------
load_at_start="$(cut -d' ' -f1 /proc/loadavg)"
echo "== benchmarks (min time ${min_time}s x $reps repetitions)"
"$build/ctxlocal_bench" --benchmark_filter="$filter" --benchmark_min_time="$min_time" \
    --benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true \
    --benchmark_out="$out/bench.json" --benchmark_out_format=json

# --- callgrind: instructions per read -------------------------------------------------------------------
echo "== callgrind: instructions per read"
n1=100000
n2=200000
: >"$out/callgrind.txt"
ir_of() {  # <peer> <iterations>: total Ir of one run
    local f="$out/callgrind.out.$1.$2"
    valgrind --tool=callgrind --callgrind-out-file="$f" "$build/ctxlocal_callgrind_read" "$1" "$2" >/dev/null 2>&1
    grep -E '^(summary|totals):' "$f" | head -1 | awk '{print $2}'
}
for peer in raw_thread_local ctxlocal ctxlocal_in_storage ctxlocal_shared_library ctxlocal_shared_library_dynamic_tls \
            raw_thread_local_shared_library raw_thread_local_shared_library_dynamic_tls \
            pthread_getspecific boost_tss tbb_ets mutex_map \
            raw_thread_local_pointer proxy_over_local proxy_over_stack proxy_over_local_pointer; do
    a="$(ir_of "$peer" "$n1")"
    b="$(ir_of "$peer" "$n2")"
    echo "$peer $n1 $a $n2 $b" | tee -a "$out/callgrind.txt"
done

# --- callgrind: instructions per operation of the propagation rows (bench_storage.cpp) -------------------
: >"$out/callgrind_storage.txt"
if [ -x "$build/ctxlocal_callgrind_storage" ]; then
    echo "== callgrind: instructions per Storage/wrap/task operation"
    ir_of_op() {  # <op> <iterations>: total Ir of one run
        local f="$out/callgrind.storage.${1//[^A-Za-z0-9]/_}.$2"
        valgrind --tool=callgrind --callgrind-out-file="$f" "$build/ctxlocal_callgrind_storage" "$1" "$2" \
            >/dev/null 2>&1
        grep -E '^(summary|totals):' "$f" | head -1 | awk '{print $2}'
    }
    for op in StorageScope/raw_thread_local_swap StorageScope/ctxlocal StorageScope/ctxlocal_nested \
              WrapCall/std_function WrapCall/ctxlocal_storage_current WrapCall/ctxlocal_no_storage \
              TaskAwait/plain_task TaskAwait/ctxlocal TaskSuspend/plain_task TaskSuspend/ctxlocal; do
        a="$(ir_of_op "$op" 20000)"
        b="$(ir_of_op "$op" 40000)"
        echo "$op 20000 $a 40000 $b" | tee -a "$out/callgrind_storage.txt"
    done
fi

# --- callgrind: profiles of selected rows (evidence for the targets) ------------------------------------
echo "== callgrind: profiles"
profile_args=()
profile() {  # <name> <exact benchmark name> <function pattern>...: cost inside those functions only
    local f="$out/profile.${2//[^A-Za-z0-9]/_}" name="$1" row="$2" toggles=()
    shift 2
    for t in "$@"; do toggles+=("--toggle-collect=$t"); done
    valgrind --tool=callgrind --callgrind-out-file="$f.out" "${toggles[@]}" "$build/ctxlocal_bench" \
        --benchmark_filter="^$row\$" --benchmark_min_time=0.2 >/dev/null 2>&1 || return 0
    # Inclusive cost: the total, then the 14 heaviest functions below the measured ones, paths stripped.
    callgrind_annotate --inclusive=yes "$f.out" 2>/dev/null |
        sed -n '/^-\{10,\}/,$p' | grep -E '^ *[0-9,]+ ' |
        awk 'NR == 1 || $2 != "(100.0%)"' | grep -v "'2" | head -15 |
        sed -E 's#/[^ ]*/##; s/\[[^]]*\]//g; s/std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >/std::string/g' |
        cut -c1-170 >"$f.txt"
    profile_args+=(--profile "$name=$f.txt")
}
profile "Replace/ctxlocal (Local::emplace)" "Replace/ctxlocal/real_time/threads:1" '*Ctx::replace*'
profile "ThreadStart4/ctxlocal (set 4 values + thread-exit teardown)" "ThreadStart4/ctxlocal/real_time" \
    '*Ctx::set4*' '*Registry::on_thread_exit*'
if "$build/ctxlocal_bench" --benchmark_list_tests | grep AppContextPushPop >/dev/null; then
    profile "AppContextPushPop/ctxlocal" "AppContextPushPop/ctxlocal/real_time/threads:1" '*app_push_pop*'
    profile "RequestContextPushPop/ctxlocal" "RequestContextPushPop/ctxlocal/real_time/threads:1" '*request_push_pop*'
fi

# --- werkzeug / Flask -----------------------------------------------------------------------------------
echo "== python: werkzeug and Flask; contextvars and asyncio"
python3 "$here/python/bench_werkzeug.py" --repeat "$reps" --out "$out/python.json"
python3 "$here/python/bench_contextvars.py" --repeat "$reps" --out "$out/python_contextvars.json"

# --- server overhead under wrk --------------------------------------------------------------------------
overhead_runs="${BENCH_OVERHEAD_RUNS:-3}"
rm -f "$out/overhead.txt"
if [ "$overhead_runs" -gt 0 ]; then
    echo "== server overhead: pool_server with and without ctxlocal, under wrk ($overhead_runs runs of 10 s each)"
    servers="$build/servers"
    cmake -S "$here/.." -B "$servers" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="$flags" \
        -DCTXLOCAL_BUILD_EXAMPLES=ON -DCTXLOCAL_BUILD_TESTS=OFF >/dev/null
    cmake --build "$servers" -j "$(nproc)" --target pool_server pool_server_explicit
    bash "$here/../examples/servers/overhead.sh" "$servers" "$overhead_runs" 10s 32 1 1 | tee "$out/overhead.txt"
fi

# --- report ---------------------------------------------------------------------------------------------
python3 "$here/report.py" --bench "$out/bench.json" --python "$out/python.json" \
    --python "$out/python_contextvars.json" \
    --callgrind "$out/callgrind.txt" --callgrind-storage "$out/callgrind_storage.txt" "${profile_args[@]}" --compiler "$compiler_version" --flags="$flags" \
    --repetitions "$reps" --load "$load_at_start" --out "$here/RESULTS.md" --chart "$here/results.svg" \
    --overhead "$out/overhead.txt"
echo "== done: $here/RESULTS.md, $here/results.svg"
