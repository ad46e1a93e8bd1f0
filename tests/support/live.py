"""Clients and readers for a live server, as a browser would use it but
with only the standard library and websocket-client: a ``Browser`` (its own
cookie jar and page), the author's event stream (``SSEReader``), a page
socket (``Socket``); what a frame or an event carries (``parse_upsert``,
``parse_append``, ``author_body``); the server's database read directly
(``query``, ``message_row``, ``chunk_rows``, ``wait_settled``); and the
tokens the fake model is given (``slow_tokens``, ``chunks_of``)."""
import contextlib
import html
import http.cookiejar
import os
import re
import sqlite3
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import websocket

from chat.render.rendering import chunk_fragment
from chat.stream.chunking import Chunker
from conftest import ROOT
from support.body import Body
from support.body import apply_author_stream

UPSERT_OPEN = '<hx-upsert hx-target="#messages" sort>'
UPSERT_CLOSE = "</hx-upsert>"
ARTICLE_RE = re.compile(r'<article class="message" id="message-(\d+)"([^>]*)>(.*?)</article>', re.S)
ATTR_RE = re.compile(r'\s([\w-]+)="([^"]*)"')
BODY_RE = re.compile(
    r'<div class="message-body (plain|markdown)" id="message-(\d+)-body"( hx-preserve)?>(.*?)</div>', re.S
)
# A chunk's fragment (rendering.chunk_fragment): a piece for one reply body
# ("+id" and its operations), or out-of-band swaps on it where it cannot be one.
APPEND_RE = re.compile(r'\A(?:\+(\d+)\x1f|<(?:i|template) hx-swap-oob="\w+:#message-(\d+)-body[^"]*">)', re.S)


def chunks_of(tokens):
    """The chunks ``chunking.Chunker`` commits for ``tokens`` with no time cap."""
    chunker = Chunker(size_cap=300, time_cap=10_000)
    out = []
    for token in tokens:
        out.extend(chunker.feed(token))
    last = chunker.flush()
    if last:
        out.append(last)
    return out


def slow_tokens(sentences):
    """Sentences of three tokens whose last token carries the sentence end and
    its space, so each chunk is committed as soon as its sentence is complete
    (well inside the 1 s time cap even at 0.2 s per token)."""
    tokens = []
    for i in range(sentences):
        tokens += ["Sentence", " number {}".format(i + 1), " ends. " if i + 1 < sentences else " ends."]
    return tokens


# -- small helpers -------------------------------------------------------------


def wait_until(predicate, timeout, interval=0.02, message="condition"):
    """Poll ``predicate`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail("timed out after {}s waiting for {}".format(timeout, message))
        time.sleep(interval)


def query(database_url, sql, args=()):
    """Rows from the live server's database (SQLite or PostgreSQL), all read
    in one snapshot. Queries use ``?`` placeholders."""
    if database_url.startswith("sqlite:///"):
        con = sqlite3.connect(database_url[len("sqlite:///"):], timeout=5, isolation_level=None)
        con.row_factory = sqlite3.Row
        try:
            con.execute("BEGIN")
            if isinstance(sql, str):
                result = [dict(r) for r in con.execute(sql, args).fetchall()]
            else:  # several queries in one read transaction
                result = [[dict(r) for r in con.execute(s, a).fetchall()] for s, a in sql]
            con.execute("COMMIT")
            return result
        finally:
            con.close()
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(database_url, row_factory=dict_row) as con:
        con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        if isinstance(sql, str):
            return con.execute(sql.replace("?", "%s"), args).fetchall()
        return [con.execute(s.replace("?", "%s"), a).fetchall() for s, a in sql]


def message_row(database_url, message_id):
    rows = query(database_url, "SELECT * FROM message WHERE id = ?", (message_id,))
    return rows[0] if rows else None


def wait_settled(database_url, message_id, timeout):
    """The message row once it is no longer streaming."""
    def settled():
        row = message_row(database_url, message_id)
        return row if row["status"] != "streaming" else None

    return wait_until(settled, timeout, message="message {} to settle".format(message_id))


def chunk_rows(database_url, message_id):
    return query(database_url, "SELECT seq, text FROM chunk WHERE message_id = ? ORDER BY seq", (message_id,))


def parse_upsert(data):
    """The articles of one ``<hx-upsert>`` fragment, in order."""
    assert data.startswith(UPSERT_OPEN) and data.endswith(UPSERT_CLOSE), data[:200]
    articles = []
    for match in ARTICLE_RE.finditer(data):
        attrs = dict(ATTR_RE.findall(match.group(2)))
        body = BODY_RE.search(match.group(3))
        assert body and int(body.group(2)) == int(match.group(1)), match.group(0)
        articles.append(
            {
                "id": int(match.group(1)),
                "role": attrs["data-role"],
                "status": attrs["data-status"],
                "body_kind": body.group(1),
                "body_html": body.group(4),
                # The page keeps the body it shows (a finished reply's status flip).
                "keeps_body": bool(body.group(3)),
                "html": match.group(0),
            }
        )
    assert articles, data[:200]
    return articles


def parse_append(data):
    """(message id, fragment) of a chunk's out-of-band swaps, or None."""
    match = APPEND_RE.match(data)
    return (int(match.group(1) or match.group(2)), data) if match else None


