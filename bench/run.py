"""Benchmark the streaming chat on a real server and write a Markdown report.

Starts the real server -- gunicorn with one gevent worker, SQLite in a
temporary directory, SEED_DEMO=0, rate limits raised through the environment
-- against a fake OpenAI-compatible server (tests/support/fake_openai.py, in a child
process of this one) that streams synthetic English-like word tokens. Real
clients drive it: askers post an @gpt question and read their reply's event
stream with http.client (the capacity levels spread them over a few client
processes); observers are page sockets opened with websocket-client. Four
measurements:

  1. bandwidth per reply (bytes to the asker, bytes to each observer, database
     statements and bytes written) for the three FANOUT_MODEs, one server
     start per mode, all in the same run;
  2. latency: token sent by the fake model -> received by the asker, and chunk
     commit -> received by an observer, against a client that reads the fake
     model directly (same run, same tokens, same pace); and the author
     stream's bytes against its latency for several STREAM_FRAME_TIMEs;
  3. capacity of one worker: N concurrent replies watched by observers;
  4. memory per idle observer socket;
  5. chunk commit -> observer across processes: two servers on one
     PostgreSQL database (needs PostgreSQL installed, as scripts/test.sh does).

Database writes are counted without touching the app: the server runs with
PYTHONPATH=bench/, whose sitecustomize.py puts a trace callback on every SQLite
connection and logs each INSERT/UPDATE/DELETE (with BEGIN/COMMIT markers and
monotonic timestamps) to a file. The same monotonic clock timestamps the fake
model's token writes, the server's commits and the clients' reads.

Examples:
  python -m bench.run                                   # full run, ~4 minutes
  python -m bench.run --quick --out /tmp/b/benchmarks.md  # smoke run, ~40 s

Plots (docs/bench-*.png, next to --out) need matplotlib: pip install -e ".[test,bench]"
(websocket-client comes with the test extra).
"""
import argparse
import datetime
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time

from bench import ROOT
from bench import meters
from bench.bandwidth import run_baseline
from bench.bandwidth import run_frames
from bench.bandwidth import run_mode
from bench.capacity import run_capacity
from bench.clients import AskerPool
from bench.crossprocess import run_crossprocess
from bench.fake_model import FakeProcess
from bench.idle import run_idle
from bench.plots import make_plots
from bench.report import write_report
from bench.targets import MODES

FULL = dict(sizes=(500, 2000), token_delay=0.01, observers=10,
            frames=((0, None), (0.016, 8), (0.024, 8), (0.024, None), (0.024, 12), (0.032, None)),
            levels=(10, 50, 100, 200),
            cap_tokens=300, cap_token_delay=0.03, cap_observers=10, ramp=2.0, idle=500, presence_window=30.0,
            client_procs=4, xp_replies=5, xp_tokens=500, xp_observers=5)
