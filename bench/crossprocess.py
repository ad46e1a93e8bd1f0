"""5: commit -> observer latency across processes, on PostgreSQL.

Two app servers (gunicorn, one gevent worker each) share one PostgreSQL
database; the asker posts to server A, so A generates the reply. Observers sit
on both: those on A get each chunk from A's own hub, those on B through the
relay (NOTIFY on commit, B's LISTEN connection, a re-read, a render). The
benchmark listens on the same channel itself: the moment PostgreSQL hands it a
chunk's notification stands for the commit (delivery happens at commit, on
loopback), so both kinds of observer are timed from the same instant."""
import os
import sys
import threading
import time

from bench import ROOT
from bench.clients import Asker
from bench.clients import Observer
from bench.clients import Session
from bench.clients import barrier
from bench.clients import warm_up
from bench.replies import script_key
from bench.server import Server
from bench.stats import ms
from bench.stats import pct
from bench.wire import append_id

sys.path.insert(0, os.path.join(ROOT, "tests"))

CHANNEL = "chat_events"


class Notifications:
    """The benchmark's own LISTEN connection: (message id, seq) -> receipt time."""

    def __init__(self, url):
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("LISTEN " + CHANNEL)
        self.appends = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            for notify in self.conn.notifies(timeout=0.5):
                t = time.monotonic()
                parts = notify.payload.split(" ")
                if len(parts) >= 4 and parts[1] == "append":
                    self.appends.setdefault((int(parts[2]), int(parts[3])), t)

    def close(self):
        self._stop = True
        self._thread.join(2)
        self.conn.close()


def append_times(frames, reply_id):
    """Arrival times of the reply's appends (its chunks' fragments), in order."""
    return [t for t, data in frames if append_id(data) == reply_id]


def run_crossprocess(opts, fake, workdir, log):
    """{"same": [s], "other": [s], "replies", "chunks"} or None when PostgreSQL is missing."""
    try:
        from support.pg import PostgresServer
        from support.pg import find_bin
    except ImportError:
        return None, ["tests/support/pg.py not found"]
    if not find_bin("initdb"):
        log("  PostgreSQL is not installed: skipped (apt-get install postgresql)")
        return None, ["PostgreSQL is not installed"]
    pg = PostgresServer().start()
    servers, observers, listener = [], [], None
    try:
        url = pg.create_database("bench")
        env = {"DATABASE_URL": url, "SOCKET_QUEUE_SIZE": "100000"}
        a = Server(workdir, "xp-a", fake.base_url, env).start()
        servers.append(a)
        b = Server(workdir, "xp-b", fake.base_url, env).start()
        servers.append(b)
        session = Session(a)
        warm_up(a, session, fake)
        warm_up(b, Session(b), fake)
        on_a = [Observer(a) for _ in range(opts.xp_observers)]
        on_b = [Observer(b) for _ in range(opts.xp_observers)]
        observers = on_a + on_b
        barrier(session, observers)
        listener = Notifications(url)
        same, other, chunks = [], [], 0
        for i in range(opts.xp_replies):
            key = script_key("xp-{}".format(i), opts.xp_tokens, opts.seed * 7919 + i, opts.token_delay)
            asker = Asker(session, key)
            asker.run()
            if asker.error or asker.status != 200 or not asker.reply_id:
                raise RuntimeError("cross-process asker failed: status {} {}".format(asker.status, asker.error))
            late = [o for o in observers if not o.wait_final(asker.reply_id, 60)]
            if late:
                raise RuntimeError("{} observer(s) never got reply {}".format(len(late), asker.reply_id))
            time.sleep(0.2)
            commits = {seq: t for (mid, seq), t in listener.appends.items() if mid == asker.reply_id}
            chunks += len(commits)
            for group, out in ((on_a, same), (on_b, other)):
                for o in group:
                    with o._cond:
                        frames = list(o.frames)
                        o.frames.clear()
                        o._scan.clear()
                    for seq, t in enumerate(append_times(frames, asker.reply_id), start=1):
                        if seq in commits:
                            out.append(t - commits[seq])
        result = dict(same=same, other=other, replies=opts.xp_replies, chunks=chunks,
                      observers=opts.xp_observers, tokens=opts.xp_tokens)
        log("  commit -> observer, same process: p50 {:.2f} ms p99 {:.2f} ms; other process: p50 {:.2f} ms "
            "p99 {:.2f} ms ({} chunks)".format(ms(pct(same, 50)), ms(pct(same, 99)), ms(pct(other, 50)),
                                                ms(pct(other, 99)), chunks))
        problems = []
        for s in servers:
            problems += s.log_problems()
        return result, problems
    finally:
        if listener is not None:
            listener.close()
        for o in observers:
            o.close()
        for s in servers:
            s.stop()
        pg.destroy()


def table(add, xp):
    """The report's section."""
    add("## Commit → observer across processes (PostgreSQL)")
    add("")
    if not xp:
        add("Not measured (PostgreSQL is not installed here).")
        add("")
        return
    add("Two app servers on one PostgreSQL database; {replies} replies of {tokens} tokens asked on server A, "
        "{observers} observers on each server. The clock starts when the benchmark's own `LISTEN` "
        "connection receives the chunk's notification (PostgreSQL delivers it at commit); it stops when "
        "the observer's socket has the append. Observers on A get the chunk from A's hub; observers on B "
        "through the relay (B's listener, a re-read of the chunk, a render).".format(**xp))
    add("")
    add("| Observer | Samples | p50 ms | p99 ms | max ms |")
    add("|---|---|---|---|---|")
    for label, values in (("same process (A)", xp["same"]), ("other process (B)", xp["other"])):
        add("| {} | {:,} | {:.2f} | {:.2f} | {:.2f} |".format(
            label, len(values), ms(pct(values, 50)), ms(pct(values, 99)), ms(max(values) if values else None)))
    if xp["same"] and xp["other"]:
        add("")
        add("Crossing processes adds {:.2f} ms at the median ({:.1f}× the same-process figure) and {:.2f} ms "
            "at p99.".format(ms(pct(xp["other"], 50) - pct(xp["same"], 50)),
                             pct(xp["other"], 50) / max(pct(xp["same"], 50), 1e-9),
                             ms(pct(xp["other"], 99) - pct(xp["same"], 99))))
    add("")
