#!/usr/bin/env bash
# The demo command: installs what is missing (Debian 12), builds the example servers in build/demo, starts
# pool_server (a fixed pool of threads reused across requests, every request bound with web::handle()) on a
# free loopback port, runs the load client against it, prints requests, mismatches (0: no request ever saw
# another request's data) and throughput, and stops the server with SIGTERM.
#
#   bash scripts/demo.sh
#
# Environment: DEMO_CONNECTIONS (default 16), DEMO_REQUESTS (per connection, default 200),
# DEMO_MAX_DELAY_MS (default 2), CTXLOCAL_JOBS (parallel build jobs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=lib.sh
source "$ROOT/scripts/lib.sh"

CONNECTIONS="${DEMO_CONNECTIONS:-16}"
REQUESTS="${DEMO_REQUESTS:-200}"
MAX_DELAY_MS="${DEMO_MAX_DELAY_MS:-2}"
BUILD=build/demo
BIN="$BUILD/examples/servers"

ensure_packages g++ cmake ninja-build

banner "building the examples ($BUILD)"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCTXLOCAL_BUILD_TESTS=OFF -DCTXLOCAL_BUILD_EXAMPLES=ON -DCTXLOCAL_WERROR=OFF
cmake --build "$BUILD" --parallel "$(jobs_count)" --target pool_server load_client

tmp="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

banner "starting pool_server (8 threads shared by all connections)"
"$BIN/pool_server" --port 0 --threads 8 >"$tmp/out" 2>"$tmp/err" &
server_pid=$!
port=""
for _ in $(seq 200); do
    port="$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp/out")"
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
done
if [ -z "$port" ]; then
    cat "$tmp/err" >&2
    die "pool_server did not start"
fi
head -n 1 "$tmp/out"

banner "load_client: $CONNECTIONS connections x $REQUESTS requests, random delays 0..${MAX_DELAY_MS} ms"
echo "Each request sends a unique id; the server stores it in g, sleeps, then answers from the globals"
echo "web::request and web::g. A mismatch would be a request that saw another request's id."
set +e
result="$("$BIN/load_client" --port "$port" --connections "$CONNECTIONS" \
    --requests-per-connection "$REQUESTS" --max-delay-ms "$MAX_DELAY_MS")"
client_status=$?
set -e
echo "$result"
requests="$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$result")"
mismatches="$(sed -n 's/.*mismatches=\([0-9]*\).*/\1/p' <<<"$result")"
throughput="$(sed -n 's/.*throughput=\([0-9]*\/s\).*/\1/p' <<<"$result")"

banner "stopping pool_server (SIGTERM)"
kill -TERM "$server_pid"
set +e
wait "$server_pid"
server_status=$?
set -e
server_pid=""
echo "pool_server exited with status $server_status"

banner "result"
printf 'requests:   %s\nmismatches: %s\nthroughput: %s\n' "${requests:-?}" "${mismatches:-?}" "${throughput:-?}"
[ "$client_status" -eq 0 ] || die "load_client reported mismatches or errors (exit $client_status)"
[ "$server_status" -eq 0 ] || die "pool_server did not exit cleanly (status $server_status)"
