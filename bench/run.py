"""Benchmark the streaming chat on a real server and write a Markdown report.

Starts the real server -- gunicorn with one gevent worker, SQLite in a
temporary directory, SEED_DEMO=0, rate limits raised through the environment
-- against a fake OpenAI-compatible server (tests/fake_openai.py, in a child
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
     model directly (same run, same tokens, same pace);
  3. capacity of one worker: N concurrent replies watched by observers;
  4. memory per idle observer socket.

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
import functools
import html
import http.client
import json
import multiprocessing
import os
import platform
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOOK_DIR = os.path.dirname(os.path.abspath(__file__))  # holds sitecustomize.py
sys.path.insert(0, os.path.join(ROOT, "tests"))

import websocket  # noqa: E402  (websocket-client)
from fake_openai import FakeOpenAI  # noqa: E402
from fake_openai import _Handler  # noqa: E402

MODES = ("append", "whole-per-chunk", "whole-per-token")
MODE_NOTES = {
    "append": "this design: tokens to the asker, one append per committed chunk to observers",
    "whole-per-chunk": "baseline (b): sentence commits, every observer gets the whole message each time",
    "whole-per-token": "baseline (a): every token rewrites the body in the DB and goes, whole, to everyone",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOAD_PIDS = []  # the benchmark's child processes, counted with it as the load generator
FULL = dict(sizes=(500, 2000), token_delay=0.01, observers=10, levels=(10, 50, 100, 200),
            cap_tokens=300, cap_token_delay=0.03, cap_observers=10, ramp=2.0, idle=500,
            client_procs=4)
QUICK = dict(sizes=(200, 500), token_delay=0.004, observers=2, levels=(10,),
             cap_tokens=100, cap_token_delay=0.02, cap_observers=10, ramp=0.5, idle=50,
             client_procs=2)

# What the targets are (see docs/benchmarks.md).
TARGET_OBSERVER_RATIO = 1.5
TARGET_ASKER_RATIO = 2.0
TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 5.0
TARGET_CAPACITY_P99_MS = 50.0
TARGET_CAPACITY_LEVEL = 100
TARGET_IDLE_KB = 30.0


# -- synthetic replies -----------------------------------------------------------

_WORDS = """the of and to a in is it that for you was on are as with be this have from or
by one had not but what all were when we there can an your which their said if do will each
about how up out them then she many some so these would other into has more her two like him
see time could no make than first been its who now people my made over did down only way find
use may water long little very after words called just where most know get through back much
before go good new write our used me man too any day same right look think also around another
came come work three word must because does part even place well such here take why things help
put years different away again off went old number great tell men say small every found still
between name should home big give air line set own under read last never us left end along while
might next sound below saw something thought both few those always looked show large often
together asked house world going want school important until form food keep children feet land
side without boy once animals life enough took sometimes four head above kind began almost live
page got earth need far hand high year mother light parts country father let night following
picture being study second eyes soon times story boys since white days paper hard near better
best across during today others however sure means knew try told young miles sun ways thing whole
hear example heard several change answer room sea against top turned learn point city play toward
five using himself usually server stream token reply message chunk sentence browser socket
latency database request response fragment model question network memory worker""".split()
_CONTRACTIONS = ["it's", "don't", "you're", "that's", "isn't", "we'll", "can't", "there's", "I'm",
                 "doesn't", "won't", "they're", "let's", "what's", "you'll"]


def make_tokens(count, seed):
    """``count`` word tokens of English-like text, the way chat models stream it:
    a leading space on each word, punctuation as its own token, a few commas and
    contractions (apostrophes, which HTML-escaping lengthens), rare **bold**, and
    a blank-line token between paragraphs of 3 to 6 sentences."""
    rng = random.Random(seed)
    tokens = []
    start_of_paragraph = True
    sentences = 0
    paragraph_length = rng.randint(3, 6)
    while len(tokens) < count:
        length = rng.randint(6, 20)
        for i in range(length):
            r = rng.random()
            word = rng.choice(_CONTRACTIONS) if r < 0.04 else rng.choice(_WORDS)
            if i == 0:
                word = word[0].upper() + word[1:]
            elif r > 0.99:
                word = "**{}**".format(word)
            tokens.append(word if start_of_paragraph else " " + word)
            start_of_paragraph = False
            if 0 < i < length - 2 and rng.random() < 0.06:
                tokens.append(",")
        tokens.append(rng.choices([".", "?", "!"], [85, 10, 5])[0])
        sentences += 1
        if sentences >= paragraph_length:
            tokens.append("\n\n")
            start_of_paragraph = True
            sentences = 0
            paragraph_length = rng.randint(3, 6)
    tokens = tokens[:count]
    if tokens[-1] not in (".", "?", "!"):
        tokens[-1] = "."
    if len(tokens) > 1 and tokens[-2] in ("\n\n", ",", ".", "?", "!"):
        tokens[-2] = " done"
    return tokens


# -- the fake model, with a send time per token ---------------------------------------

_KEY_RE = re.compile(r"bench-key:([\w.-]+)")


def request_key(body):
    """The ``bench-key:...`` tag in the last user message of a request body."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            found = _KEY_RE.search(str(message.get("content")))
            return found.group(1) if found else None
    return None


def script_key(label, count, seed, delay):
    """A request key that carries its own script: ``count`` tokens from
    ``make_tokens(count, seed)``, ``delay`` seconds apart."""
    return "{}.n{}.s{}.d{}".format(label, count, seed, repr(float(delay)))


_SCRIPT_RE = re.compile(r"\.n(\d+)\.s(\d+)\.d([\d.e-]+)$")


@functools.lru_cache(maxsize=64)
def _script_tokens(count, seed):
    return tuple(make_tokens(count, seed))


def script_of(key):
    """(tokens, delay) for a key made by ``script_key``, or None."""
    found = _SCRIPT_RE.search(key or "")
    if not found:
        return None
    return list(_script_tokens(int(found.group(1)), int(found.group(2)))), float(found.group(3))


class _TimedHandler(_Handler):
    """FakeOpenAI's handler, streaming the tokens a request's key names and
    recording ``time.monotonic()`` as each content token is written; plus two
    routes for the benchmark: ``POST /bench/sent`` (a JSON list of keys ->
    their send times, forgotten once read) and ``POST /bench/forget``."""

    def do_POST(self):
        fake = self.server.fake
        if self.path in ("/bench/sent", "/bench/orphans", "/bench/default"):
            payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
            with fake._lock:
                if self.path == "/bench/sent":
                    found = {k: fake.sent.pop(k, []) for k in payload}
                else:
                    if self.path == "/bench/default":
                        fake.default_script = payload
                    found = {k: fake.sent.pop(k, []) for k in fake.orphans}
                    fake.orphans = []
            self._send_json(200, found)
        elif self.path == "/bench/forget":
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.server.fake.forget_requests()
            self._send_json(200, {})
        else:
            super().do_POST()

    def _stream(self, fake, body, meta, tokens, delay, *rest, **kwargs):
        key = request_key(body)
        asked = any(isinstance(m, dict) and m.get("role") == "user" for m in body.get("messages") or [])
        with fake._lock:
            if key is None or key in fake.used or script_of(key) is None:
                reason = "dup" if key in fake.used else ("other" if asked else "none")
                # The request does not carry a key of its own (see the report: a reply
                # whose context lost its question). Stream a reply of the default
                # length that no other request gets, under a key of its own.
                key = None
                if fake.default_script:
                    fake.unkeyed += 1
                    key = script_key("unkeyed-{}-{}".format(reason, fake.unkeyed), fake.default_script[0],
                                     10 ** 6 + fake.unkeyed, fake.default_script[1])
                    fake.orphans.append(key)
            if key:
                fake.used.add(key)
                self._sent = fake.sent[key] = []
            else:
                self._sent = []
        script = script_of(key)
        if script is not None:
            tokens, delay = script
        super()._stream(fake, body, meta, tokens, delay, *rest, **kwargs)

    def _sse(self, obj):
        # As FakeOpenAI writes an event, but a token's time is taken just before
        # the write: a reader may wake and timestamp it before write() returns.
        payload = obj if isinstance(obj, str) else json.dumps(obj)
        data = "data: {}\n\n".format(payload).encode()
        if isinstance(obj, dict) and obj.get("choices") and "content" in obj["choices"][0].get("delta", {}):
            self._sent.append(time.monotonic())
        self.wfile.write(data)
        self.wfile.flush()


class _BacklogServer(ThreadingHTTPServer):
    request_queue_size = 1024  # 200 replies connect at once
    daemon_threads = True


class TimedFake(FakeOpenAI):
    """FakeOpenAI whose replies are named by the request's key, with per-key
    token send times (``sent[key]``)."""

    def __init__(self):
        super().__init__(token_delay=0.01)
        self.sent = {}
        self.used = set()  # keys already streamed once
        self.orphans = []  # keys made up for requests without a key of their own
        self.unkeyed = 0
        self.default_script = None  # (count, delay) for those

    def bind(self):
        self._stopping.clear()
        self._httpd = _BacklogServer(("127.0.0.1", self.port), _TimedHandler)
        self._httpd.fake = self
        self.port = self._httpd.server_address[1]
        return self

    def forget_requests(self):
        with self._lock:
            self.requests.clear()
            self.headers.clear()


def _fake_main(conn):
    fake = TimedFake().start()
    conn.send(fake.port)
    try:
        conn.recv()  # anything, or EOF: stop
    except EOFError:
        pass
    fake.stop()


class FakeProcess:
    """The fake model in a process of its own, so that its hundreds of writing
    threads do not share a GIL with the clients that time what they read."""

    def __init__(self, ctx):
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_fake_main, args=(child,), daemon=True, name="fake-openai")
        self.proc.start()
        if not self._conn.poll(30):
            raise RuntimeError("the fake model did not start")
        self.port = self._conn.recv()
        self.base_url = "http://127.0.0.1:{}/v1".format(self.port)

    def _post(self, path, payload):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("POST", path, json.dumps(payload), {"Content-Type": "application/json"})
        data = conn.getresponse().read()
        conn.close()
        return json.loads(data)

    def sent(self, keys):
        """{key: [time each content token was written]} (each key answered once)."""
        return self._post("/bench/sent", list(keys))

    def forget_requests(self):
        self._post("/bench/forget", {})

    def orphans(self, default=None):
        """{made-up key: send times} of requests that carried no key of their own
        since the last call; ``default`` (count, delay) sets their script from now on."""
        return self._post("/bench/default" if default else "/bench/orphans", list(default) if default else None)

    def stop(self):
        try:
            self._conn.send("stop")
        except OSError:
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


# -- the real server --------------------------------------------------------------------


