"""A tiny fake OpenAI-compatible Chat Completions server for integration tests.

Standard library only, so it can run in-process (``with FakeOpenAI() as srv``)
or as a subprocess (``python tests/support/fake_openai.py --port N``) next to an app
running under gunicorn.  Replies are scripted with :meth:`FakeOpenAI.enqueue`;
every request body and its headers are recorded for assertions.

Streaming uses HTTP/1.1 with ``Connection: close`` and no Content-Length: the
body ends when the socket closes, which needs no chunked encoding and lets a
"cut" reply end the body early simply by closing.
"""
import argparse
import collections
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

DEFAULT_TOKENS = ["Hello", " there", ".", " This", " is", " a", " fake", " reply",
                  ".", " It", " streams", " word", " by", " word", "."]

# Body "type"/"code" for scripted errors, shaped like the real API's.
_ERRORS = {400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
           429: ("requests", "rate_limit_exceeded"), 500: ("server_error", None),
           503: ("server_error", "service_unavailable")}


class _Headers(dict):
    """dict with lower-cased keys and case-insensitive lookup, so tests can
    write ``headers["Authorization"]`` whatever casing the client sent."""

    def __init__(self, items):
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __contains__(self, key):
        return super().__contains__(str(key).lower())

    def get(self, key, default=None):
        return super().get(key.lower(), default)


