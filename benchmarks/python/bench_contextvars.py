#!/usr/bin/env python3
"""Python's own propagation, timed with timeit, as peers of ctxlocal's Storage/wrap/task rows in RESULTS.md:
contextvars (what werkzeug >= 2.0 and Flask sit on) and asyncio. Standard library only.

    python3 benchmarks/python/bench_contextvars.py [--out results.json] [--repeat 5]

Each figure is the median over --repeat runs of ns per operation (one run: timeit's autorange, at least
0.2 s). The asyncio rows run N operations inside one coroutine per timed statement, on one event loop, so
the loop's start-up is amortised (N = 1000). Writes JSON {"versions": {...}, "results": {name: ns_per_op}}
in the format of bench_werkzeug.py; report.py merges both files.
"""
import argparse
import asyncio
import contextvars
import json
import statistics
import sys
import timeit

N = 1000  # operations per timed statement in the asyncio rows

var = contextvars.ContextVar("var", default=0)


def noop():
    return 1


async def trivial():
    return 1


async def await_coroutines(n):
    """`await trivial()` n times: a direct await runs the coroutine in the same context (a call)."""
    s = 0
    for _ in range(n):
        s += await trivial()
    return s


async def sleep_zero(n):
    """`await asyncio.sleep(0)` n times: each one is a task switch through the event loop."""
    for _ in range(n):
        await asyncio.sleep(0)


async def create_tasks(n):
    """`await asyncio.create_task(trivial())` n times: a new task, in a copy of the context, scheduled and
    awaited."""
    s = 0
    for _ in range(n):
        s += await asyncio.create_task(trivial())
    return s


def cases(loop):
    """(name, statement, namespace, operations per statement); names match the C++ operation names."""
    ctx = contextvars.copy_context()
    ns = {"contextvars": contextvars, "ctx": ctx, "noop": noop, "var": var}
    yield "StorageScope/python_context_run", "ctx.run(noop)", ns, 1
    yield "WrapCall/python_copy_context_run", "contextvars.copy_context().run(noop)", ns, 1
    yield "Read/python_contextvar_get", "var.get()", ns, 1
    ans = {"loop": loop, "await_coroutines": await_coroutines, "sleep_zero": sleep_zero,
           "create_tasks": create_tasks, "N": N}
    yield "TaskAwait/python_asyncio_await_coroutine", "loop.run_until_complete(await_coroutines(N))", ans, N
    yield "TaskSuspend/python_asyncio_sleep0", "loop.run_until_complete(sleep_zero(N))", ans, N
    yield "TaskSpawn/python_asyncio_create_task", "loop.run_until_complete(create_tasks(N))", ans, N


def measure(stmt, ns, ops, repeat):
    timer = timeit.Timer(stmt, globals=ns)
    number, _ = timer.autorange()
    number = max(number, 1)
    runs = [t / (number * ops) * 1e9 for t in timer.repeat(repeat=repeat, number=number)]
    return statistics.median(runs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="-")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    versions = {"python": sys.version.split()[0]}
    results = {}
    loop = asyncio.new_event_loop()
    try:
        for name, stmt, ns, ops in cases(loop):
            results[name] = measure(stmt, ns, ops, args.repeat)
            print(f"{name:55s} {results[name]:10.1f} ns/op", file=sys.stderr)
    finally:
        loop.close()
    text = json.dumps({"versions": versions, "results": results}, indent=2)
    if args.out == "-":
        print(text)
    else:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