def app_default(name):
    """A setting's default as app.py's create_app writes it (``NAME=value,``), as text."""
    try:
        with open(os.path.join(ROOT, "app.py")) as f:
            found = re.search(r"^\s*{}=([^,\n]+),".format(re.escape(name)), f.read(), re.M)
        return found.group(1).strip() if found else "?"
    except OSError:
        return "?"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_stat(pid):
    """(ppid, utime+stime in seconds) of a process from /proc."""
    with open("/proc/{}/stat".format(pid)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kb(pid):
    with open("/proc/{}/status".format(pid)) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_fds(pid):
    try:
        return len(os.listdir("/proc/{}/fd".format(pid)))
    except OSError:
        return None


class Server:
    """gunicorn, one gevent worker, on a loopback port; its SQL write log."""

    def __init__(self, workdir, name, llm_url, env=None):
        self.name = name
        self.port = free_port()
        self.url = "http://127.0.0.1:{}".format(self.port)
        self.db_path = os.path.join(workdir, name + ".db")
        self.trace_path = os.path.join(workdir, name + ".sql.jsonl")
        self.log_path = os.path.join(workdir, name + ".gunicorn.log")
        self.env = dict(os.environ)
        self.env.update({
            "DATABASE_URL": "sqlite:///" + self.db_path,
            "SECRET_KEY": "bench-" + secrets.token_hex(8),
            "SEED_DEMO": "0",
            "PYTHONUNBUFFERED": "1",
            "OPENAI_API_KEY": "bench-key",
            "OPENAI_BASE_URL": llm_url,
            "OPENAI_MODEL": "fake-model",
            "POSTS_PER_MINUTE": "1000000",
            "ASKS_PER_MINUTE": "1000000",
            "MAX_CONCURRENT_REPLIES": "1000000",
            "REPLIES_PER_SESSION": "1000000",
            "BENCH_SQL_TRACE": self.trace_path,
        })
        self.env.update(env or {})
        path = self.env.get("PYTHONPATH")
        self.env["PYTHONPATH"] = HOOK_DIR + (os.pathsep + path if path else "")
        self.proc = None
        self.worker = None
        self._log = None

    def start(self):
        cmd = [sys.executable, "-m", "gunicorn", "--worker-class", "gevent", "--workers", "1",
               "--bind", "127.0.0.1:{}".format(self.port), "--no-control-socket",
               "--graceful-timeout", "5", "app:create_app()"]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/")
                ok = conn.getresponse().status == 200
                conn.close()
                if ok:
                    self.worker = self._find_worker()
                    return self
            except (OSError, http.client.HTTPException):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("gunicorn did not start:\n" + self.logs()[-3000:])

    def _find_worker(self):
        for _ in range(50):
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        if proc_stat(int(entry))[0] == self.proc.pid:
                            return int(entry)
                    except (OSError, IndexError, ValueError):
                        continue
            time.sleep(0.1)
        raise RuntimeError("no gunicorn worker process found")

    def cpu(self):
        return proc_stat(self.worker)[1]

    def rss_kb(self):
        return proc_rss_kb(self.worker)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._log:
            self._log.close()
            self._log = None

    def logs(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_problems(self):
        """Lines of the server log that report errors (tracebacks, ERROR, WARNING)."""
        lines = self.logs().splitlines()
        return [line for line in lines if re.search(r"Traceback|\[ERROR\]|ERROR|WARNING|Error:", line)]


# -- the SQL write log ------------------------------------------------------------------

_WRITE_RE = re.compile(r'^\s*(INSERT(?:\s+OR\s+\w+)?\s+INTO|UPDATE|DELETE\s+FROM|REPLACE\s+INTO)\s+"?(\w+)"?', re.I)
_INSERT_RE = re.compile(r'^\s*INSERT\s+INTO\s+"?\w+"?\s*\(([^)]*)\)\s*VALUES\s*\((.*)\)\s*$', re.S | re.I)


def sql_literals(text):
    """The values of a VALUES list / SET clause: strings unquoted, others raw."""
    values, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == "'":
            parts, j = [], i + 1
            while True:
                k = text.index("'", j)
                parts.append(text[j:k])
                if k + 1 < n and text[k + 1] == "'":
                    parts.append("'")
                    j = k + 2
                    continue
                i = k + 1
                break
            values.append("".join(parts))
        elif c in ", \n\t":
            i += 1
        else:
            m = re.compile(r"[^,\s]+").match(text, i)
            values.append(m.group())
            i = m.end()
    return values


def string_literal_bytes(sql):
    """UTF-8 bytes of every quoted string value in an expanded statement."""
    total, i, n = 0, 0, len(sql)
    while True:
        i = sql.find("'", i)
        if i < 0:
            return total
        parts, j = [], i + 1
        while True:
            k = sql.index("'", j)
            parts.append(sql[j:k])
            if k + 1 < n and sql[k + 1] == "'":
                parts.append("'")
                j = k + 2
                continue
            i = k + 1
            break
        total += len("".join(parts).encode("utf-8"))


class Write:
    __slots__ = ("t", "conn", "sql", "verb", "table", "commit_t", "columns")

    def __init__(self, t, conn, sql):
        self.t, self.conn, self.sql = t, conn, sql
        m = _WRITE_RE.match(sql)
        self.verb = m.group(1).split()[0].upper() if m else sql.split()[0].upper()
        self.table = m.group(2).lower() if m else "?"
        self.commit_t = t
        self.columns = None
        if self.verb == "INSERT":
            ins = _INSERT_RE.match(sql)
            if ins:
                names = [c.strip().strip('"') for c in ins.group(1).split(",")]
                try:
                    self.columns = dict(zip(names, sql_literals(ins.group(2))))
                except ValueError:
                    self.columns = None


class Trace:
    """Reads the server's SQL write log incrementally; knows each write's commit time."""

    def __init__(self, path):
        self.path = path
        self.pos = 0
        self.writes = []
        self._open = {}  # connection -> writes of its open transaction

    def load(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return self
        end = data.rfind(b"\n") + 1
        self.pos += end
        for line in data[:end].splitlines():
            t, conn, sql = json.loads(line)
            if sql == "BEGIN":
                self._open[conn] = []
            elif sql in ("COMMIT", "ROLLBACK"):
                for w in self._open.pop(conn, []):
                    w.commit_t = t
            else:
                w = Write(t, conn, sql)
                if conn in self._open:
                    self._open[conn].append(w)
                self.writes.append(w)
        return self

    def between(self, t0, t1):
        return [w for w in self.writes if t0 <= w.t <= t1]

    def chunk_commits(self):
        """{(message id, seq): commit time} of every chunk INSERT seen so far."""
        out = {}
        for w in self.writes:
            if w.verb == "INSERT" and w.table == "chunk" and w.columns:
                try:
                    out[(int(w.columns["message_id"]), int(w.columns["seq"]))] = w.commit_t
                except (KeyError, ValueError):
                    pass
        return out


# -- clients ---------------------------------------------------------------------------


class _Address:
    def __init__(self, port):
        self.port = port
        self.url = "http://127.0.0.1:{}".format(port)


class Session:
    """One browser session: its cookie and CSRF token (from GET /)."""

    @classmethod
    def of(cls, port, cookie, csrf):
        """The same session in another process (no request made)."""
        session = cls.__new__(cls)
        session.server, session.cookie, session.csrf = _Address(port), cookie, csrf
        return session

    def __init__(self, server):
        self.server = server
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", "/")
        resp = conn.getresponse()
        page = resp.read().decode("utf-8")
        self.cookie = resp.getheader("Set-Cookie").split(";")[0]
        self.csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
        conn.close()

    def headers(self, sse):
        h = {"Content-Type": "application/x-www-form-urlencoded", "HX-Request": "true",
             "X-CSRF-Token": self.csrf, "Cookie": self.cookie, "Origin": self.server.url}
        h["Accept"] = "text/html, text/event-stream" if sse else "text/html"
        return h

    def say(self, text):
        """Post a plain message (no model); returns its id."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        body = urllib.parse.urlencode({"body": text, "page": secrets.token_hex(8)})
        conn.request("POST", "/messages", body, self.headers(sse=False))
        resp = conn.getresponse()
        data = resp.read().decode("utf-8")
        conn.close()
        if resp.status != 200:
            raise RuntimeError("posting failed: {} {}".format(resp.status, data[:300]))
        return int(re.search(r'id="message-(\d+)"', data).group(1))


class Asker:
    """Posts an @gpt question and reads the whole event stream, timestamping each read."""

    def __init__(self, session, key, tokens=None, page=None):
        self.session = session
        self.key = key
        self.tokens = tokens if tokens is not None else (script_of(key) or ([], 0))[0]
        self.page = page or secrets.token_hex(8)
        self.text = "@gpt bench-key:{} please answer".format(key)
        self.chunks = []  # (monotonic time, body bytes)
        self.status = None
        self.reply_id = None
        self.error = None
        self.t_post = None

    def run(self):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.session.server.port, timeout=120)
            body = urllib.parse.urlencode({"body": self.text, "page": self.page})
            self.t_post = time.monotonic()
            conn.request("POST", "/messages", body, self.session.headers(sse=True))
            resp = conn.getresponse()
            self.status = resp.status
            self.reply_id = int(resp.getheader("X-Reply-Id") or 0) or None
            while True:
                data = resp.read1(65536)
                if not data:
                    break
                self.chunks.append((time.monotonic(), data))
            conn.close()
        except Exception as exc:  # recorded and reported, never raised from a thread
            self.error = repr(exc)


def _asker_main(conn):
    """A client process: runs batches of askers, each on its own thread, each
    posting at its appointed ``time.monotonic()``, and sends back what they read."""
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        port, cookie, csrf, items, timeout = job
        session = Session.of(port, cookie, csrf)
        askers = [Asker(session, key, tokens=[], page=page) for key, page, _ in items]

        def run(asker, at):
            pause = at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            asker.run()

        threads = [threading.Thread(target=run, args=(a, at), daemon=True) for a, (_, _, at) in zip(askers, items)]
        for th in threads:
            th.start()
        deadline = time.monotonic() + timeout
        for th in threads:
            th.join(max(0.1, deadline - time.monotonic()))
        conn.send([(a.key, a.status, a.reply_id, a.error or (None if not th.is_alive() else "timed out"),
                    a.chunks, a.t_post) for a, th in zip(askers, threads)])


class AskerPool:
    """Client processes for the capacity levels, forked before any thread starts."""

    def __init__(self, ctx, procs):
        self.conns, self.procs = [], []
        for i in range(procs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_asker_main, args=(child,), daemon=True, name="askers-{}".format(i))
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def run(self, session, askers, times, timeout):
        """Run ``askers`` (posting at ``times``) spread over the processes; fills them in."""
        batches = [[] for _ in self.conns]
        for i, (asker, at) in enumerate(zip(askers, times)):
            batches[i % len(batches)].append((asker, at))
        for conn, batch in zip(self.conns, batches):
            conn.send((session.server.port, session.cookie, session.csrf,
                       [(a.key, a.page, at) for a, at in batch], timeout))
        by_key = {a.key: a for a in askers}
        for conn, batch in zip(self.conns, batches):
            if not conn.poll(timeout + 30):
                raise RuntimeError("a client process did not answer")
            for key, status, reply_id, error, chunks, t_post in conn.recv():
                a = by_key[key]
                a.status, a.reply_id, a.error, a.chunks, a.t_post = status, reply_id, error, chunks, t_post

    def close(self):
        for conn in self.conns:
            try:
                conn.send(None)
            except OSError:
                pass
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


_ARTICLE_RE = re.compile(r'<article class="message" id="message-(\d+)"([^>]*)>')
_STATUS_RE = re.compile(r'data-status="(\w+)"')
_BODY_RE = re.compile(r'id="message-(\d+)-body">(.*?)</div>', re.S)
_APPEND_PREFIX = b'<i hx-swap-oob="beforeend:#message-'
_APPEND_ID_RE = re.compile(rb'<i hx-swap-oob="beforeend:#message-(\d+)-body">')


def articles_of(text):
    """[(id, status)] of the articles in an upsert fragment."""
    out = []
    for m in _ARTICLE_RE.finditer(text):
        status = _STATUS_RE.search(m.group(2))
        out.append((int(m.group(1)), status.group(1) if status else "?"))
    return out


def parse_asker(asker):
    """What the asker's stream carried, and when its text grew.

    Returns bytes (total, by part), event counts, and ``progress``: a list of
    (time of the read, characters of reply text received so far)."""
    out = dict(bytes=0, first_bytes=0, token_bytes=0, whole_bytes=0, final_bytes=0, other_bytes=0,
               token_escaped_bytes=0, token_text_bytes=0, text=[],
               token_events=0, whole_events=0, final=None, final_t=None, progress=[], question_id=None)
    buf = b""
    received = 0
    first = True
    for t, data in asker.chunks:
        out["bytes"] += len(data)
        buf += data
        while True:
            cut = buf.find(b"\n\n")
            if cut < 0:
                break
            raw, buf = buf[:cut + 2], buf[cut + 2:]
            lines = raw.decode("utf-8").split("\n")
            datas = []
            for line in lines:
                if line.startswith("data:"):
                    value = line[5:]
                    datas.append(value[1:] if value.startswith(" ") else value)
            if not datas:
                out["other_bytes"] += len(raw)  # keep-alive comments
                continue
            payload = "\n".join(datas)
            if first:
                first = False
                out["first_bytes"] += len(raw)
                ids = [a for a in articles_of(payload)]
                users = [i for i, _ in ids if i != asker.reply_id]
                out["question_id"] = users[0] if users else None
                continue
            if payload.startswith("<hx-upsert"):
                arts = dict(articles_of(payload))
                status = arts.get(asker.reply_id)
                if status == "streaming":
                    out["whole_bytes"] += len(raw)
                    out["whole_events"] += 1
                    body = _BODY_RE.search(payload)
                    received = len(html.unescape(body.group(2))) if body else received
                    out["progress"].append((t, received))
                else:
                    out["final_bytes"] += len(raw)
                    out["final"] = status
                    out["final_t"] = t
                continue
            out["token_bytes"] += len(raw)
            out["token_events"] += 1
            plain = html.unescape(payload)
            out["token_escaped_bytes"] += len(payload.encode("utf-8"))
            out["token_text_bytes"] += len(plain.encode("utf-8"))
            out["text"].append(plain)
            received += len(plain)
            out["progress"].append((t, received))
    return out


def token_latencies(tokens, sent, progress, visible_only=True):
    """Per token: time its text was first fully received minus the time the
    fake model sent it. Tokens that are whitespace only are skipped by default:
    the server holds them until visible text follows (htmx ignores empty swaps)."""
    latencies = []
    end = 0
    j = 0
    for i, token in enumerate(tokens):
        end += len(token)
        if i >= len(sent):
            break
        while j < len(progress) and progress[j][1] < end:
            j += 1
        if j == len(progress):
            break
        if visible_only and not token.strip():
            continue
        latencies.append(progress[j][0] - sent[i])
    return latencies


class Observer:
    """A page socket that records every text frame with its arrival time."""

    def __init__(self, server, after=10 ** 9):
        self.page = secrets.token_hex(8)
        url = "ws://127.0.0.1:{}/ws?page={}&after={}".format(server.port, self.page, after)
        self.ws = websocket.create_connection(url, timeout=30, origin=server.url)
        self.ws.settimeout(None)
        self.frames = []  # (monotonic time, payload bytes)
        self.closed = False
        self._cond = threading.Condition()
        self._scan = {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            while True:
                opcode, data = self.ws.recv_data()
                t = time.monotonic()
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    with self._cond:
                        self.frames.append((t, data))
                        self._cond.notify_all()
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    return
        except Exception:
            return
        finally:
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    def wait_for(self, pattern, timeout):
        """Wait until a frame matches ``pattern`` (bytes regex); True if one did."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            pos = self._scan.get(pattern, 0)
            while True:
                while pos < len(self.frames):
                    if regex.search(self.frames[pos][1]):
                        self._scan[pattern] = pos + 1
                        return True
                    pos += 1
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    self._scan[pattern] = pos
                    return False
                self._cond.wait(min(left, 0.2))

    def wait_final(self, reply_id, timeout):
        return self.wait_for(rb'id="message-%d"[^>]*data-status="(?!streaming)' % reply_id, timeout)

    def wait_message(self, message_id, timeout):
        return self.wait_for(rb'id="message-%d"' % message_id, timeout)

    def close(self):
        close_socket(self.ws)
        self._thread.join(2)


def close_socket(ws):
    """Shut the connection down at once. (Closing the file descriptor alone would
    not send a FIN while another thread is blocked reading it.)"""
    try:
        ws.sock.shutdown(socket.SHUT_RDWR)
    except Exception:
        pass
    try:
        ws.shutdown()
    except Exception:
        pass


def warm_up(server, session, fake):
    """One short reply, watched by one observer, before anything is measured: the
    worker's first model call imports most of the openai SDK and its first
    render compiles templates, which would stall every other greenlet."""
    observer = Observer(server)
    try:
        barrier(session, [observer])
        key = script_key("warm-" + secrets.token_hex(4), 40, 7, 0.001)
        asker = Asker(session, key)
        asker.run()
        if asker.error or asker.status != 200 or not asker.reply_id:
            raise RuntimeError("warm-up reply failed: status {} {}\n{}".format(
                asker.status, asker.error, server.logs()[-2000:]))
        observer.wait_final(asker.reply_id, 30)
    finally:
        observer.close()


def barrier(session, observers, timeout=20):
    """Post a plain message and wait until every observer has it: they are all subscribed."""
    mid = session.say("sync {}".format(secrets.token_hex(4)))
    missing = [o for o in observers if not o.wait_message(mid, timeout)]
    if missing:
        raise RuntimeError("{} observer(s) never got the sync message".format(len(missing)))
    return mid


def observer_reply(frames, question_id, reply_id, t0):
    """Everything an observer received for one exchange after ``t0``: bytes by
    part, the times of appends (in order) and of streaming articles with text."""
    out = dict(bytes=0, article_bytes=0, append_bytes=0, whole_bytes=0, final_bytes=0, stray_bytes=0,
               append_escaped_bytes=0, append_text_bytes=0, appends=[], wholes=[], final_t=None, frames=0)
    ids = {question_id, reply_id}
    for t, data in frames:
        if t < t0:
            continue
        if data.startswith(_APPEND_PREFIX):
            m = _APPEND_ID_RE.match(data)
            if m and int(m.group(1)) == reply_id:
                inner = data[m.end():-len(b"</i>")]
                out["append_escaped_bytes"] += len(inner)
                out["append_text_bytes"] += len(html.unescape(inner.decode("utf-8")).encode("utf-8"))
                out["append_bytes"] += len(data)
                out["bytes"] += len(data)
                out["frames"] += 1
                out["appends"].append(t)
            else:
                out["stray_bytes"] += len(data)
            continue
        arts = articles_of(data.decode("utf-8"))
        if not any(i in ids for i, _ in arts):
            out["stray_bytes"] += len(data)
            continue
        out["bytes"] += len(data)
        out["frames"] += 1
        status = dict(arts).get(reply_id)
        if status is None or (status == "streaming" and not out["wholes"] and not out["appends"]
                              and _empty_body(data, reply_id)):
            out["article_bytes"] += len(data)  # the question, and the reply's empty article
        elif status == "streaming":
            out["whole_bytes"] += len(data)
            out["wholes"].append(t)
        else:
            out["final_bytes"] += len(data)
            out["final_t"] = t
            break
    return out


def _empty_body(data, reply_id):
    return ('id="message-{}-body"></div>'.format(reply_id)).encode() in data


def direct_read(fake, key):
    """The baseline: read the fake model's stream directly; (sent times, progress)."""
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=60)
    body = json.dumps({"model": "fake-model", "stream": True,
                       "messages": [{"role": "user", "content": "bench-key:" + key}]})
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    chunks = []
    while True:
        data = resp.read1(65536)
        if not data:
            break
        chunks.append((time.monotonic(), data))
    conn.close()
    progress, buf, received = [], b"", 0
    for t, data in chunks:
        buf += data
        while True:
            cut = buf.find(b"\n\n")
            if cut < 0:
                break
            raw, buf = buf[:cut], buf[cut + 2:]
            line = raw.decode("utf-8")
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("choices"):
                text = event["choices"][0].get("delta", {}).get("content")
                if text:
                    received += len(text)
                    progress.append((t, received))
    return fake.sent([key]).get(key, []), progress


# -- statistics ---------------------------------------------------------------------------


def pct(values, p):
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def ms(seconds):
    return None if seconds is None else seconds * 1000.0


def machine_busy():
    """CPU seconds all cores of the machine spent busy so far (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class CpuMeter:
    """Samples, five times a second: the worker's CPU time and RSS (from /proc),
    this process's CPU time, and the whole machine's busy CPU time."""

    def __init__(self, server, interval=0.2):
        self.server = server
        self.interval = interval
        self.samples = []  # (t, worker cpu s, this process cpu s, machine busy s, worker rss KB)
        self._stop = threading.Event()

    def _take(self):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        load = usage.ru_utime + usage.ru_stime
        for pid in LOAD_PIDS:  # the fake model's and the clients' processes
            try:
                load += proc_stat(pid)[1]
            except OSError:
                pass
        self.samples.append((time.monotonic(), self.server.cpu(), load, machine_busy(), self.server.rss_kb()))

    def __enter__(self):
        self._take()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            try:
                self._take()
            except OSError:
                return

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(2)
        self._take()
        self.rss_end = self.samples[-1][4]
        self.rss_peak = max(s[4] for s in self.samples)

    def rates(self, t0=None, t1=None):
        """% of one core used by the worker, by this process and by everything
        else on the machine between the samples nearest to t0 and t1."""
        samples = self.samples
        a = samples[0] if t0 is None else min(samples, key=lambda s: abs(s[0] - t0))
        b = samples[-1] if t1 is None else min(samples, key=lambda s: abs(s[0] - t1))
        wall = b[0] - a[0]
        if wall <= 0:
            return None
        worker, me, machine = (b[1] - a[1]) / wall, (b[2] - a[2]) / wall, (b[3] - a[3]) / wall
        return dict(worker=100 * worker, me=100 * me, others=100 * max(0.0, machine - worker - me),
                    wall=wall)


def sustained_window(intervals, fraction=0.9):
    """[(start, end)] periods during which at least ``fraction`` of the
    ``intervals`` (one per reply: first to last token received) overlap."""
    need = max(1, int(len(intervals) * fraction + 0.9999))
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    periods, active, since = [], 0, None
    for t, step in events:
        active += step
        if active >= need and since is None:
            since = t
        elif active < need and since is not None:
            periods.append((since, t))
            since = None
    return periods


# -- 1 and 2: bandwidth and latency, per mode -------------------------------------------------


def run_mode(mode, opts, fake, workdir, log):
    server = Server(workdir, "bw-" + mode, fake.base_url,
                    {"FANOUT_MODE": mode, "SOCKET_QUEUE_SIZE": "100000"}).start()
    trace = Trace(server.trace_path)
    results = []
    observers = []
    try:
        session = Session(server)
        warm_up(server, session, fake)
        observers = [Observer(server) for _ in range(opts.observers)]
        barrier(session, observers)
        for size in opts.sizes:
            key = script_key("{}-{}".format(mode, size), size, opts.seed * 1000 + size, opts.token_delay)
            asker = Asker(session, key)
            tokens = asker.tokens
            with CpuMeter(server) as meter:
                t0 = time.monotonic()
                asker.run()
                if asker.error or asker.status != 200 or not asker.reply_id:
                    raise RuntimeError("asker failed in {} ({}): status {} {}".format(
                        mode, size, asker.status, asker.error))
                timeout = 60 + size * opts.token_delay * 5
                late = [o for o in observers if not o.wait_final(asker.reply_id, timeout)]
            time.sleep(0.3)  # anything still on its way for this reply
            t1 = time.monotonic()
            trace.load()
            a = parse_asker(asker)
            sent = fake.sent([key]).get(key, [])
            text = "".join(tokens)
            writes = trace.between(t0, t1)
            obs = [observer_reply(list(o.frames), a["question_id"], asker.reply_id, t0) for o in observers]
            commits = trace.chunk_commits()
            chunk_writes = [w for w in writes if w.verb == "INSERT" and w.table == "chunk"]
            question_writes = [w for w in writes if w.verb == "INSERT" and w.table == "message"
                               and (w.columns or {}).get("role") == "user"]
            obs_lat = []
            for o in obs:
                times = o["appends"] if mode == "append" else o["wholes"]
                for seq, t in enumerate(times, start=1):
                    c = commits.get((asker.reply_id, seq))
                    if c is not None:
                        obs_lat.append(t - c)
            kinds = {}
            for w in writes:
                k = "{} {}".format(w.verb, w.table)
                kinds[k] = kinds.get(k, 0) + 1
            row = dict(
                mode=mode, size=size, text_bytes=len(text.encode("utf-8")), text_chars=len(text),
                asker=a, asker_bytes=a["bytes"],
                observer_bytes=[o["bytes"] for o in obs], observer=obs[0] if obs else None,
                stray=sum(o["stray_bytes"] for o in obs), late=len(late),
                statements=len(writes), question_statements=len(question_writes),
                reply_statements=len(writes) - len(question_writes), chunks=len(chunk_writes),
                statement_bytes=sum(len(w.sql.encode("utf-8")) for w in writes),
                value_bytes=sum(string_literal_bytes(w.sql) for w in writes),
                kinds=kinds,
                asker_latency=token_latencies(tokens, sent, a["progress"]),
                observer_latency=obs_lat,
                duration=(a["final_t"] or t1) - t0,
                final=a["final"], tokens_sent=len(sent), cpu=meter.rates(),
                wrapper=len('<i hx-swap-oob="beforeend:#message-{}-body"></i>'.format(asker.reply_id)),
            )
            results.append(row)
            log("  {:<16} {:>5} tokens: asker {:>9,} B  observer {:>10,} B  statements {:>5}  chunks {:>4}  {:.1f}s"
                "  CPU worker {:.0f}% others {:.0f}%{}".format(
                    mode, size, row["asker_bytes"], max(row["observer_bytes"] or [0]), row["statements"],
                    row["chunks"], row["duration"], row["cpu"]["worker"], row["cpu"]["others"],
                    "  ({} observer(s) never got the final article)".format(len(late)) if late else ""))
            for o in observers:  # free what was recorded for this reply
                with o._cond:
                    o.frames.clear()
                    o._scan.clear()
    finally:
        for o in observers:
            o.close()
        server.stop()
    problems = server.log_problems()
    return results, problems


def run_baseline(opts, fake, log):
    out = {}
    for size in opts.sizes:
        key = script_key("direct-{}".format(size), size, opts.seed * 1000 + size, opts.token_delay)
        sent, progress = direct_read(fake, key)
        out[size] = token_latencies(script_of(key)[0], sent, progress)
        log("  direct {:>5} tokens: p50 {:.3f} ms  p99 {:.3f} ms".format(
            size, ms(pct(out[size], 50)), ms(pct(out[size], 99))))
    return out


# -- 3: capacity ------------------------------------------------------------------------------


def run_capacity(opts, fake, pool, workdir, log):
    profile_path = os.path.join(workdir, "capacity.profile.json")
    server = Server(workdir, "capacity", fake.base_url,
                    {"FANOUT_MODE": "append", "BENCH_PROFILE": profile_path}).start()
    trace = Trace(server.trace_path)
    rows = []
    try:
        session = Session(server)
        warm_up(server, session, fake)
        for n in opts.levels:
            fake.forget_requests()
            observers = [Observer(server) for _ in range(opts.cap_observers)]
            barrier(session, observers)
            askers = [Asker(session, script_key("cap{}-{}".format(n, i), opts.cap_tokens,
                                                 opts.seed * 7919 + n * 1000 + i, opts.cap_token_delay))
                      for i in range(n)]
            rng = random.Random(n)
            offsets = sorted(rng.uniform(0, opts.ramp) for _ in askers)
            fake.orphans(default=(opts.cap_tokens, opts.cap_token_delay))
            time.sleep(0.5)
            profile0 = read_profile(profile_path)
            with CpuMeter(server) as meter:
                start = time.monotonic() + 0.2
                pool.run(session, askers, [start + o for o in offsets],
                         timeout=60 + opts.ramp + opts.cap_tokens * opts.cap_token_delay * 4)
                end = time.monotonic()
            replies = [a.reply_id for a in askers if a.reply_id]
            for o in observers:
                for r in replies:
                    if not o.wait_final(r, 10):
                        break
            time.sleep(1.1)
            profile = profile_delta(profile0, read_profile(profile_path))
            trace.load()
            commits = trace.chunk_commits()
            lat, obs_lat = [], []
            delivered, errors = 0, 0
            pairs, intervals, sends, send_intervals = [], [], [], []
            # Which stream each asker got is told by its text, not by its key: a reply whose
            # context lost its question (an app bug under load) is asked with another
            # question, or none, and the fake then streams a script of its own.
            streams = dict(fake.sent([a.key for a in askers]))
            streams.update(fake.orphans())
            by_prefix = {"".join(script_of(k)[0][:12]): k for k, times in streams.items() if times}
            misrouted = 0
            reasons = {}
            for k in streams:
                if k.startswith("unkeyed-"):
                    reason = k.split("-")[1]
                    reasons[reason] = reasons.get(reason, 0) + 1
            for a in askers:
                parsed = parse_asker(a)
                text = "".join(parsed["text"])
                key = a.key if text.startswith("".join(a.tokens[:12])) else next(
                    (k for prefix, k in by_prefix.items() if text.startswith(prefix)), None)
                if key != a.key:
                    misrouted += 1
                    a.tokens = script_of(key)[0] if key else []
                sent = streams.get(key, []) if key else []
                sends.extend(sent)
                if sent:
                    send_intervals.append((sent[0], sent[-1]))
                if a.error or a.status != 200 or parsed["final"] != "complete":
                    errors += 1
                got = token_pairs(a.tokens, sent, parsed["progress"])
                delivered += len(got)
                pairs.extend(got)
                if got:
                    intervals.append((got[0][1], got[-1][1]))
            lat = [r - s for s, r, visible in pairs if visible]
            # Sustained: while at least 90% of the level's replies were streaming.
            periods = sustained_window(intervals)
            length = sum(b - a for a, b in periods)
            window_fraction = 0.9
            if length < 1.0:  # the replies hardly overlapped at 90% (a lagging worker spreads them out)
                periods = sustained_window(intervals, 0.5)
                length = sum(b - a for a, b in periods)
                window_fraction = 0.5

            def inside(t):
                return any(a <= t <= b for a, b in periods)

            steady = sent_rate = None
            lat_window = []
            if length >= 1.0:
                steady = sum(1 for _, r, _ in pairs if inside(r)) / length
            # The fake model's own rate, over the time at least 90% of the replies were being written.
            sending = sustained_window(send_intervals)
            sending_length = sum(b - a for a, b in sending)
            if sending_length >= 1.0:
                sent_rate = sum(1 for t in sends if any(a <= t <= b for a, b in sending)) / sending_length
                lat_window = [r - s for s, r, visible in pairs if visible and inside(r)]
            total_span = (max(b for _, b in intervals) - min(sends)) if intervals and sends else end - start
            cpu = (meter.rates(periods[0][0], periods[-1][1]) if length >= 1.0 else None) or meter.rates()
            durations = sorted(b - a for a, b in intervals)
            dropped = sum(1 for o in observers if o.closed)
            frames_total = 0
            for o in observers:
                per_reply = {}
                for t, data in list(o.frames):
                    frames_total += 1
                    if data.startswith(_APPEND_PREFIX):
                        m = _APPEND_ID_RE.match(data)
                        if m:
                            rid = int(m.group(1))
                            seq = per_reply[rid] = per_reply.get(rid, 0) + 1
                            c = commits.get((rid, seq))
                            if c is not None:
                                obs_lat.append(t - c)
            row = dict(n=n, observers=len(observers), offered=n / opts.cap_token_delay, sent_rate=sent_rate,
                       delivered=delivered / total_span if total_span > 0 else None, steady=steady,
                       p50=ms(pct(lat, 50)), p99=ms(pct(lat, 99)), max=ms(max(lat) if lat else None),
                       w_p50=ms(pct(lat_window, 50)), w_p99=ms(pct(lat_window, 99)),
                       obs_p50=ms(pct(obs_lat, 50)), obs_p99=ms(pct(obs_lat, 99)),
                       cpu=cpu["worker"], bench_cpu=cpu["me"], others_cpu=cpu["others"],
                       us_per_token=(cpu["worker"] / 100.0 / (steady or delivered / total_span) * 1e6)
                       if (steady or (delivered and total_span > 0)) else None,
                       cpu_window=cpu["wall"], sustained=length, window_fraction=window_fraction,
                       stretch=(pct(durations, 50) / ((opts.cap_tokens - 1) * opts.cap_token_delay))
                       if durations else None,
                       rss_peak=meter.rss_peak / 1024.0, rss_end=meter.rss_end / 1024.0,
                       errors=errors, dropped=dropped, tokens=delivered, latencies=lat, frames=frames_total,
                       misrouted=misrouted, misrouted_reasons=reasons,
                       profile=profile)
            rows.append(row)
            log("  {:>4} replies: {:>7.0f} tok/s delivered (sent {}, offered {:.0f}, sustained {:.1f}s), asker p50 "
                "{:.1f} ms p99 {:.1f} ms (sustained p99 {}), observer p99 {} ms, CPU worker {:.0f}% bench {:.0f}% "
                "others {:.0f}%, RSS {:.0f} MB, reply stretch {}, errors {}, dropped {}, without their question {}".format(
                    n, row["steady"] or row["delivered"] or 0, fmt_int(sent_rate), row["offered"], length,
                    row["p50"] or 0, row["p99"] or 0, fmt(row["w_p99"], 1), "{:.1f}".format(row["obs_p99"]) if row["obs_p99"] is not None else "-",
                    row["cpu"], row["bench_cpu"], row["others_cpu"], row["rss_peak"], fmt(row["stretch"]),
                    errors, dropped, misrouted))
            for o in observers:
                o.close()
            for a in askers:
                a.chunks = []
    finally:
        server.stop()
    return rows, server.log_problems()


def read_profile(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def profile_delta(before, after):
    """Samples per key between two cumulative profiles of the worker."""
    if not after:
        return None
    before = before or {"app": {}, "lib": {}, "samples": 0}
    out = {"samples": after["samples"] - before["samples"], "interval": after.get("interval", 0.002)}
    for kind in ("app", "lib"):
        out[kind] = {k: v - before[kind].get(k, 0) for k, v in after[kind].items()}
    return out


def token_pairs(tokens, sent, progress):
    """[(sent, received, visible)] per token, in order, as far as both are known."""
    out, end, j = [], 0, 0
    for i, token in enumerate(tokens):
        end += len(token)
        if i >= len(sent):
            break
        while j < len(progress) and progress[j][1] < end:
            j += 1
        if j == len(progress):
            break
        out.append((sent[i], progress[j][0], bool(token.strip())))
    return out


# -- 4: idle sockets ----------------------------------------------------------------------------


_GREENLET_PROBE = """
from gevent import monkey; monkey.patch_all()
import gc, gevent, gevent.event
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
event = gevent.event.Event()
def park(depth):
    return event.wait() if depth == 0 else park(depth - 1)
warm = [gevent.spawn(park, 20) for _ in range(50)]
gevent.sleep(0.1); gc.collect(); before = rss()
parked = [gevent.spawn(park, 20) for _ in range(2000)]
gevent.sleep(0.2); print((rss() - before) / 2000)
event.set(); gevent.joinall(warm + parked)
"""


def greenlet_kb():
    """KB of RSS per parked gevent greenlet (20 Python frames deep), in a fresh process."""
    try:
        out = subprocess.run([sys.executable, "-c", _GREENLET_PROBE], capture_output=True, text=True, timeout=60)
        return float(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def run_idle(opts, fake, workdir, log):
    server = Server(workdir, "idle", fake.base_url, {"FANOUT_MODE": "append"}).start()
    sockets = []
    try:
        session = Session(server)
        warm_up(server, session, fake)
        warm = [Observer(server) for _ in range(10)]  # load every code path once
        barrier(session, warm)
        for o in warm:
            o.close()
        time.sleep(1.0)
        fds0 = proc_fds(server.worker)
        rss0 = server.rss_kb()
        half_rss = None
        url = "ws://127.0.0.1:{}/ws?page={{}}&after={}".format(server.port, 10 ** 9)
        for i in range(opts.idle):
            sockets.append(websocket.create_connection(url.format(secrets.token_hex(8)), timeout=30,
                                                       origin=server.url))
            if i + 1 == opts.idle // 2:
                time.sleep(0.5)
                half_rss = server.rss_kb()
        mid = session.say("are you all there?")
        got = 0
        for ws in sockets:  # every socket is subscribed and has received one frame
            try:
                ws.settimeout(10)
                if ('id="message-{}"'.format(mid)) in ws.recv():
                    got += 1
            except Exception:
                pass
        time.sleep(1.0)
        rss1 = server.rss_kb()
        fds1 = proc_fds(server.worker)
        result = dict(count=opts.idle, rss0=rss0, rss1=rss1, per_kb=(rss1 - rss0) / opts.idle,
                      greenlet_kb=greenlet_kb(),
                      second_half_kb=(rss1 - half_rss) / (opts.idle - opts.idle // 2) if half_rss else None,
                      answered=got, fds=(fds1 - fds0) if fds0 is not None and fds1 is not None else None)
        log("  {} idle sockets: RSS {:.1f} -> {:.1f} MB, {:.1f} KB per socket ({} answered)".format(
            opts.idle, rss0 / 1024, rss1 / 1024, result["per_kb"], got))
    finally:
        for ws in sockets:
            close_socket(ws)
        server.stop()
    return result, server.log_problems()


# -- the report -------------------------------------------------------------------------------


def fmt_int(v):
    return "–" if v is None else "{:,}".format(int(round(v)))


def fmt(v, digits=2):
    return "–" if v is None else "{:,.{}f}".format(v, digits)


def verdict(value, target, lower_is_better=True):
    if value is None:
        return "not measured"
    if value <= target:
        return "**met**"
    over = value - target
    return "**missed** by {} ({:.0f}% over)".format(fmt(over), 100.0 * over / target if target else float("inf"))


def make_plots(out_dir, bw, baseline, capacity, opts):
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    # Bandwidth: bytes / reply text, log scale, with the targets.
    fig, axes = plt.subplots(1, len(opts.sizes), figsize=(5.2 * len(opts.sizes), 4.2), squeeze=False)
    for ax, size in zip(axes[0], opts.sizes):
        rows = [r for r in bw if r["size"] == size]
        labels = [r["mode"] for r in rows]
        x = range(len(rows))
        width = 0.26
        obs = [max(r["observer_bytes"] or [0]) / r["text_bytes"] for r in rows]
        ask = [r["asker_bytes"] / r["text_bytes"] for r in rows]
        dbb = [r["statement_bytes"] / r["text_bytes"] for r in rows]
        ax.bar([i - width for i in x], ask, width, label="asker")
        ax.bar(list(x), obs, width, label="each observer")
        ax.bar([i + width for i in x], dbb, width, label="DB statements")
        ax.axhline(TARGET_OBSERVER_RATIO, color="C1", ls="--", lw=1, label="observer target 1.5×")
        ax.axhline(TARGET_ASKER_RATIO, color="C0", ls=":", lw=1, label="asker target 2×")
        ax.set_yscale("log")
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels)
        ax.set_title("{:,} tokens ({:,} B of text)".format(size, rows[0]["text_bytes"] if rows else 0))
        ax.set_ylabel("bytes per reply ÷ reply text bytes")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out_dir, "bench-bandwidth.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)

    # Latency CDFs.
    fig, ax = plt.subplots(figsize=(7, 4.2))
    series = [("direct read of the fake model", [v for vs in baseline.values() for v in vs])]
    for mode in MODES:
        rows = [r for r in bw if r["mode"] == mode]
        series.append(("asker, " + mode, [v for r in rows for v in r["asker_latency"]]))
    rows = [r for r in bw if r["mode"] == "append"]
    series.append(("observer (chunk commit →), append", [v for r in rows for v in r["observer_latency"]]))
    for label, values in series:
        values = sorted(v * 1000 for v in values if v is not None)
        if not values:
            continue
        values = [max(v, 1e-3) for v in values]
        ax.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of tokens / chunks")
    ax.set_title("One reply at a time, {} observers".format(opts.observers))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out_dir, "bench-latency.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)

    # Capacity.
    if capacity:
        fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4))
        ns = [r["n"] for r in capacity]
        ax1.plot(ns, [r["offered"] for r in capacity], "o--", label="offered")
        ax1.plot(ns, [r["sent_rate"] for r in capacity], "x:", label="written by the fake model")
        ax1.plot(ns, [r["steady"] or r["delivered"] for r in capacity], "o-", label="delivered")
        ax1.set_xlabel("concurrent replies")
        ax1.set_ylabel("tokens/s to askers")
        ax1.legend(fontsize=8)
        ax2.plot(ns, [r["p50"] for r in capacity], "o-", label="asker p50")
        ax2.plot(ns, [r["w_p99"] if r["w_p99"] is not None else r["p99"] for r in capacity], "o-",
                 label="asker p99 (sustained)")
        ax2.plot(ns, [r["p99"] for r in capacity], "o:", label="asker p99 (all tokens)")
        ax2.plot(ns, [r["obs_p99"] for r in capacity], "o-", label="observer p99 (from commit)")
        ax2.axhline(TARGET_CAPACITY_P99_MS, color="r", ls="--", lw=1, label="target 50 ms")
        ax2.set_yscale("log")
        ax2.set_xlabel("concurrent replies")
        ax2.set_ylabel("ms")
        ax2.legend(fontsize=8)
        ax3.plot(ns, [r["cpu"] for r in capacity], "o-", label="worker CPU %")
        ax3.plot(ns, [r["bench_cpu"] for r in capacity], "o--", label="load generator CPU %")
        ax3.plot(ns, [r["others_cpu"] for r in capacity], "x:", label="other processes CPU %")
        ax3.set_xlabel("concurrent replies")
        ax3.set_ylabel("% of one core")
        ax3b = ax3.twinx()
        ax3b.plot(ns, [r["rss_peak"] for r in capacity], "s:", color="C3", label="worker RSS (MB)")
        ax3b.set_ylabel("MB")
        ax3.legend(fontsize=8, loc="upper left")
        ax3b.legend(fontsize=8, loc="lower right")
        for ax in (ax1, ax2, ax3):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        path = os.path.join(out_dir, "bench-capacity.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files


def write_report(path, opts, bw, baseline, capacity, idle, problems, plots, started, elapsed, argv):
    big = max(opts.sizes)
    lines = []
    add = lines.append

    def row(mode, size):
        for r in bw:
            if r["mode"] == mode and r["size"] == size:
                return r
        return None

    add("# Benchmarks")
    add("")
    add("Generated by `python -m bench.run{}` on {} in {:.0f} s. Do not edit by hand: rerun the "
        "command.".format(" " + " ".join(argv) if argv else "", started.strftime("%Y-%m-%d %H:%M UTC"), elapsed))
    add("")
    others = [r["cpu"]["others"] for r in bw if r.get("cpu")] + [c["others_cpu"] for c in capacity]
    add("Machine: {} CPU core(s), {}, Python {}, SQLite {}. The machine is shared and noisy: the load "
        "generator (fake model and every client) runs on the same cores as the server, and other processes "
        "used between {:.0f}% and {:.0f}% of a core while this ran (the *others* CPU columns below). "
        "Absolute numbers move from run to run; the ratios all come from this one run.{}".format(
            os.cpu_count(), platform.platform(terse=True), platform.python_version(), sqlite3.sqlite_version,
            min(others) if others else 0, max(others) if others else 0,
            " **This was a `--quick` run: small sizes, few observers, one capacity level; it checks that the "
            "benchmark works, its figures are not the project's.**" if opts.quick else ""))
    add("")

    app_big = row("append", big)
    add("## Targets")
    add("")
    add("| Target | Measured | Result |")
    add("|---|---|---|")
    if app_big:
        obs_ratio = max(app_big["observer_bytes"]) / app_big["text_bytes"]
        ask_ratio = app_big["asker_bytes"] / app_big["text_bytes"]
        add("| Observer bytes per reply ≤ {} × reply text ({:,} tokens) | {:.2f} × | {} |".format(
            TARGET_OBSERVER_RATIO, big, obs_ratio, verdict(obs_ratio, TARGET_OBSERVER_RATIO)))
        add("| Asker bytes per reply ≤ {:g} × reply text ({:,} tokens) | {:.2f} × | {} |".format(
            TARGET_ASKER_RATIO, big, ask_ratio, verdict(ask_ratio, TARGET_ASKER_RATIO)))
        for r in [row("append", s) for s in opts.sizes]:
            if r:
                add("| DB statements per reply ≤ committed chunks + 3 ({:,} tokens) | {} for {} chunks "
                    "(one more, the question's own INSERT, if it counts) | {} |".format(
                        r["size"], r["reply_statements"], r["chunks"],
                        verdict(r["reply_statements"], r["chunks"] + 3)))
    app_lat = [v for s in opts.sizes for v in (row("append", s) or {}).get("asker_latency", [])]
    base_lat = [v for vs in baseline.values() for v in vs]
    added50 = added99 = None
    if app_lat and base_lat:
        added50 = ms(pct(app_lat, 50) - pct(base_lat, 50))
        added99 = ms(pct(app_lat, 99) - pct(base_lat, 99))
        add("| Added latency model → asker, 1 stream, p50 ≤ {:g} ms over the direct read | {:.2f} ms | {} |".format(
            TARGET_ADDED_P50_MS, added50, verdict(added50, TARGET_ADDED_P50_MS)))
        add("| Added latency model → asker, 1 stream, p99 ≤ {:g} ms over the direct read | {:.2f} ms | {} |".format(
            TARGET_ADDED_P99_MS, added99, verdict(added99, TARGET_ADDED_P99_MS)))
    cap = [r for r in capacity if r["n"] == TARGET_CAPACITY_LEVEL]
    if cap:
        c = cap[0]
        p99 = c["w_p99"] if c["w_p99"] is not None else c["p99"]
        add("| {} concurrent replies × {} observers: asker p99 token latency ≤ {:g} ms | {:,.1f} ms while all "
            "streamed ({:,.1f} ms over all tokens, arrival burst included) | {} |".format(
                c["n"], c["observers"], TARGET_CAPACITY_P99_MS, p99, c["p99"],
                verdict(p99, TARGET_CAPACITY_P99_MS)))
    else:
        add("| {} concurrent replies × 10 observers: asker p99 token latency ≤ {:g} ms | not run (levels: {}) "
            "| not measured |".format(TARGET_CAPACITY_LEVEL, TARGET_CAPACITY_P99_MS,
                                       ", ".join(str(n) for n in opts.levels) or "none"))
    if idle:
        add("| ≤ {:g} KB RSS per idle observer socket | {:.1f} KB | {} |".format(
            TARGET_IDLE_KB, idle["per_kb"], verdict(idle["per_kb"], TARGET_IDLE_KB)))
    add("")
    notes = analysis(opts, bw, baseline, capacity, idle, row, added50, added99)
    if notes:
        add("### Where targets are missed, and why")
        add("")
        for note in notes:
            add("- " + note)
        add("")

    # -- setup
    add("## Setup")
    add("")
    add("- **Server**: the real app under gunicorn, `--worker-class gevent --workers 1`, SQLite (WAL) in a "
        "temporary directory, `SEED_DEMO=0`, `POSTS_PER_MINUTE`, `ASKS_PER_MINUTE`, "
        "`MAX_CONCURRENT_REPLIES` and `REPLIES_PER_SESSION` raised to 1,000,000, default chunking "
        "(`CHUNK_SIZE_CAP={}`, `CHUNK_TIME_CAP={}`). A fresh server and database per fan-out mode "
        "(`FANOUT_MODE`), one for the capacity levels and one for the idle sockets; each server first "
        "answers one short warm-up reply (its first model call imports most of the `openai` SDK). The "
        "bandwidth servers run with `SOCKET_QUEUE_SIZE=100000` so that the per-token baseline measures "
        "bytes rather than the slow-viewer cut-off; the capacity server keeps the app's default ({}).".format(
            app_default("CHUNK_SIZE_CAP"), app_default("CHUNK_TIME_CAP"), app_default("SOCKET_QUEUE_SIZE")))
    add("- **Model**: `tests/fake_openai.py`'s `FakeOpenAI` in a child process of the benchmark (a "
        "subclass that timestamps each token as it writes it), reached by the app through the real "
        "`openai` SDK. "
        "Replies are synthetic English-like text: words with a leading space, punctuation as separate "
        "tokens, some commas, contractions (apostrophes, which HTML escaping turns into 5 bytes), rare "
        "`**bold**`, and a blank-line token between paragraphs of 3–6 sentences; {:.1f} bytes per token "
        "on average.".format((app_big["text_bytes"] / big) if app_big else 0))
    add("- **Bandwidth and latency runs**: one reply at a time, {} tokens at {:g} ms per token, watched by "
        "{} observer sockets.".format(" and ".join("{:,}".format(s) for s in opts.sizes),
                                       opts.token_delay * 1000, opts.observers))
    add("- **Asker**: `http.client` posts `@gpt …` as htmx does (`HX-Request`, `Accept: text/event-stream`, "
        "CSRF header, session cookie) and reads the whole response. *Asker bytes* is the response body "
        "after HTTP chunked decoding (what the browser's event-stream parser reads); status line, headers "
        "and chunk framing are not counted. The asker's own page socket is not opened: the server skips "
        "it for the asker's reply in every mode.")
    add("- **Observers**: `websocket-client` page sockets (`/ws?page=…&after=…` with a same-origin "
        "`Origin`), one reader thread each. *Observer bytes* is the payload of every text frame that "
        "concerns the exchange: the question's article, the reply's empty article, the appends (or whole "
        "re-renders) and the final article; websocket framing (2–10 bytes a frame) is not counted.")
    add("- **Database**: the server runs with `PYTHONPATH=bench/`; `bench/sitecustomize.py` gives every "
        "SQLite connection a trace callback (`set_trace_callback`) that logs each INSERT/UPDATE/DELETE as "
        "SQLite's expanded SQL (bound values inlined), plus BEGIN/COMMIT markers, with `time.monotonic()`. "
        "*DB statements* counts the logged writes from the post until every observer has the final "
        "article; BEGIN, COMMIT, SELECT and PRAGMA are not counted. *DB statement bytes* is the UTF-8 "
        "length of those expanded statements (SQL text with every value inlined); *DB value bytes* is the "
        "UTF-8 length of their string values alone (message bodies and chunk texts, but also timestamps, "
        "names, statuses). Neither is what SQLite writes to its WAL (whole pages), which is not measured.")
    add("- **Clock**: the fake model's token writes, the server's commits (trace callback) and the clients' "
        "reads all use `time.monotonic()` on one machine. A token's latency is the time of the first read "
        "that completes its text minus the time the fake model wrote it. Whitespace-only tokens (the blank "
        "line between paragraphs) are left out: the server holds them until visible text follows, by design "
        "(htmx ignores empty swaps). Percentiles are nearest-rank.")
    add("- **Load generator**: the benchmark's own processes: the main one (observers, the bandwidth runs' "
        "asker, the direct-read baseline), the fake model's, and {} client processes that run the capacity "
        "levels' askers, one thread each. They run `sys.setswitchinterval({:g})` so that a reader thread "
        "waiting for the GIL is not held up for the default 5 ms.".format(
            opts.client_procs, sys.getswitchinterval()))
    add("- **CPU**: the worker's utime+stime from `/proc/<pid>/stat`, the load generator's from `getrusage` "
        "and `/proc/<pid>/stat` of its child processes, the machine's busy time from `/proc/stat`; *others* "
        "is the machine's busy time minus those two. All in % of one core. RSS is the worker's VmRSS.")
    add("")

    # -- bandwidth
    add("## 1. Bandwidth per reply")
    add("")
    for mode in MODES:
        add("- `{}`: {}.".format(mode, MODE_NOTES[mode]))
    add("")
    add("| Mode | Tokens | Reply text B | Asker B | Asker ÷ text | Observer B (each) | Observer ÷ text "
        "| DB statements | Committed chunks | Statements ÷ (chunks + 3) | DB statement B | DB value B |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in opts.sizes:
        for mode in MODES:
            r = row(mode, size)
            if r is None:
                continue
            obs = max(r["observer_bytes"]) if r["observer_bytes"] else None
            chunks_ref = (row("append", size) or r)["chunks"]
            add("| {} | {:,} | {:,} | {:,} | {} | {} | {} | {:,} | {} | {:.2f} | {:,} | {:,} |".format(
                mode, size, r["text_bytes"], r["asker_bytes"], fmt(r["asker_bytes"] / r["text_bytes"]),
                fmt_int(obs), fmt(obs / r["text_bytes"]) if obs is not None else "–",
                r["reply_statements"],
                r["chunks"] if mode != "whole-per-token" else "0 ({} in append)".format(chunks_ref),
                r["reply_statements"] / (chunks_ref + 3), r["statement_bytes"], r["value_bytes"]))
    add("")
    same = all(len(set(r["observer_bytes"])) <= 1 for r in bw)
    add("*DB statements* leaves out the question's own INSERT (one per exchange, in every mode, with or "
        "without a reply). *Statements ÷ (chunks + 3)* uses the append run's chunk count for the same "
        "tokens. {}".format("Every observer received exactly the same bytes." if same else
                            "Observers did not all receive the same bytes; the table shows the largest."))
    add("")
    add("What the bytes are made of (asker events and observer frames counted in brackets):")
    add("")
    add("| Mode | Tokens | Asker: first event | token events | whole re-renders | final | "
        "Observer: new articles | appends | whole re-renders | final | Writes |")
    add("|---|---|---|---|---|---|---|---|---|---|---|")
    for size in opts.sizes:
        for mode in MODES:
            r = row(mode, size)
            if r is None:
                continue
            a, o = r["asker"], r["observer"] or {}
            add("| {} | {:,} | {:,} | {:,} ({:,}) | {:,} ({:,}) | {:,} | {} | {} ({}) | {} ({}) | {} | {} |".format(
                mode, size, a["first_bytes"], a["token_bytes"], a["token_events"], a["whole_bytes"],
                a["whole_events"], a["final_bytes"], fmt_int(o.get("article_bytes")),
                fmt_int(o.get("append_bytes")), fmt_int(len(o.get("appends", []))), fmt_int(o.get("whole_bytes")),
                fmt_int(len(o.get("wholes", []))), fmt_int(o.get("final_bytes")),
                ", ".join("{:,} × {}".format(v, k) for k, v in sorted(r["kinds"].items()))))
    add("")
    if any(p.endswith("bench-bandwidth.png") for p in plots):
        add("![Bytes per reply divided by reply text bytes, per mode](bench-bandwidth.png)")
        add("")

    # -- latency
    add("## 2. Latency, one reply at a time")
    add("")
    add("Token written by the fake model → its text received by the asker; chunk committed (the COMMIT "
        "after its INSERT, seen by the trace callback) → the append received by each observer (in "
        "`whole-per-chunk`, the whole re-render for that chunk). The direct baseline is a client reading "
        "the fake model's stream itself, same tokens, same pace, same run. {} observers were connected. "
        "*Others CPU* is what other processes on the machine used meanwhile.".format(opts.observers))
    add("")
    add("| Path | Mode | Samples | p50 ms | p99 ms | max ms | Added p50 ms | Added p99 ms | Worker CPU % "
        "| Others CPU % |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    add("| model → direct client | – | {:,} | {} | {} | {} | – | – | – | – |".format(
        len(base_lat), fmt(ms(pct(base_lat, 50)), 3), fmt(ms(pct(base_lat, 99)), 3),
        fmt(ms(max(base_lat)) if base_lat else None, 3)))

    def cpu_of(mode, key):
        vals = [(row(mode, s) or {}).get("cpu") for s in opts.sizes]
        vals = [v[key] for v in vals if v]
        return fmt(sum(vals) / len(vals), 0) if vals else "–"

    for mode in MODES:
        vals = [v for s in opts.sizes for v in (row(mode, s) or {}).get("asker_latency", [])]
        if not vals:
            continue
        add("| model → asker | {} | {:,} | {} | {} | {} | {} | {} | {} | {} |".format(
            mode, len(vals), fmt(ms(pct(vals, 50)), 3), fmt(ms(pct(vals, 99)), 3), fmt(ms(max(vals)), 3),
            fmt(ms(pct(vals, 50) - pct(base_lat, 50)), 3) if base_lat else "–",
            fmt(ms(pct(vals, 99) - pct(base_lat, 99)), 3) if base_lat else "–",
            cpu_of(mode, "worker"), cpu_of(mode, "others")))
    for mode in ("append", "whole-per-chunk"):
        vals = [v for s in opts.sizes for v in (row(mode, s) or {}).get("observer_latency", [])]
        if vals:
            add("| chunk commit → observer | {} | {:,} | {} | {} | {} | – | – | {} | {} |".format(
                mode, len(vals), fmt(ms(pct(vals, 50)), 3), fmt(ms(pct(vals, 99)), 3), fmt(ms(max(vals)), 3),
                cpu_of(mode, "worker"), cpu_of(mode, "others")))
    add("")
    add("`whole-per-token` commits no chunks, so it has no commit → observer figure; its asker latency is "
        "taken from the first whole re-render that contains the token.")
    add("")
    if any(p.endswith("bench-latency.png") for p in plots):
        add("![Latency distributions](bench-latency.png)")
        add("")

    # -- capacity
    add("## 3. Capacity of one worker")
    add("")
    if capacity:
        c0 = capacity[0]
        add("Per level, N askers post at random moments within {:g} s and each reads a {:,}-token reply "
            "streamed at {:g} ms per token (offered load N ÷ {:g} s tokens per second). There is one room, "
            "so every observer socket receives every reply's pieces: a level is **N askers + {} observers in "
            "total**, each observer watching all N replies. That is the same fan-out work per reply as "
            "\"10 observers per reply\" (one append per chunk per socket), on 10 sockets instead of 10·N; "
            "N·10 sockets in one room would mean 10·N² deliveries, which one machine cannot drive. "
            "`FANOUT_MODE=append`, the app's default socket queue ({queue} events). *Sustained* is the time during which at least "
            "90% of the level's replies were streaming to their askers (50%, marked, where the replies "
            "overlapped too little for that); *delivered* is the tokens per second "
            "the askers received in that time (the whole level's average where it is under 1 s), and the CPU "
            "columns cover it too; *sent* is the fake model's own rate while at least 90% of the replies were "
            "being written (below *offered* when the load generator falls behind). When the worker lags and "
            "then catches up inside the window, *delivered* can exceed *sent*. *Asker p99, sustained* takes only the tokens "
            "received then; *all tokens* includes the arrival burst (N posts within {ramp:g} s) and the "
            "tail. *Stretch* is the median reply's first-to-last-token time over its nominal length. "
            "Besides the SQL trace hook (which all servers here run), the capacity worker ran with "
            "`bench/sitecustomize.py`'s sampling profiler (a SIGPROF timer every 2 ms of CPU); both cost "
            "the worker some CPU (the hook's share is in the profile below).".format(
                opts.ramp, opts.cap_tokens, opts.cap_token_delay * 1000, opts.cap_token_delay,
                c0["observers"], ramp=opts.ramp, queue=app_default("SOCKET_QUEUE_SIZE")))
        add("")
        add("| Replies | Observers | Offered tok/s | Sent tok/s | Delivered tok/s | Sustained s | Asker p50 ms "
            "| Asker p99 ms, sustained | Asker p99 ms, all tokens | Asker max ms | Observer p50 ms "
            "| Observer p99 ms | Stretch | Worker CPU % | Worker CPU µs per token | Load generator CPU % "
            "| Others CPU % | Worker RSS MB (peak) | Failed replies | Dropped observers "
            "| Replies asked without their question |")
        add("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in capacity:
            add("| {} | {} | {:,.0f} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0f} | {} "
                "| {:.0f} | {:.0f} | {:.0f} | {} | {} | {} |".format(
                    r["n"], r["observers"], r["offered"], fmt_int(r["sent_rate"]),
                    fmt_int(r["steady"] or r["delivered"]),
                    ("{:.1f}".format(r["sustained"]) + (" (≥50%)" if r["window_fraction"] < 0.9 else ""))
                    if r["sustained"] >= 1.0 else "– (whole level)",
                    fmt(r["p50"], 1), fmt(r["w_p99"], 1),
                    fmt(r["p99"], 1), fmt(r["max"], 1), fmt(r["obs_p50"], 1), fmt(r["obs_p99"], 1),
                    fmt(r["stretch"]), r["cpu"], fmt_int(r["us_per_token"]), r["bench_cpu"], r["others_cpu"],
                    r["rss_peak"], r["errors"], r["dropped"], r["misrouted"]))
        add("")
        bad = [r for r in capacity if r["misrouted"]]
        if bad:
            add("**App bug seen here**: {}. The worker builds a reply's context from the room's newest "
                "`CONTEXT_MESSAGES + 1` messages *when the reply's greenlet starts*, then drops those newer "
                "than the reply (`generation.py`, `Message.recent(...)` filtered by `m.id < reply.id`). When "
                "more than that many messages were posted in between (a burst of questions on a busy worker), "
                "the model is asked without the question: with no user message at all, or with an older "
                "message as the last one. The fake model then cannot tell which reply it is writing (its "
                "key is in the question), so it streams a made-up reply of the same length under a key of "
                "its own, and each asker is matched to the stream it really received by its text; the "
                "latency figures above are therefore still per token, but those replies answered the wrong "
                "question.".format("; ".join(
                    "{} of {} replies at {} concurrent ({})".format(
                        r["misrouted"], r["n"], r["n"], ", ".join(
                            "{} {}".format(v, {"none": "with no user message",
                                               "other": "with another message last",
                                               "dup": "with another asker's question"}.get(k, k))
                            for k, v in sorted(r["misrouted_reasons"].items())))
                    for r in bad)))
            add("")
        profiled = [r for r in capacity if r.get("profile") and r["profile"]["samples"] > 0]
        if profiled:
            add("Where the worker's CPU time went: % of its profiler samples (one per 2 ms of CPU) in each "
                "level, top entries. *App* is the innermost frame in the app's own modules (what the work is "
                "for), *library* the innermost third-party package other than gevent (what does it); "
                "*(no app frame)* is mostly gunicorn writing the askers' event streams, whose generator is "
                "suspended meanwhile:")
            add("")
            for kind, title in (("app", "App function"), ("lib", "Library")):
                keys = {}
                for r in profiled:
                    for k, v in r["profile"][kind].items():
                        keys[k] = max(keys.get(k, 0.0), v / r["profile"]["samples"])
                top = sorted(keys, key=lambda k: -keys[k])[:10]
                add("| {} | {} |".format(title, " | ".join("N = {}".format(r["n"]) for r in profiled)))
                add("|---|" + "---|" * len(profiled))
                for k in top:
                    add("| `{}` | {} |".format(k, " | ".join(
                        "{:.0f}%".format(100.0 * r["profile"][kind].get(k, 0) / r["profile"]["samples"])
                        for r in profiled)))
                add("")
        if any(p.endswith("bench-capacity.png") for p in plots):
            add("![Throughput, latency and CPU against concurrent replies](bench-capacity.png)")
            add("")
    else:
        add("Not run.")
        add("")
    # -- idle
    add("## 4. Memory per idle observer socket")
    add("")
    if idle:
        add("A fresh server, warmed up (one reply; ten sockets opened and closed): the worker's RSS with no "
            "socket open, then with {:,} page sockets (`after` past the last message, so no snapshot) once a "
            "message posted afterwards has reached every one of them ({:,} of {:,} did) and one more second "
            "has passed.".format(idle["count"], idle["answered"], idle["count"]))
        add("")
        add("| Sockets | RSS before MB | RSS after MB | KB per socket | KB per socket, second half only | "
            "File descriptors added | KB per parked gevent greenlet (separate process) |")
        add("|---|---|---|---|---|---|---|")
        add("| {:,} | {:.1f} | {:.1f} | {:.1f} | {} | {} | {} |".format(
            idle["count"], idle["rss0"] / 1024, idle["rss1"] / 1024, idle["per_kb"],
            fmt(idle["second_half_kb"], 1), fmt_int(idle["fds"]), fmt(idle.get("greenlet_kb"), 1)))
        add("")
    else:
        add("Not run.")
        add("")
    # -- server logs
    add("## Server logs")
    add("")
    if any(problems.values()):
        add("Lines of the servers' logs that report errors or warnings:")
        add("")
        add("```")
        for name, found in problems.items():
            for line in found[:15]:
                add("[{}] {}".format(name, line[:300]))
            if len(found) > 15:
                add("[{}] … {} more".format(name, len(found) - 15))
        add("```")
    else:
        add("No errors or warnings in the servers' logs.")
    add("")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))


def sdk_cost(capacity):
    """', about N µs of CPU per token (capacity level M)' from the profile, or ''."""
    for c in capacity:
        prof = c.get("profile")
        if prof and prof["samples"] and c["us_per_token"] and c["cpu"] < 85:
            share = prof["app"].get("providers.tokens", 0) / prof["samples"]
            if share:
                return ": about {:,.0f} µs of the worker's CPU per token at {} replies".format(
                    share * c["us_per_token"], c["n"])
    return ""


def analysis(opts, bw, baseline, capacity, idle, row, added50, added99):
    """Where a target is missed: by how much, and what the measured parts say the cause is."""
    notes = []
    big = max(opts.sizes)
    r = row("append", big)
    if r:
        text = r["text_bytes"]
        o = r["observer"]
        ratio = max(r["observer_bytes"]) / text
        if ratio > TARGET_OBSERVER_RATIO:
            frames = len(o["appends"])
            wrapper = frames * r["wrapper"]
            escaping = o["append_escaped_bytes"] - o["append_text_bytes"]
            notes.append(
                "**Observer bytes, {:.2f} × text (target {:g} ×)**: the reply text itself is 1.00 ×; the "
                "`<i hx-swap-oob=\"beforeend:#message-N-body\">…</i>` wrapper of its {} appends adds {:.2f} × "
                "({} B each on chunks of {:.0f} B on average: one sentence per chunk); HTML escaping adds "
                "{:.2f} × (apostrophes become `&#39;`); the final article, which re-sends the whole body "
                "rendered as Markdown, adds {:.2f} ×; the question's and the empty reply's articles add "
                "{:.2f} ×. The completion's re-send alone is {} the target's headroom of {:.2f} ×.".format(
                    ratio, TARGET_OBSERVER_RATIO, frames, wrapper / text, r["wrapper"],
                    o["append_text_bytes"] / frames if frames else 0, escaping / text, o["final_bytes"] / text,
                    o["article_bytes"] / text,
                    "more than" if o["final_bytes"] / text > TARGET_OBSERVER_RATIO - 1 else "within",
                    TARGET_OBSERVER_RATIO - 1))
        a = r["asker"]
        ask = r["asker_bytes"] / text
        if ask > TARGET_ASKER_RATIO:
            framing = a["token_bytes"] - a["token_escaped_bytes"]
            escaping = a["token_escaped_bytes"] - a["token_text_bytes"]
            notes.append(
                "**Asker bytes, {:.2f} × text (target {:g} ×)**: the text is 1.00 ×; it went out in {:,} events "
                "for {:,} tokens ({:.2f} tokens per event: at one reply on an idle worker each token is "
                "written as soon as it arrives), and each event's `data: ` and blank line add {:.2f} × "
                "({:.1f} B per event against {:.1f} B of text per token); escaping adds {:.2f} ×; the final "
                "article re-sends the rendered body, {:.2f} ×; the first event (the question's and the empty "
                "reply's articles) {:.2f} ×.".format(
                    ask, TARGET_ASKER_RATIO, a["token_events"], big,
                    big / a["token_events"] if a["token_events"] else 0, framing / text,
                    framing / a["token_events"] if a["token_events"] else 0, text / big, escaping / text,
                    a["final_bytes"] / text, a["first_bytes"] / text))
        for s in opts.sizes:
            rr = row("append", s)
            if rr and rr["reply_statements"] > rr["chunks"] + 3:
                notes.append("**DB statements ({:,} tokens)**: {} for {} chunks: {}.".format(
                    s, rr["reply_statements"], rr["chunks"],
                    ", ".join("{} × {}".format(v, k) for k, v in sorted(rr["kinds"].items()))))
    if added50 is not None and (added50 > TARGET_ADDED_P50_MS or added99 > TARGET_ADDED_P99_MS):
        notes.append(
            "**Added latency, p50 {:.2f} ms and p99 {:.2f} ms over the direct read**: each token crosses "
            "two more loopback hops and process wake-ups than the direct read, the `openai` SDK (httpx, SSE "
            "parsing, and the construction of a typed chunk object per token){}, a gevent queue to the "
            "reply's greenlet and one to the request's, and a chunked HTTP write; sentence commits and the "
            "fan-out to observers run on the same single-threaded worker, so a token that arrives meanwhile "
            "waits.".format(added50, added99, sdk_cost(capacity)))
    for c in capacity:
        p99 = c["w_p99"] if c["w_p99"] is not None else c["p99"]
        if c["n"] != TARGET_CAPACITY_LEVEL or p99 is None or p99 <= TARGET_CAPACITY_P99_MS:
            continue
        causes = []
        delivered = c["steady"] or c["delivered"] or 0
        if delivered < 0.95 * c["offered"]:
            causes.append("the askers received {:,.0f} tokens/s of the {:,.0f} offered ({} written by the fake "
                          "model), so tokens queue up in the worker for as long as the replies last".format(
                              delivered, c["offered"], fmt_int(c["sent_rate"])))
        if c["cpu"] >= 85:
            causes.append("the worker is CPU-bound: {:.0f}% of a core, and one gevent worker cannot use "
                          "more".format(c["cpu"]))
        saturated = [r for r in capacity if r["cpu"] >= 85 and (r["steady"] or r["delivered"])]
        if saturated:
            top = max(saturated, key=lambda r: r["steady"] or r["delivered"])
            rate = top["steady"] or top["delivered"]
            causes.append("saturated, the worker delivered at most {:,.0f} tokens/s (at {} replies, {} µs of CPU "
                          "per token; {}), which is about {:.0f} replies at {:g} ms per token".format(
                              rate, top["n"], fmt_int(top["us_per_token"]),
                              ", ".join("{} µs at {} replies".format(fmt_int(r["us_per_token"]), r["n"])
                                        for r in capacity if r is not top and r["us_per_token"])
                              + ": tokens that arrive together share wake-ups and writes",
                              rate * opts.cap_token_delay, opts.cap_token_delay * 1000))
        busy = c["cpu"] + c["bench_cpu"] + c["others_cpu"]
        if busy >= 170:
            causes.append("the machine is saturated: worker {:.0f}% + load generator {:.0f}% + other "
                          "processes {:.0f}% of its {} cores, so the worker got only {:.0f}% of a core while "
                          "it had work queued".format(c["cpu"], c["bench_cpu"], c["others_cpu"],
                                                      os.cpu_count(), c["cpu"]))
        if c["misrouted"]:
            causes.append("{} of the {} replies were asked without their question (an app bug under load, "
                          "see section 3)".format(c["misrouted"], c["n"]))
        prof = c.get("profile")
        if prof and prof["samples"] > 0:
            top = sorted(prof["lib"].items(), key=lambda kv: -kv[1])[:3]
            apps = sorted(prof["app"].items(), key=lambda kv: -kv[1])[:3]
            causes.append("of the worker's CPU samples, {} (by app function: {})".format(
                ", ".join("{:.0f}% were in {}".format(100 * v / prof["samples"], k) for k, v in top),
                ", ".join("{} {:.0f}%".format(k, 100 * v / prof["samples"]) for k, v in apps)))
        notes.append("**{} concurrent replies: asker p99 {:,.1f} ms (target {:g} ms)**: {}.".format(
            c["n"], p99, TARGET_CAPACITY_P99_MS, "; ".join(causes) if causes else
            "neither the worker nor the machine is saturated; the tail comes from greenlet scheduling "
            "(a token waits behind other replies' commits and fan-outs)"))
    dropped = [c for c in capacity if c["dropped"]]
    if dropped:
        notes.append(
            "**Observers cut at {}**: with one room, every observer socket receives every reply's events, "
            "and a socket whose writer falls {} events behind (`SOCKET_QUEUE_SIZE`, the app's default) is "
            "dropped by design so that it reconnects and resyncs; the saturated worker lagged that far "
            "behind: {}. The observer latency figures of those levels stop at the cut.".format(
                " and ".join("{} replies".format(c["n"]) for c in dropped), app_default("SOCKET_QUEUE_SIZE"),
                "; ".join("{} of {} observers at {} replies".format(c["dropped"], c["observers"], c["n"])
                          for c in dropped)))
    if idle and idle["per_kb"] > TARGET_IDLE_KB:
        g = idle.get("greenlet_kb")
        notes.append(
            "**Idle socket memory, {:.1f} KB each (target {:g} KB)**: each page socket parks three greenlets: "
            "the request's own (the page's reader, blocked in `receive`), simple-websocket's background "
            "reader and the page's writer; a parked greenlet keeps its slice of the C stack and its Python "
            "frames on the heap{}. The rest is per-connection objects: the WSGI environ "
            "and request context of the upgrade request, the websocket protocol state, the hub queue and the "
            "socket object.".format(
                idle["per_kb"], TARGET_IDLE_KB,
                " (measured separately in this run: {:.1f} KB per parked greenlet 20 frames deep, so "
                "{:.0f} KB for three)".format(g, 3 * g) if g else ""))
    return notes


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (~40 s): sizes 200,500 at 4 ms/token, 2 observers, capacity 10 only, "
                             "50 idle sockets")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"),
                        help="Markdown report to write; plots go next to it as bench-*.png "
                             "(default: docs/benchmarks.md)")
    parser.add_argument("--sizes", help="reply lengths in tokens, comma-separated (default 500,2000)")
    parser.add_argument("--token-delay", type=float, help="seconds between tokens in the bandwidth and "
                        "latency runs (default 0.01)")
    parser.add_argument("--observers", type=int, help="observer sockets in the bandwidth runs (default 10)")
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
    parser.add_argument("--modes", default=",".join(MODES), help="fan-out modes to measure (default: all three)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: capacity, idle")
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
    LOAD_PIDS[:] = [fake.proc.pid] + ([p.pid for p in pool.procs] if pool else [])
    workdir = tempfile.mkdtemp(prefix="streamchat-bench-")
    problems = {}
    bw, capacity, idle = [], [], None
    try:
        log("bandwidth and latency ({} observers, {} ms/token)".format(opts.observers, opts.token_delay * 1000))
        for mode in opts.modes:
            rows, probs = run_mode(mode, opts, fake, workdir, log)
            bw.extend(rows)
            problems["bw-" + mode] = probs
            fake.forget_requests()
        log("direct baseline")
        baseline = run_baseline(opts, fake, log)
        if "capacity" not in opts.skip and opts.levels:
            log("capacity ({} tokens per reply at {} ms/token)".format(opts.cap_tokens, opts.cap_token_delay * 1000))
            capacity, problems["capacity"] = run_capacity(opts, fake, pool, workdir, log)
        if "idle" not in opts.skip and opts.idle:
            log("idle sockets")
            idle, problems["idle"] = run_idle(opts, fake, workdir, log)
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
                 time.monotonic() - t_start, shown)
    log("wrote {}{}".format(opts.out, "".join(", " + p for p in plots)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
