#!/usr/bin/env python3
"""End-to-end tests of the example servers (examples/servers/). Python 3 standard library only.

Every mode starts the server in a new process group on an ephemeral loopback port (--port 0, the port read
from its first line `listening on 127.0.0.1:<port>`), runs its checks, then sends SIGTERM to the server
alone and requires exit status 0 within the shutdown bound and no process left in its process group (a
worker or child that outlived the master would still be there). Every step is bounded in time.

  e2e.py load    SERVER [server args] -- CLIENT [client args]   load_client must report 0 mismatches, 0 errors
  e2e.py leak    SERVER [server args]     a handler leaks contexts; the next request on that thread is clean
  e2e.py robust  SERVER [server args]     malformed/oversized/truncated requests: 400/431 or close, no crash
  e2e.py restart SERVER [server args] -- CLIENT [client args]
                                          SIGKILL a worker: the master replaces it and keeps serving
  e2e.py client  SERVER [server args] -- CLIENT [client args]   the client (given --port) must exit 0
  e2e.py shutdown_idle SERVER [server args]
                                          with idle keep-alive connections open (after a request, silent,
                                          half a request), SIGTERM must end the server within 2 s
  e2e.py hops    SERVER [server args]     concurrent requests with delays on a server whose body says
                                          threads=K (asio_server): every answer names its own id, and at
                                          least HOPS_MIN_SHARE of them ran on 2 or more threads

Exit status 0 on success, 1 on failure (the reason is printed).
"""

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

START_TIMEOUT = 20.0  # seconds for the first line
SHUTDOWN_TIMEOUT = 20.0  # seconds from SIGTERM to exit (servers give workers 10 s)
IDLE_SHUTDOWN_TIMEOUT = 2.0  # seconds from SIGTERM to exit with only idle connections open (shutdown_idle)
CLIENT_TIMEOUT = 100.0
IO_TIMEOUT = 10.0


class Failure(Exception):
    pass


def log(message):
    print(f"e2e: {message}", flush=True)


class Server:
    """A server process in its own process group."""

    def __init__(self, argv):
        self.argv = argv
        log("starting " + " ".join(argv))
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, start_new_session=True)
        self.pgid = self.process.pid
        self.stopped = False
        self.port = self._read_port()
        log(f"server pid {self.process.pid} listening on port {self.port}")

    def _read_port(self):
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + START_TIMEOUT
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise Failure(f"no first line within {START_TIMEOUT}s")
            chunk = os.read(self.process.stdout.fileno(), 4096)
            if not chunk:
                raise Failure(f"server exited before its first line (status {self.process.wait()})")
            data += chunk
        first = data.split(b"\n", 1)[0].decode(errors="replace")
        match = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)", first)
        if not match:
            raise Failure(f"first line is {first!r}, expected 'listening on 127.0.0.1:<port>'")
        return int(match.group(1))

    def alive(self):
        return self.process.poll() is None

    def stop(self, timeout=SHUTDOWN_TIMEOUT):
        """SIGTERM to the server alone; it must exit 0 within `timeout` seconds and leave nothing in its
        process group."""
        if not self.alive():
            raise Failure(f"server died during the test (status {self.process.returncode})")
        self.stopped = True
        start = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"server did not exit within {timeout}s of SIGTERM")
        log(f"server exited with status {status} {time.monotonic() - start:.2f}s after SIGTERM")
        left = group_members(self.pgid)
        if left:
            raise Failure(f"processes left in the server's process group after it exited: {left}")
        if status != 0:
            raise Failure(f"server exited with status {status} on SIGTERM, expected 0")
        log("no process left behind")

    def kill_group(self):
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            pass