def _count_words(messages):
    """Rough prompt size: whitespace-separated words in all message texts."""
    words = 0
    for msg in messages or []:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list):  # multi-part content: count text parts only
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        words += len(str(content or "").split())
    return words


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # streaming clients expect 1.1; we still close after each reply
    timeout = 30  # never let a stuck client pin a handler thread forever

    def log_message(self, format, *args):  # keep test output clean
        pass

    def _send_head(self, status, ctype, length=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Connection", "close")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.close_connection = True

    def _send_json(self, status, obj):
        data = json.dumps(obj).encode()
        self._send_head(status, "application/json", len(data))
        self.wfile.write(data)

    def do_GET(self):
        fake = self.server.fake
        if self.path.rstrip("/") != "/v1/models" or fake.models is None:
            self._send_json(404, {"error": {"message": f"no route {self.path}",
                                            "type": "invalid_request_error", "code": None}})
            return
        with fake._lock:
            fake.model_lists += 1
        self._send_json(200, {"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "fake"} for name in fake.models]})

    def do_POST(self):
        fake = self.server.fake
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(404, {"error": {"message": f"no route {self.path}",
                                            "type": "invalid_request_error", "code": None}})
            return
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send_json(400, {"error": {"message": "invalid JSON body",
                                            "type": "invalid_request_error", "code": None}})
            return
        with fake._lock:
            fake.requests.append(body)
            fake.headers.append(_Headers(self.headers.items()))
            reply = fake._queue.popleft() if fake._queue else {}
            n = fake._counter = fake._counter + 1
        tokens = list(reply.get("tokens") or fake.default_tokens)
        delay = reply["delay"] if reply.get("delay") is not None else fake.token_delay
        if reply.get("status"):
            etype, code = _ERRORS.get(reply["status"], ("server_error", None))
            self._send_json(reply["status"], {"error": {
                "message": f"fake error {reply['status']}", "type": etype, "code": code}})
            return
        meta = {"id": f"chatcmpl-fake{n}", "created": int(time.time()),
                "model": body.get("model") or "fake-model"}
        usage_prompt = _count_words(body.get("messages"))
        if body.get("stream"):
            self._stream(fake, body, meta, tokens, delay, reply, usage_prompt)
            return
        if reply.get("first_token_delay"):
            fake._stopping.wait(reply["first_token_delay"])
        if reply.get("cut_after") is not None:
            return  # non-stream "cut": close without any response at all
        self._send_json(200, dict(meta, object="chat.completion", choices=[{
            "index": 0, "message": {"role": "assistant", "content": "".join(tokens)},
            "finish_reason": "stop", "logprobs": None}], usage={
            "prompt_tokens": usage_prompt, "completion_tokens": len(tokens),
            "total_tokens": usage_prompt + len(tokens)}))

    def _sse(self, obj):
        payload = obj if isinstance(obj, str) else json.dumps(obj)
        self.wfile.write(f"data: {payload}\n\n".encode())
        self.wfile.flush()  # each event must reach the client now, not when a buffer fills

    def _stream(self, fake, body, meta, tokens, delay, reply, usage_prompt):
        with fake._lock:  # reserve our slot now so the list stays in arrival order
            slot = len(fake.client_closed_early)
            fake.client_closed_early.append(None)
        closed_early = False
        chunk = dict(meta, object="chat.completion.chunk")
        cut_after = reply.get("cut_after")
        try:
            self._send_head(200, "text/event-stream")
            # Event.wait instead of sleep so stop() can end long replies promptly.
            if reply.get("first_token_delay") and fake._stopping.wait(reply["first_token_delay"]):
                return
            for i, tok in enumerate(tokens):
                if cut_after is not None and i >= cut_after:
                    break
                if i and delay and fake._stopping.wait(delay):
                    return
                delta = {"role": "assistant", "content": tok} if i == 0 else {"content": tok}
                self._sse(dict(chunk, choices=[{"index": 0, "delta": delta, "finish_reason": None}]))
            if cut_after is not None:
                # Abrupt end: no finish chunk, no usage, no [DONE]; just close.
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._sse(dict(chunk, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
            if (body.get("stream_options") or {}).get("include_usage"):
                sent = len(tokens)
                self._sse(dict(chunk, choices=[], usage={
                    "prompt_tokens": usage_prompt, "completion_tokens": sent,
                    "total_tokens": usage_prompt + sent}))
            self._sse("[DONE]")
        except (BrokenPipeError, ConnectionResetError):
            # The client hung up; the kernel only tells us on a write after that.
            closed_early = True
        finally:
            fake.client_closed_early[slot] = closed_early


class FakeOpenAI:
    """Scriptable fake of ``POST /v1/chat/completions`` (and ``GET /v1/models``) on 127.0.0.1.

    Attributes: ``default_tokens`` (reply when nothing is enqueued),
    ``models`` (what ``GET /v1/models`` lists; None: that route is missing),
    ``token_delay`` (seconds between streamed tokens), and the recordings
    ``requests`` (parsed JSON bodies), ``headers`` (case-insensitive dicts) and
    ``client_closed_early`` (one bool per streamed request in arrival order;
    ``None`` while that stream is still running).
    """

    def __init__(self, port=0, token_delay=0.02):
        self.port = port
        self.token_delay = token_delay
        self.default_tokens = list(DEFAULT_TOKENS)
        self.models = ["fake-model", "fake-model-large"]
        self.model_lists = 0  # GET /v1/models served
        self.requests, self.headers, self.client_closed_early = [], [], []
        self._queue = collections.deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._counter = 0
        self._httpd = self._thread = None

    def enqueue(self, tokens, delay=None, *, status=None, cut_after=None, first_token_delay=None):
        """Script the reply to the next request (FIFO).  ``status`` returns an
        error body instead; ``cut_after=N`` closes after N tokens with no
        finish chunk or [DONE]; ``first_token_delay`` waits before token one."""
        with self._lock:
            self._queue.append({"tokens": list(tokens), "delay": delay, "status": status,
                                "cut_after": cut_after, "first_token_delay": first_token_delay})

    def bind(self):
        """Bind the listening socket (port 0 picks a free port)."""
        self._stopping.clear()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self._httpd.daemon_threads = True  # a hung client must not block interpreter exit
        self._httpd.fake = self
        self.port = self._httpd.server_address[1]
        return self

    def start(self):
        """Bind and serve in a daemon thread; returns self."""
        self.bind()
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop serving and close the socket (shutdown + server_close, no leaks)."""
        if self._httpd is None:
            return
        self._stopping.set()  # lets in-flight streams bail out of their waits
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()
        self._httpd = self._thread = None

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.02, help="seconds between tokens")
    args = parser.parse_args(argv)
    fake = FakeOpenAI(port=args.port, token_delay=args.delay).bind()
    print(f"listening on {fake.base_url}", flush=True)  # parent process waits for this line
    try:
        fake._httpd.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        fake._stopping.set()
        fake._httpd.server_close()


if __name__ == "__main__":
    main()
