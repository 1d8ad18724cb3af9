#!/usr/bin/env python3
"""The core and context operations in werkzeug and Flask, timed with timeit, so that Python users can
compare with ctxlocal's rows in RESULTS.md.

    python3 benchmarks/python/bench_werkzeug.py [--out results.json] [--repeat 5]

Each figure is the median over --repeat runs of ns per operation (one run: timeit's autorange, at
least 0.2 s). Writes JSON {"versions": {...}, "results": {name: ns_per_op}}.
"""
import argparse
import importlib.metadata
import json
import statistics
import sys
import timeit
import warnings

warnings.simplefilter("ignore")

from werkzeug.local import Local, LocalProxy, LocalStack  # noqa: E402


class Obj:
    field = 1


def cases():
    """(name, statement, setup-namespace) for every row; names match the C++ operation names."""
    loc = Local()
    loc.value = 1
    loc.obj = Obj()
    stack = LocalStack()
    stack.push(Obj())
    proxy_local = LocalProxy(loc, "obj")
    proxy_stack = stack()
    ns = {"loc": loc, "stack": stack, "proxy_local": proxy_local, "proxy_stack": proxy_stack}
    yield "Read/werkzeug_Local", "loc.value", ns
    yield "Replace/werkzeug_Local", "loc.value = 2", ns
    yield "MakeReset/werkzeug_Local", "loc.made = 0; del loc.made", ns
    yield "PushPop/werkzeug_LocalStack", "stack.push(1); stack.pop()", ns
    yield "Top/werkzeug_LocalStack", "stack.top", ns
    yield "ProxyDeref/werkzeug_proxy_over_local", "proxy_local.field", ns
    yield "ProxyDeref/werkzeug_proxy_over_stack", "proxy_stack.field", ns
    obj = Obj()
    yield "ProxyDeref/python_attribute", "obj.field", {"obj": obj}

    try:
        import flask
    except ImportError:
        return
    app = flask.Flask("bench")
    app_ctx = app.app_context()
    req_ctx = app.test_request_context("/")
    fns = {"app": app, "app_ctx": app_ctx, "req_ctx": req_ctx, "flask": flask}
    yield "AppContextPushPop/flask", "app_ctx.push(); app_ctx.pop()", fns
    yield "AppContextPushPop/flask_with_new_context", "with app.app_context(): pass", fns
    yield "RequestContextPushPop/flask", "req_ctx.push(); req_ctx.pop()", fns
    yield "RequestContextPushPop/flask_with_new_context", "with app.test_request_context('/'): pass", fns
    yield "RequestField/flask", "flask.request.path", fns


def measure(stmt, ns, repeat):
    timer = timeit.Timer(stmt, globals=ns)
    number, _ = timer.autorange()
    number = max(number, 1)
    # autorange stops at >= 0.2 s; repeat that many loops and keep ns/op per run.
    runs = [t / number * 1e9 for t in timer.repeat(repeat=repeat, number=number)]
    return statistics.median(runs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="-")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    versions = {"python": sys.version.split()[0]}
    for dist in ("werkzeug", "flask"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    results = {}
    for name, stmt, ns in cases():
        if name == "RequestField/flask":
            ns["req_ctx"].push()
            try:
                results[name] = measure(stmt, ns, args.repeat)
            finally:
                ns["req_ctx"].pop()
        else:
            results[name] = measure(stmt, ns, args.repeat)
        print(f"{name:55s} {results[name]:10.1f} ns/op", file=sys.stderr)
    text = json.dumps({"versions": versions, "results": results}, indent=2)
    if args.out == "-":
        print(text)
    else:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
