"""SQL write log and sampling profiler for the benchmark's server (never part of the app).

``python -m bench.run`` starts gunicorn with ``PYTHONPATH`` pointing at this
folder, so Python imports this module at start-up. When ``BENCH_SQL_TRACE``
names a file, every SQLite connection opened afterwards gets a trace callback
that appends one JSON line per statement that writes (INSERT/UPDATE/DELETE/
REPLACE), plus BEGIN/COMMIT/ROLLBACK markers so the benchmark can tell when a
write became durable. Each line is ``[time.monotonic(), connection number,
statement]``; the statement is SQLite's expanded SQL, that is with the bound
values inlined as SQL literals. SELECTs and PRAGMAs are not logged.
"""
import os

_PATH = os.environ.get("BENCH_SQL_TRACE")

if _PATH:
    import itertools
    import json
    import sqlite3
    import time

    _log = open(_PATH, "a", buffering=1, encoding="utf-8")  # one write() per line
    _numbers = itertools.count(1)
    _original_connect = sqlite3.connect
    _WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
    _MARKERS = ("BEGIN", "COMMIT", "ROLLBACK", "END")

    def _tracer(number):
        def trace(sql):
            head = sql.lstrip()[:8].upper()
            if head.startswith(_WRITES):
                _log.write(json.dumps([time.monotonic(), number, sql]) + "\n")
            elif head.startswith(_MARKERS):
                word = head.split()[0] if head.split() else head
                _log.write(json.dumps([time.monotonic(), number, "COMMIT" if word == "END" else word]) + "\n")

        return trace

    def connect(*args, **kwargs):
        conn = _original_connect(*args, **kwargs)
        conn.set_trace_callback(_tracer(next(_numbers)))
        return conn

    sqlite3.connect = connect
    sqlite3.dbapi2.connect = connect


# A sampling profiler for the worker, when BENCH_PROFILE names a file. In each
# forked child (so in gunicorn's worker, before gevent patches anything) a
# SIGPROF timer fires every 2 ms of the process's CPU time; the handler, which
# Python runs in the main thread at the next bytecode, counts the current stack
# under two keys: the innermost frame of the app's own modules (which part of
# the app the work is for) and the innermost frame of a third-party package
# other than gevent (which library does it; the SQL trace hook above counts as
# its own). Time the worker spends idle fires no signal, so the counts are
# shares of its CPU time. Every 50 samples the totals are written to the file
# as JSON.
_PROFILE = os.environ.get("BENCH_PROFILE")

if _PROFILE:
    import json as _json
    import signal as _signal

    _INTERVAL = 0.002
    _APP_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _SITE = os.sep + "site-packages" + os.sep
    _totals = {"app": {}, "lib": {}, "samples": 0, "interval": _INTERVAL}

    def _keys(frame):
        app = lib = None
        while frame is not None and (app is None or lib is None):
            path = frame.f_code.co_filename
            if path == __file__:
                if lib is None and frame.f_code.co_name == "trace":
                    lib = "(benchmark's SQL trace hook)"
            elif _SITE in path:
                if lib is None:
                    package = path.split(_SITE, 1)[1].split(os.sep, 1)[0]
                    if package not in ("gevent", "greenlet"):
                        lib = package.replace(".py", "")
            elif app is None and path.startswith(_APP_DIR + os.sep) and os.sep + "bench" + os.sep not in path:
                module = os.path.relpath(path, _APP_DIR)[:-3].replace(os.sep, ".")
                app = "{}.{}".format(module, frame.f_code.co_name)
            frame = frame.f_back
        return app or "(no app frame)", lib or "(stdlib / gevent only)"

    def _dump():
        tmp = "{}.{}.tmp".format(_PROFILE, os.getpid())
        with open(tmp, "w") as f:
            _json.dump(_totals, f)
        os.replace(tmp, _PROFILE)

    def _on_sigprof(signum, frame):
        if frame is None or frame.f_code is _on_sigprof.__code__:
            return
        app, lib = _keys(frame)
        _totals["app"][app] = _totals["app"].get(app, 0) + 1
        _totals["lib"][lib] = _totals["lib"].get(lib, 0) + 1
        _totals["samples"] += 1
        if _totals["samples"] % 50 == 0:
            _dump()

    def _stop_profiler():
        # Disarm before the interpreter tears its handlers down: a SIGPROF with
        # the default action would kill the exiting worker.
        _signal.setitimer(_signal.ITIMER_PROF, 0, 0)
        _signal.signal(_signal.SIGPROF, _signal.SIG_IGN)

    def _start_profiler():
        import atexit

        _signal.signal(_signal.SIGPROF, _on_sigprof)
        _signal.setitimer(_signal.ITIMER_PROF, _INTERVAL, _INTERVAL)
        atexit.register(_stop_profiler)

    os.register_at_fork(after_in_child=_start_profiler)
