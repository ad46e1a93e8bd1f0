"""The clients: a browser session, askers that post a question and read its
event stream (in this process or spread over client processes), and observer
page sockets that record every frame."""
import http.client
import re
import secrets
import socket
import threading
import time
import urllib.parse

import websocket  # websocket-client

from bench.replies import script_key
from bench.replies import script_of


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


# How a frame with the room's list of people starts: not part of any reply's bytes.
PRESENCE = b'<span id="presence-count"'


class Observer:
    """A page socket that records every text frame with its arrival time."""

    def __init__(self, server, after=10 ** 9):
        self.page = secrets.token_hex(8)
        url = "ws://127.0.0.1:{}/ws?page={}&after={}".format(server.port, self.page, after)
        self.ws = websocket.create_connection(url, timeout=30, origin=server.url)
        self.ws.settimeout(None)
        self.frames = []  # (monotonic time, payload bytes), the room's lists of people aside
        self.presence = []  # (monotonic time, payload bytes) of those lists
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
                        (self.presence if data.startswith(PRESENCE) else self.frames).append((t, data))
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