def fragments_for(reply_id, chunks):
    """The fragments observers get for ``chunks`` committed in order."""
    out, before = [], ""
    for chunk in chunks:
        out.append(str(chunk_fragment(reply_id, before, chunk)))
        before += chunk
    return out


def author_body(events, reply_id):
    """The reply body an author's page draws from its stream's events
    ({"event", "data"} dicts, first and last included)."""
    body = Body(reply_id)
    apply_author_stream(body, [(e["event"] or "", e["data"]) for e in events])
    return body.html


class Result:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Browser:
    """One browser: its own cookie jar (session), the page it loaded, its name."""

    def __init__(self, server):
        self.server = server
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())
        self.page = self.csrf = self.name = None
        self.last_id = None
        self.room = None  # the room of the page loaded (None: the form names none)

    def _open(self, request):
        try:
            response = self.opener.open(request, timeout=10)
        except urllib.error.HTTPError as exc:
            with exc:
                return Result(exc.code, exc.headers, exc.read().decode("utf-8"))
        with response:
            return Result(response.status, response.headers, response.read().decode("utf-8"))

    def load(self, path="/"):
        """GET a room's page like a browser: keeps the session cookie, reads page id and token."""
        result = self._open(urllib.request.Request(self.server.url + path))
        assert result.status == 200
        page_html = result.body
        self.csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', page_html).group(1)
        self.page = re.search(r'<input type="hidden" name="page" value="([0-9a-f]+)">', page_html).group(1)
        self.name = html.unescape(re.search(r'<strong class="me">(.*?)</strong>', page_html).group(1))
        connect = re.search(r'hx-ws:connect="/ws\?page=([0-9a-f]+)&(?:amp;)?after=(\d+)[&"]', page_html)
        assert connect and connect.group(1) == self.page, "the socket URL names the page's id"
        self.last_id = int(connect.group(2))
        self.room = re.search(r'<input type="hidden" name="room" value="([^"]+)">', page_html).group(1)
        assert any(c.name == "session" for c in self.jar), "GET / sets the session cookie"
        return page_html

    def _request(self, body, *, htmx=True, sse=True, token="session", field_token="session"):
        token = self.csrf if token == "session" else token
        field_token = self.csrf if field_token == "session" else field_token
        form = {"body": body, "page": self.page or ""}
        if self.room is not None:
            form["room"] = self.room
        if field_token is not None:
            form["csrf_token"] = field_token
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if htmx:
            headers["HX-Request"] = "true"
        if sse:
            headers["Accept"] = "text/html, text/event-stream"
        if token is not None:
            headers["X-CSRF-Token"] = token
        data = urllib.parse.urlencode(form).encode()
        return urllib.request.Request(self.server.url + "/messages", data=data, headers=headers, method="POST")

    def post(self, body, **kwargs):
        """A complete (non-streaming) exchange."""
        return self._open(self._request(body, **kwargs))

    @contextlib.contextmanager
    def stream(self, body):
        """POST as htmx with SSE accepted; yields the open response (read it with SSEReader)."""
        response = self.opener.open(self._request(body), timeout=10)
        try:
            yield response
        finally:
            response.close()

    def say(self, text):
        """A plain message (no model) as htmx without SSE; returns its id."""
        result = self.post(text, sse=False)
        assert result.status == 200, result.body
        return parse_upsert(result.body)[0]["id"]


class SSEReader:
    """Server-Sent Events from a response, parsed by the spec's rules."""

    def __init__(self, response):
        self.response = response
        self.comments = 0

    def next(self):
        """The next event as {"event", "data"}; None at the end of the stream."""
        data, event = [], None
        while True:
            raw = self.response.readline()
            if not raw:
                return None if not data else {"event": event, "data": "\n".join(data)}
            line = raw.decode("utf-8").rstrip("\n").rstrip("\r")
            if line == "":
                if data:
                    return {"event": event, "data": "\n".join(data)}
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "data":
                data.append(value)
            elif field == "event":
                event = value

    def __iter__(self):
        while True:
            event = self.next()
            if event is None:
                return
            yield event