def group_members(pgid):
    """Live processes (zombies included) whose process group is pgid, as "pid(state comm)". The
    sanitizers' symbolizer (spawned by a sanitized server to symbolize a report, and reaped by init after
    the server exits) is not the server's and is left out."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp ...
        if int(fields[2]) == pgid and "symbolizer" not in comm:
            members.append(f"{entry}({fields[0]} {comm})")
    return members


class Connection:
    """A keep-alive HTTP/1.1 connection to the server."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.buffer = b""

    def send(self, data):
        self.sock.sendall(data)

    def get(self, target):
        self.send(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        return self.response()

    def response(self):
        """(status, headers dict, body str), or None when the server closed without answering."""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                if self.buffer:
                    raise Failure(f"connection closed mid-response: {self.buffer!r}")
                return None
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode(errors="replace").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Failure("connection closed mid-body")
            self.buffer += chunk
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body.decode(errors="replace")

    def closed_by_peer(self):
        """True when the server closes the connection (EOF or reset) within IO_TIMEOUT."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def fields(body):
    return dict(part.split("=", 1) for part in body.split() if "=" in part)


def expect(condition, message):
    if not condition:
        raise Failure(message)


def whoami(conn, target):
    reply = conn.get(target)
    expect(reply is not None, f"no answer to {target}")
    status, _, body = reply
    expect(status == 200, f"{target}: status {status}, body {body!r}")
    log(f"{target} -> {body.strip()}")
    return fields(body)


# ---------------------------------------------------------------------------------------------------------
def run_client(client_argv, port):
    argv = client_argv + ["--port", str(port)]
    log("running " + " ".join(argv))
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, timeout=CLIENT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Failure(f"load_client did not finish within {CLIENT_TIMEOUT}s")
    output = done.stdout.decode(errors="replace").strip()
    log(f"load_client: {output} (exit {done.returncode})")
    match = re.search(r"requests=(\d+) mismatches=(\d+) errors=(\d+) throughput=", output)
    expect(match is not None, f"unexpected load_client output {output!r}")
    requests, mismatches, errors = (int(g) for g in match.groups())
    expect(mismatches == 0, f"{mismatches} MISMATCHES: a request saw another request's data")
    expect(errors == 0, f"{errors} errors")
    expect(done.returncode == 0, f"load_client exited {done.returncode}")
    return requests


def mode_load(server, client_argv):
    run_client(client_argv, server.port)


def mode_client(server, client_argv):
    argv = client_argv + ["--port", str(server.port)]
    log("running " + " ".join(argv))
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, timeout=CLIENT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Failure(f"client did not finish within {CLIENT_TIMEOUT}s")
    for line in done.stdout.decode(errors="replace").splitlines():
        log(f"client: {line}")
    expect(done.returncode == 0, f"client exited {done.returncode}")


def mode_leak(server, _):
    conn = Connection(server.port)
    before = int(whoami(conn, "/stats")["leaks"])
    first = whoami(conn, "/whoami?id=41")
    expect(first["id"] == "41" and first["g"] == "41", f"baseline request broken: {first}")

    reply = conn.get("/leak?id=777")
    expect(reply is not None and reply[0] == 200, f"/leak failed: {reply}")
    leaked = fields(reply[2])
    log(f"/leak?id=777 -> {reply[2].strip()}")

    # Every later request must start clean. At least one of them must run on the leaking thread (asserted,
    # so that this test cannot pass vacuously): on a keep-alive connection that is the next one, except in
    # a pool of several threads, where requests are sent until one lands there. Had the leaked AppContext
    # survived, a request on that thread would have reused it (same App) and read g=777; had the
    # RequestContext survived, handle() would have found it pushed.
    for attempt in range(500):
        after = whoami(conn, "/whoami") if attempt < 3 else fields(conn.get("/whoami")[2])
        expect(after["id"] == "<none>", f"request after the leak sees id={after['id']}, expected <none>")
        expect(after["g"] == "<none>", f"LEAK SURVIVED: g={after['g']} after the handler leaked g=777")
        if (after["pid"], after["tid"]) == (leaked["pid"], leaked["tid"]):
            log(f"request {attempt + 1} after the leak ran on the leaking thread and started clean")
            break
    else:
        raise Failure("no request after the leak ran on the leaking thread: test is not meaningful")
    again = whoami(conn, "/whoami?id=42")
    expect(again["id"] == "42" and again["g"] == "42", f"request after the leak is wrong: {again}")

    stats = whoami(conn, "/stats")
    expect(stats["pid"] == leaked["pid"], "stats from another process")
    reported = int(stats["leaks"]) - before
    expect(reported == 2, f"incident handler got {reported} leaked contexts, expected 2 (AppContext, RequestContext)")
    conn.close()

    # A new connection: on a one-thread pool it runs on the same thread again, and must start clean too.
    conn = Connection(server.port)
    fresh = whoami(conn, "/whoami")
    expect(fresh["g"] == "<none>" and fresh["id"] == "<none>", f"new connection not clean: {fresh}")
    if fresh["tid"] == leaked["tid"]:
        log("new connection ran on the leaking thread and started clean")
    conn.close()


def mode_robust(server, _):
    port = server.port

    def fresh():
        return Connection(port)

    cases = [
        ("malformed request line", b"THIS IS NOT HTTP\r\n\r\n", 400),
        ("bad version", b"GET / HTTP/9.9\r\n\r\n", 400),
        ("target without slash", b"GET whoami HTTP/1.1\r\n\r\n", 400),
        ("bad header line", b"GET /whoami HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        ("binary garbage", bytes(range(256)) * 4 + b"\r\n\r\n", 400),
        ("oversized header", b"GET /whoami HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
        ("oversized header, never terminated", b"GET /whoami HTTP/1.1\r\nX-Big: " + b"a" * 20000, 431),
        ("chunked body", b"POST /whoami HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
    ]
    for name, data, status in cases:
        conn = fresh()
        try:
            conn.send(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before we finished sending: fine
        try:
            reply = conn.response()
        except ConnectionResetError:
            reply = None
        got = reply[0] if reply else "closed"
        log(f"{name}: {got}")
        expect(reply is None or reply[0] == status or reply[0] == 400, f"{name}: status {got}, expected {status}")
        expect(conn.closed_by_peer(), f"{name}: connection not closed after the error")
        conn.close()

    # Early disconnects: half a request line, half a header, a request then reset.
    for partial in (b"GET /who", b"GET /whoami?id=1 HTTP/1.1\r\nHost: x", b"GET /whoami?id=1&delay_ms=50 HTTP/1.1\r\n\r\n"):
        conn = fresh()
        conn.send(partial)
        conn.close()
    conn = fresh()
    conn.send(b"GET /whoami?id=2&delay_ms=50 HTTP/1.1\r\n\r\n")
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.close()  # RST while the server is still answering
    time.sleep(0.2)

    # Pipelined requests in one write: both answered, in order.
    conn = fresh()
    conn.send(b"GET /whoami?id=7 HTTP/1.1\r\n\r\nGET /whoami?id=8 HTTP/1.1\r\n\r\n")
    for expected in ("7", "8"):
        reply = conn.response()
        expect(reply is not None and reply[0] == 200, f"pipelined request {expected}: {reply}")
        f = fields(reply[2])
        expect(f["id"] == expected and f["g"] == expected, f"pipelined request {expected}: {reply[2]!r}")
    # Connection: close is honoured; unknown path is 404.
    conn.send(b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n")
    reply = conn.response()
    expect(reply is not None and reply[0] == 404, f"/nope: {reply}")
    expect(conn.closed_by_peer(), "Connection: close not honoured")
    conn.close()

    expect(server.alive(), "server died")
    conn = fresh()
    f = whoami(conn, "/whoami?id=99")
    expect(f["id"] == "99" and f["g"] == "99", f"server broken after the bad requests: {f}")
    conn.close()


def mode_restart(server, client_argv):
    conn = Connection(server.port)
    victim = whoami(conn, "/whoami?id=1")["pid"]
    conn.close()
    expect(int(victim) != server.process.pid, "the answer came from the master, not a worker")
    log(f"killing worker {victim} with SIGKILL")
    os.kill(int(victim), signal.SIGKILL)
    deadline = time.monotonic() + 15
    seen = set()
    while time.monotonic() < deadline:
        try:
            conn = Connection(server.port)
            pid = whoami(conn, "/whoami?id=2")["pid"]
            conn.close()
            seen.add(pid)
        except (OSError, Failure) as error:
            log(f"(while the worker restarts: {error})")
        members = set(m.split("(")[0] for m in group_members(server.pgid))
        if victim not in members and len(members) >= 3 and len(seen - {victim}) >= 1:
            break
        time.sleep(0.1)
    members = group_members(server.pgid)
    log(f"process group now: {members}")
    expect(not any(m.startswith(victim + "(") for m in members), f"killed worker {victim} not reaped")
    expect(len(members) >= 3, f"expected the master and 2 workers, found {members}")
    expect(server.alive(), "the master died")
    run_client(client_argv, server.port)


def mode_shutdown_idle(server, _):
    # Connections that hold no request the server could answer: three that never send anything, one
    # stopped half-way through the request line, one half-way through the headers, then four that complete
    # a request and stay open (keep-alive). Those four are answered last, so every earlier connection has
    # been accepted by then (one FIFO backlog); the pause lets the server read the partial requests.
    idle = [Connection(server.port) for _ in range(3)]
    for partial in (b"GET /whoami?id=1 HT", b"GET /whoami?id=2 HTTP/1.1\r\nHost: 127.0.0.1\r\n"):
        conn = Connection(server.port)
        conn.send(partial)
        idle.append(conn)
    for i in range(4):
        conn = Connection(server.port)
        f = whoami(conn, f"/whoami?id={100 + i}")
        expect(f["id"] == f["g"] == str(100 + i), f"request {100 + i} answered wrongly: {f}")
        idle.append(conn)
    time.sleep(0.3)
    log(f"{len(idle)} idle connections open; SIGTERM, exit required within {IDLE_SHUTDOWN_TIMEOUT}s")
    server.stop(IDLE_SHUTDOWN_TIMEOUT)
    for conn in idle:
        conn.close()


HOPS_CONNECTIONS = 16
HOPS_REQUESTS = 25  # per connection
HOPS_MIN_SHARE = 0.2  # of the delayed requests, those that must report threads >= 2


def mode_hops(server, _):
    # Every request waits 1..5 ms on the server's timer, so it is suspended and resumed, usually on another
    # thread of the pool. A request that resumed elsewhere and still reads its own id from web::request and
    # web::g shows that its context followed it; the share of such requests shows the test is meaningful.
    results = []
    errors = []
    lock = threading.Lock()

    def client(index):
        try:
            conn = Connection(server.port)
            for r in range(HOPS_REQUESTS):
                rid = 1000 * (index + 1) + r
                reply = conn.get(f"/whoami?id={rid}&delay_ms={1 + (rid % 5)}")
                if reply is None or reply[0] != 200:
                    raise Failure(f"id={rid}: {reply}")
                f = fields(reply[2])
                with lock:
                    results.append((rid, f))
            conn.close()
        except (Failure, OSError) as error:
            with lock:
                errors.append(f"connection {index}: {error}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(HOPS_CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(CLIENT_TIMEOUT)
    expect(not any(t.is_alive() for t in threads), f"clients did not finish within {CLIENT_TIMEOUT}s")
    expect(not errors, f"errors: {errors[:5]}")
    expect(len(results) == HOPS_CONNECTIONS * HOPS_REQUESTS, f"{len(results)} answers")
    mismatches = [(rid, f) for rid, f in results if f.get("id") != str(rid) or f.get("g") != str(rid)]
    for rid, f in mismatches[:5]:
        log(f"MISMATCH: sent id={rid}, got {f}")
    expect(not mismatches, f"{len(mismatches)} MISMATCHES: a request saw another request's data")
    expect(all("threads" in f for _, f in results), "an answer without threads=K")
    hopped = sum(1 for _, f in results if int(f["threads"]) >= 2)
    share = hopped / len(results)
    log(f"{hopped} of {len(results)} delayed requests ran on 2 or more threads ({share:.0%}), all answered right")
    expect(share >= HOPS_MIN_SHARE, f"only {share:.0%} of the requests ran on 2+ threads (need {HOPS_MIN_SHARE:.0%}): "
           "the test does not show the context following a request across threads")


MODES = {
    "load": mode_load,
    "client": mode_client,
    "leak": mode_leak,
    "robust": mode_robust,
    "restart": mode_restart,
    "shutdown_idle": mode_shutdown_idle,
    "hops": mode_hops,
}


def main(argv):
    if len(argv) < 3 or argv[1] not in MODES:
        print(__doc__, file=sys.stderr)
        return 2
    mode = argv[1]
    rest = argv[2:]
    if rest[0] == "skip":
        log("server not built (its library was not found): skipped")
        return 77
    server_argv, client_argv = (rest[: rest.index("--")], rest[rest.index("--") + 1 :]) if "--" in rest else (rest, [])
    server_argv = server_argv + ["--port", "0"]
    start = time.monotonic()
    server = None
    try:
        server = Server(server_argv)
        MODES[mode](server, client_argv)
        if not server.stopped:
            server.stop()
    except (Failure, OSError) as error:
        log(f"FAILED: {error}")
        if server is not None:
            server.kill_group()
        return 1
    log(f"PASSED {mode} {os.path.basename(server_argv[0])} in {time.monotonic() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
