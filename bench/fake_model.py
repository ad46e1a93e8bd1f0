"""The fake OpenAI-compatible model, with a send time per token.

``tests/support/fake_openai.py``'s ``FakeOpenAI`` runs in a child process of the
benchmark; it streams the tokens a request's key names and records
``time.monotonic()`` as it writes each one."""
import http.client
import json
import os
import sys
import time
from http.server import ThreadingHTTPServer

from bench import ROOT
from bench.replies import request_key
from bench.replies import script_key
from bench.replies import script_of

sys.path.insert(0, os.path.join(ROOT, "tests"))

from support.fake_openai import FakeOpenAI  # noqa: E402
from support.fake_openai import _Handler  # noqa: E402


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