# How a frame with the room's list of people starts.
PRESENCE = '<span id="presence-count"'


def recv_message(ws):
    """The next text frame of a websocket-client socket but for the room's
    lists of people."""
    while True:
        text = ws.recv()
        if not text.startswith(PRESENCE):
            return text


class Socket:
    """A page's websocket with a reader thread that records every frame."""

    def __init__(self, server, page, after=0, streaming=(), origin="same", room=None, **options):
        params = {"page": page, "after": after}
        if room is not None:
            params["room"] = room
        if streaming:
            params["streaming"] = ",".join(str(i) for i in streaming)
        url = "ws://127.0.0.1:{}/ws?{}".format(server.port, urllib.parse.urlencode(params))
        if origin == "same":
            options["origin"] = server.url
        elif origin is None:
            options["suppress_origin"] = True
        else:
            options["origin"] = origin
        self.ws = websocket.create_connection(url, timeout=10, **options)
        self.frames = []  # text frames, in arrival order (who is in the room aside)
        self.presence = []  # the room's lists of people, in arrival order
        self.close_code = None
        self.closed = threading.Event()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            while True:
                opcode, data = self.ws.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    text = data.decode("utf-8")
                    with self._cond:
                        (self.presence if text.startswith(PRESENCE) else self.frames).append(text)
                        self._cond.notify_all()
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    self.close_code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                    return
        except Exception:  # socket shut down or reset: the thread just ends
            return
        finally:
            self.closed.set()
            with self._cond:
                self._cond.notify_all()

    def wait_frames(self, predicate, timeout=8, what="frames"):
        """Wait until ``predicate(frames)`` is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(list(self.frames))
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0 or (self.closed.is_set() and not value):
                    pytest.fail("socket: no {} after {:.1f}s; got {!r}".format(what, timeout, self.frames))
                self._cond.wait(min(left, 0.1))

    def wait_count(self, n, timeout=8):
        return self.wait_frames(lambda f: len(f) >= n and f, timeout, "{} frames".format(n))

    def close(self):
        """Close politely (close frame), then make sure the socket is gone."""
        if not self.closed.is_set():
            try:
                self.ws.send_close()
            except Exception:
                pass
            self.closed.wait(2)
        if not self.closed.is_set():
            self.ws.abort()
            self.closed.wait(2)
        self._thread.join(2)
        self.ws.shutdown()


def llm_env(fake, **extra):
    """Environment for a server whose model is ``fake``, plus settings."""
    env = {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": fake.base_url, "OPENAI_MODEL": "fake-model"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def children(pid):
    """Child process ids of ``pid`` (Linux)."""
    with open("/proc/{0}/task/{0}/children".format(pid)) as f:
        return [int(p) for p in f.read().split()]


def dead(pid):
    """True once ``pid`` has exited (a zombie not yet reaped counts as dead)."""
    try:
        with open("/proc/{}/stat".format(pid)) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def control(browser, reply_id, action, htmx=True):
    """POST /messages/<id>/<action> (stop or retry) as ``browser``."""
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": browser.csrf}
    if htmx:
        headers["HX-Request"] = "true"
    request = urllib.request.Request(
        "{}/messages/{}/{}".format(browser.server.url, reply_id, action), data=b"", headers=headers, method="POST"
    )
    return browser._open(request)


def article_for(data, reply_id):
    """The article for ``reply_id`` in an upsert fragment, or None."""
    if parse_append(data):
        return None
    for article in parse_upsert(data):
        if article["id"] == reply_id:
            return article
    return None


def wait_article(sock, reply_id, status, timeout=8):
    """The first article for ``reply_id`` with ``status`` the socket receives."""
    def find(frames):
        for data in frames:
            article = article_for(data, reply_id)
            if article and article["status"] == status:
                return article
        return None

    return sock.wait_frames(find, timeout, what="{} article for {}".format(status, reply_id))


def procfile_line(name):
    """The command of process ``name`` in the Procfile."""
    with open(os.path.join(ROOT, "Procfile")) as f:
        for line in f:
            if line.startswith(name + ":"):
                return line[len(name) + 1:].strip()
    raise AssertionError("no {} process in the Procfile".format(name))