QUICK = dict(sizes=(200, 500), token_delay=0.004, observers=2, frames=((0, None),), levels=(10,),
             cap_tokens=100, cap_token_delay=0.02, cap_observers=10, ramp=0.5, idle=50, presence_window=5.0,
             client_procs=2, xp_replies=2, xp_tokens=200, xp_observers=2)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def parse_frame(spec):
    """"0.016" or "0.016:12" as (STREAM_FRAME_TIME, STREAM_FRAME_TEXT or None)."""
    time_part, _, text_part = spec.strip().partition(":")
    return float(time_part), int(text_part) if text_part else None


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (~1 min): sizes 200,500 at 4 ms/token, 2 observers, one frame (0), "
                             "capacity 10 only, 50 idle sockets")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"),
                        help="Markdown report to write; plots go next to it as bench-*.png "
                             "(default: docs/benchmarks.md)")
    parser.add_argument("--sizes", help="reply lengths in tokens, comma-separated (default 500,2000)")
    parser.add_argument("--token-delay", type=float, help="seconds between tokens in the bandwidth and "
                        "latency runs (default 0.01)")
    parser.add_argument("--observers", type=int, help="observer sockets in the bandwidth runs (default 10)")
    parser.add_argument("--frames", help="author stream settings for its bytes against latency, comma-separated: "
                        "STREAM_FRAME_TIME seconds, each optionally with :STREAM_FRAME_TEXT characters (the app's "
                        "default otherwise) (default 0,0.016:8,0.024:8,0.024,0.024:12,0.032)")
    parser.add_argument("--levels", help="concurrent replies per capacity level (default 10,50,100,200)")
    parser.add_argument("--cap-tokens", type=int, help="tokens per reply in the capacity runs (default 300)")
    parser.add_argument("--cap-token-delay", type=float,
                        help="seconds between tokens in the capacity runs (default 0.03)")
    parser.add_argument("--cap-observers", type=int, help="observer sockets per capacity level (default 10)")
    parser.add_argument("--ramp", type=float, help="askers of a capacity level start within this many seconds "
                        "(default 2.0)")
    parser.add_argument("--client-procs", type=int, help="client processes the capacity askers are spread "
                        "over (default 4)")
    parser.add_argument("--idle", type=int, help="idle observer sockets for the memory figure (default 500)")
    parser.add_argument("--presence-window", type=float, help="seconds the idle sockets are watched for lists of "
                        "people (default 30)")
    parser.add_argument("--modes", default=",".join(MODES), help="fan-out modes to measure (default: all three)")
    parser.add_argument("--xp-replies", type=int, help="replies in the cross-process run on PostgreSQL (default 5)")
    parser.add_argument("--xp-tokens", type=int, help="tokens per reply in the cross-process run (default 500)")
    parser.add_argument("--xp-observers", type=int, help="observers on each of the two processes (default 5)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: frames, capacity, idle, "
                        "crossprocess")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic replies")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (databases, SQL logs, gunicorn logs)")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    for name, value in base.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if isinstance(args.sizes, str):
        args.sizes = tuple(int(s) for s in args.sizes.split(",") if s.strip())
    if isinstance(args.frames, str):
        args.frames = tuple(parse_frame(s) for s in args.frames.split(",") if s.strip())
    if isinstance(args.levels, str):
        args.levels = tuple(int(s) for s in args.levels.split(",") if s.strip())
    args.modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        parser.error("unknown mode(s): " + ", ".join(unknown))
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    opts = parse_args(argv)
    sys.setswitchinterval(0.001)
    raise_nofile()
    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.monotonic()

    def log(message):
        print("[{:6.1f}s] {}".format(time.monotonic() - t_start, message), flush=True)

    # Fork the fake model's process and the client processes before any thread starts.
    ctx = multiprocessing.get_context("fork")
    fake = FakeProcess(ctx)
    pool = AskerPool(ctx, opts.client_procs) if "capacity" not in opts.skip and opts.levels else None
    meters.LOAD_PIDS[:] = [fake.proc.pid] + ([p.pid for p in pool.procs] if pool else [])
    workdir = tempfile.mkdtemp(prefix="streamchat-bench-")
    problems = {}
    bw, frames, capacity, idle, xp = [], [], [], None, None
    try:
        log("bandwidth and latency ({} observers, {} ms/token)".format(opts.observers, opts.token_delay * 1000))
        for mode in opts.modes:
            rows, probs = run_mode(mode, opts, fake, workdir, log)
            bw.extend(rows)
            problems["bw-" + mode] = probs
            fake.forget_requests()
        log("direct baseline")
        baseline = run_baseline(opts, fake, log)
        if "frames" not in opts.skip and opts.frames:
            log("author stream: bytes against latency per STREAM_FRAME_TIME")
            frames, problems["frames"] = run_frames(opts, fake, workdir, log)
        if "capacity" not in opts.skip and opts.levels:
            log("capacity ({} tokens per reply at {} ms/token)".format(opts.cap_tokens, opts.cap_token_delay * 1000))
            capacity, problems["capacity"] = run_capacity(opts, fake, pool, workdir, log)
        if "idle" not in opts.skip and opts.idle:
            log("idle sockets")
            idle, problems["idle"] = run_idle(opts, fake, workdir, log)
        if "crossprocess" not in opts.skip and opts.xp_replies:
            log("commit -> observer across processes (PostgreSQL)")
            xp, problems["crossprocess"] = run_crossprocess(opts, fake, workdir, log)
    finally:
        if pool:
            pool.close()
        fake.stop()
        if opts.keep:
            log("kept " + workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    out_dir = os.path.dirname(os.path.abspath(opts.out))
    os.makedirs(out_dir, exist_ok=True)
    plots = make_plots(out_dir, bw, baseline, capacity, opts)
    shown = [a for a in argv if a != "--keep"]
    write_report(opts.out, opts, bw, baseline, capacity, idle, problems, plots, started,
                 time.monotonic() - t_start, shown, xp, frames)
    log("wrote {}{}".format(opts.out, "".join(", " + p for p in plots)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
