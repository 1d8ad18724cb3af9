#!/usr/bin/env bash
# What binding every request with ctxlocal costs a real server: pool_server (web::handle() per request)
# against pool_server_explicit (the same server built with CTXLOCAL_SERVERS_EXPLICIT: no ctxlocal, the
# request and id passed as parameters), both under wrk on loopback, in alternating runs (explicit first
# in odd runs, ctxlocal first in even runs). Prints each run with its ratio (ctxlocal / explicit; 1.00 =
# no overhead), the median throughputs, and the median of the per-run ratios: the figure to report, since
# each ratio compares two runs made back to back, which cancels slow drifts of a shared machine.
#
#   bash examples/servers/overhead.sh BUILD_DIR [RUNS] [DURATION] [CONNECTIONS] [WRK_THREADS] [SERVER_THREADS]
#   bash examples/servers/overhead.sh build/demo 3 10s 32 1 1
#   OVERHEAD_SERVER=asio_server bash examples/servers/overhead.sh build/gcc 5 10s 32 1 1
#
# OVERHEAD_SERVER names another server with an _explicit twin (default pool_server): asio_server (a
# Storage per request from web::make_storage, its coroutine on ctxlocal::bind_executor) against
# asio_server_explicit.
#
# With 2 or more CPUs and taskset (util-linux), the server is pinned to CPU 0 and wrk to CPU 1, so that
# the server is CPU-bound on one core and the two do not fight for it (on a 2-core machine, unpinned runs
# mostly measure the scheduler). Set OVERHEAD_PIN=0 to disable.
#
# BUILD_DIR is a CMake build tree with the examples (the binaries are in BUILD_DIR/examples/servers).
# Needs wrk (Debian: apt-get install wrk). Every request is `GET /whoami?id=1&delay_ms=0`.
set -euo pipefail

BUILD="${1:?usage: overhead.sh BUILD_DIR [RUNS] [DURATION] [CONNECTIONS] [WRK_THREADS] [SERVER_THREADS]}"
RUNS="${2:-3}"
DURATION="${3:-10s}"
CONNECTIONS="${4:-32}"
WRK_THREADS="${5:-1}"
SERVER_THREADS="${6:-1}"
BIN="$BUILD/examples/servers"
SERVER="${OVERHEAD_SERVER:-pool_server}"
command -v wrk >/dev/null || { echo "overhead.sh: wrk not found (Debian: apt-get install wrk)" >&2; exit 1; }
for exe in "$SERVER" "${SERVER}_explicit"; do
    [ -x "$BIN/$exe" ] || { echo "overhead.sh: $BIN/$exe not built" >&2; exit 1; }
done

server_cpu=()
wrk_cpu=()
if [ "${OVERHEAD_PIN:-1}" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    server_cpu=(taskset -c 0)
    wrk_cpu=(taskset -c 1)
fi

tmp="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# measure EXE: starts it on a free port, runs wrk, stops it; prints requests/s.
measure() {
    : >"$tmp/out"  # now, not in the background job: else the loop below may read the last run's port
    "${server_cpu[@]}" "$BIN/$1" --port 0 --threads "$SERVER_THREADS" >"$tmp/out" 2>"$tmp/err" &
    server_pid=$!
    local port="" i
    for i in $(seq 100); do
        port="$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp/out")"
        [ -n "$port" ] && break
        sleep 0.05
    done
    [ -n "$port" ] || { echo "overhead.sh: $1 did not start" >&2; cat "$tmp/err" >&2; exit 1; }
    "${wrk_cpu[@]}" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION" "http://127.0.0.1:$port/whoami?id=1&delay_ms=0" >"$tmp/wrk"
    kill -TERM "$server_pid"
    wait "$server_pid" || { echo "overhead.sh: $1 exited non-zero" >&2; exit 1; }
    server_pid=""
    if grep -q 'Non-2xx\|Socket errors' "$tmp/wrk"; then
        echo "overhead.sh: wrk reported errors against $1:" >&2
        cat "$tmp/wrk" >&2
        exit 1
    fi
    awk '/^Requests\/sec:/ { print $2 }' "$tmp/wrk"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION, $SERVER --threads $SERVER_THREADS, $RUNS alternating runs each," \
    "$([ "${#server_cpu[@]}" -gt 0 ] && echo "server on CPU 0, wrk on CPU 1" || echo "not pinned")"
ctx=()
explicit=()
ratios=()
for run in $(seq "$RUNS"); do
    if [ $((run % 2)) -eq 1 ]; then
        e="$(measure "${SERVER}_explicit")"
        c="$(measure "$SERVER")"
    else
        c="$(measure "$SERVER")"
        e="$(measure "${SERVER}_explicit")"
    fi
    explicit+=("$e")
    ctx+=("$c")
    r="$(awk -v c="$c" -v e="$e" 'BEGIN { printf "%.3f", c / e }')"
    ratios+=("$r")
    printf 'run %d: explicit %10.0f req/s   ctxlocal %10.0f req/s   ratio %s\n' "$run" "$e" "$c" "$r"
done
m_ctx="$(printf '%s\n' "${ctx[@]}" | median)"
m_explicit="$(printf '%s\n' "${explicit[@]}" | median)"
m_ratio="$(printf '%s\n' "${ratios[@]}" | median)"
awk -v c="$m_ctx" -v e="$m_explicit" -v r="$m_ratio" 'BEGIN {
    printf "median throughput: explicit %.0f req/s, ctxlocal %.0f req/s (ratio of medians %.3f)\n", e, c, c / e
    printf "ratio (ctxlocal / explicit, median of per-run ratios) = %.3f\n", r
}'
