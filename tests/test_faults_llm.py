"""Fault injection against a real gunicorn+gevent server and the fake
OpenAI-compatible model: provider errors, timeouts, cut streams, Stop and
Retry, SSE keep-alives, websocket abuse and per-session limits.

Everything is checked on the wire (the asker's SSE bytes, an observer's socket
frames, HTTP statuses) and in the SQLite file the server writes.
"""
import html
import re
import socket
import time
import urllib.parse
import urllib.request

import pytest

from chat.render.rendering import render_markdown
from conftest import LiveServer
from support.body import Body
from support.body import apply_author_stream
from support.live import Browser
from support.live import SSEReader
from support.live import control
from support.live import message_row
from support.live import parse_append
from support.live import parse_upsert
from support.live import query
from support.live import wait_article
from support.live import wait_settled
from support.live import wait_until

API_KEY = "test-key"


# -- fixtures and helpers -------------------------------------------------------


@pytest.fixture
def make_server(tmp_path, fake_llm):
    """Start one LiveServer with extra env (the fake model unless overridden)."""
    started = []

    def make(**env):
        settings = {
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": fake_llm.base_url,
            "OPENAI_MODEL": "fake-model",
        }
        settings.update(env)
        server = LiveServer(tmp_path, settings).start()
        server.llm = fake_llm
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def observer_for(ws_open, server, author, watcher):
    """A subscribed observer socket for ``watcher``'s page: ``author`` posts a
    plain message first so the socket's snapshot proves it is subscribed.
    Returns (socket, number of snapshot frames to skip)."""
    author.say("hi all")
    watcher.load()
    sock = ws_open(server, watcher.page, after=0)
    sock.wait_count(1)
    return sock, 1








def notice(article_html):
    """The text of an article's ``.message-notice``, or None."""
    start = article_html.find('<p class="message-notice"')
    if start < 0:
        return None
    start = article_html.index(">", start) + 1
    return html.unescape(article_html[start:article_html.index("</p>", start)])


def tokens_text(events):
    """The reply body an author's stream draws (its events between the first
    and the last), as HTML: compare with ``drawn(text)``."""
    ids = [m.group(1) or m.group(2) for e in events
           for m in re.finditer(r"#message-(\d+)-body|\A\+(\d+)\x1f", e["data"])]
    body = Body(int(ids[0]) if ids else 0)
    apply_author_stream(body, [(e["event"] or "", e["data"]) for e in events])
    return body.html


def drawn(text):
    return str(render_markdown(text))


def count_messages(server):
    return query(server.database_url, "SELECT count(*) AS n FROM message")[0]["n"]


def assert_no_secrets(text, where):
    assert API_KEY not in text, "the API key leaked into {}".format(where)
    assert "fake error" not in text, "the provider's raw error leaked into {}".format(where)


# -- 1. HTTP errors from the model ------------------------------------------------


@pytest.mark.parametrize(
    "status, expected",
    [
        (401, "The model provider rejected the API key."),
        (429, "The model provider is rate limiting us. Try again in a moment."),
        (500, "The model provider had an error (500). Try again."),
        (503, "The model provider had an error (503). Try again."),
    ],
)
def test_provider_http_error_fails_the_reply(live_server, ws_open, status, expected):
    alice, bob = Browser(live_server), Browser(live_server)
    alice.load()
    observer, skip = observer_for(ws_open, live_server, alice, bob)
    live_server.llm.enqueue([], status=status)

    with alice.stream("@gpt please answer") as response:
        assert response.status == 200
        reply_id = int(response.headers["X-Reply-Id"])
        events = list(SSEReader(response))

    # The asker: the two articles, no tokens, then the failed article.
    assert len(events) == 2, events
    final = parse_upsert(events[-1]["data"])
    assert [(a["id"], a["status"]) for a in final] == [(reply_id, "failed")]
    assert notice(final[0]["html"]) == expected
    assert 'data-action="retry"' in final[0]["html"]
    assert 'data-action="stop"' not in final[0]["html"]
    # The request really reached the model, with the key.
    assert len(live_server.llm.requests) == 1
    assert live_server.llm.headers[0]["Authorization"] == "Bearer " + API_KEY

    # The observer gets the same failed article.
    seen = wait_article(observer, reply_id, "failed")
    assert notice(seen["html"]) == expected and 'data-action="retry"' in seen["html"]

    row = wait_settled(live_server.database_url, reply_id, 5)
    assert row["status"] == "failed" and row["error"] == expected
    assert row["body"] == "" and row["completed_at"] and row["stream_page"] is None

    page = alice.load()
    assert expected in html.unescape(page)
    for text, where in [(page, "the page"), (events[-1]["data"], "the SSE stream"),
                        ("".join(observer.frames[skip:]), "the observer socket"), (row["error"], "the DB")]:
        assert_no_secrets(text, where)


# -- 2. timeouts --------------------------------------------------------------------


def test_unreachable_provider_fails_fast(make_server, request):
    # A port held bound but never listening refuses every connection, and no
    # other server of the run (this test's own included) can be given it.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    request.addfinalizer(closed.close)
    server = make_server(OPENAI_BASE_URL="http://127.0.0.1:{}/v1".format(closed_port),
                         LLM_TIMEOUT="1", LLM_CONNECT_TIMEOUT="2", SSE_KEEPALIVE="0.5")
    alice = Browser(server)
    alice.load()
    started = time.monotonic()
    with alice.stream("@gpt are you there?") as response:
        reply_id = int(response.headers["X-Reply-Id"])
        events = list(SSEReader(response))
    elapsed = time.monotonic() - started
    assert elapsed < 5, "took {:.1f}s to give up on a closed port".format(elapsed)
    final = parse_upsert(events[-1]["data"])
    assert [(a["id"], a["status"]) for a in final] == [(reply_id, "failed")]
    assert notice(final[0]["html"]) == "Could not reach the model provider."
    assert 'data-action="retry"' in final[0]["html"]
    row = wait_settled(server.database_url, reply_id, 5)
    assert (row["status"], row["error"], row["body"]) == ("failed", "Could not reach the model provider.", "")
    assert API_KEY not in alice.load()


def test_silent_provider_times_out(make_server):
    server = make_server(LLM_TIMEOUT="1", SSE_KEEPALIVE="0.5")
    server.llm.enqueue(["Too", " late", "."], first_token_delay=3)
    alice = Browser(server)
    alice.load()
    started = time.monotonic()
    with alice.stream("@gpt think hard") as response:
        reply_id = int(response.headers["X-Reply-Id"])
        reader = SSEReader(response)
        events = list(reader)
    elapsed = time.monotonic() - started
    assert 0.8 < elapsed < 2.5, "gave up after {:.1f}s with LLM_TIMEOUT=1".format(elapsed)
    assert len(events) == 2, events  # no token ever arrived
    final = parse_upsert(events[-1]["data"])
    assert [(a["id"], a["status"]) for a in final] == [(reply_id, "failed")]
    assert notice(final[0]["html"]) == "The model took too long to answer."
    row = wait_settled(server.database_url, reply_id, 5)
    assert (row["status"], row["error"], row["body"]) == ("failed", "The model took too long to answer.", "")
    # The app hung up on the silent model instead of waiting for it.
    wait_until(lambda: server.llm.client_closed_early[-1] is not None, 6, message="the upstream stream to end")
    assert server.llm.client_closed_early == [True]


# -- 3. a stream cut mid-reply --------------------------------------------------------


def test_stream_cut_keeps_text_so_far(live_server, ws_open):
    tokens = ["One", " two", " three.", " Four", " five", " six.", " Seven", " eight", "."]
    cut = 5
    kept = "".join(tokens[:cut])  # "One two three. Four five"
    alice, bob = Browser(live_server), Browser(live_server)
    alice.load()
    observer, skip = observer_for(ws_open, live_server, alice, bob)
    live_server.llm.enqueue(tokens, delay=0.02, cut_after=cut)

    with alice.stream("@gpt count for me") as response:
        reply_id = int(response.headers["X-Reply-Id"])
        events = list(SSEReader(response))

    assert tokens_text(events[1:-1]) == drawn(kept)
    final = parse_upsert(events[-1]["data"])
    assert [(a["id"], a["status"]) for a in final] == [(reply_id, "failed")]
    assert notice(final[0]["html"]) == "The connection to the model broke mid-reply."
    assert final[0]["keeps_body"], "the body the asker has is the final one"
    assert 'data-action="retry"' in final[0]["html"]

    row = wait_settled(live_server.database_url, reply_id, 5)
    assert row["status"] == "failed"
    assert row["body"] == kept
    assert row["error"] == "The connection to the model broke mid-reply."
    assert query(live_server.database_url, "SELECT count(*) AS n FROM chunk")[0]["n"] == 0

    seen = wait_article(observer, reply_id, "failed")
    assert seen["keeps_body"]
    assert notice(seen["html"]) == "The connection to the model broke mid-reply."
    # The observer's appends drew exactly the text kept.
    body = Body(reply_id)
    for append in map(parse_append, observer.frames[skip:]):
        if append:
            body.apply(append[1])
    assert body.html == drawn(kept)


def test_text_no_database_or_page_can_hold_becomes_the_replacement_character(live_server, ws_open):
    # A JSON string can carry NUL (PostgreSQL refuses it in text) and a lone
    # surrogate (no UTF-8 for it); the reply completes with U+FFFD in their place.
    tokens = ["Odd", " \x00bytes", " \ud83d here", ".", " Done", "."]
    shown = "Odd \ufffdbytes \ufffd here. Done."
    alice, bob = Browser(live_server), Browser(live_server)
    alice.load()
    observer, skip = observer_for(ws_open, live_server, alice, bob)
    live_server.llm.enqueue(tokens, delay=0.01)

    with alice.stream("@gpt say something odd") as response:
        reply_id = int(response.headers["X-Reply-Id"])
        events = list(SSEReader(response))

    assert tokens_text(events[1:-1]) == drawn(shown)
    assert [(a["id"], a["status"]) for a in parse_upsert(events[-1]["data"])] == [(reply_id, "complete")]
    row = wait_settled(live_server.database_url, reply_id, 5)
    assert (row["status"], row["body"]) == ("complete", shown)
    seen = wait_article(observer, reply_id, "complete")
    body = Body(reply_id)
    for append in map(parse_append, observer.frames[skip:]):
        if append:
            body.apply(append[1])
    assert body.html == drawn(shown)
    assert seen["keeps_body"]


# -- 4. Stop, then Retry -------------------------------------------------------------


def test_stop_then_retry(live_server, ws_open):
    llm = live_server.llm
    tokens = []
    for i in range(12):  # 60 tokens, 0.05 s apart: ~3 s if nobody stops it
        tokens += ["Part", " {}".format(i + 1), " goes", " on", " here. "]
    full = "".join(tokens)
    alice, bob = Browser(live_server), Browser(live_server)
    alice.load()
    observer, skip = observer_for(ws_open, live_server, alice, bob)
    llm.enqueue(tokens, delay=0.05)

    with alice.stream("@gpt talk for a while") as response:
        reply_id = int(response.headers["X-Reply-Id"])
        reader = SSEReader(response)
        first = reader.next()
        assert 'data-status="streaming"' in first["data"]
        got = [reader.next(), reader.next()]

        # Someone else cannot stop it: 403, and the reply goes on.
        result = control(bob, reply_id, "stop")
        assert result.status == 403, (result.status, result.body)
        assert "Only the person who asked" in result.body
        got += [reader.next(), reader.next(), reader.next()]
        assert all(e and "<article" not in e["data"] for e in got), got
        assert message_row(live_server.database_url, reply_id)["status"] == "streaming"
        assert llm.client_closed_early == [None]

        # The asker stops it.
        result = control(alice, reply_id, "stop")
        assert result.status == 204, (result.status, result.body)
        stopped_at = time.monotonic()
        rest = list(reader)
    wait_until(lambda: llm.client_closed_early[-1] is not None, 2, message="the upstream request to close")
    assert llm.client_closed_early == [True], "the upstream request ran on after Stop"
    assert time.monotonic() - stopped_at < 2

    # The asker's stream ends with the stopped article; its tokens are what is kept.
    events = got + rest
    final = parse_upsert(events[-1]["data"])
    assert [(a["id"], a["status"]) for a in final] == [(reply_id, "stopped")]
    assert notice(final[0]["html"]) == "Stopped before the reply was finished."
    assert 'data-action="retry"' in final[0]["html"] and 'data-action="stop"' not in final[0]["html"]
    streamed = tokens_text(events[:-1])

    row = wait_settled(live_server.database_url, reply_id, 3)
    assert row["status"] == "stopped" and row["error"] is None
    assert row["body"], "the text so far is kept"
    assert full.startswith(row["body"]) and len(row["body"]) < len(full)
    assert drawn(row["body"]) == streamed
    assert query(live_server.database_url, "SELECT count(*) AS n FROM chunk")[0]["n"] == 0

    seen = wait_article(observer, reply_id, "stopped")
    assert notice(seen["html"]) == "Stopped before the reply was finished."
    assert seen["keeps_body"]

    # Stopping again changes nothing; nobody else may retry.
    assert control(alice, reply_id, "stop").status == 204
    assert message_row(live_server.database_url, reply_id)["status"] == "stopped"
    result = control(bob, reply_id, "retry")
    assert result.status == 403
    assert len(llm.requests) == 1

    # The asker retries: a new upstream request, a fresh complete reply.
    new_tokens = ["A", " fresh", " answer", " this", " time", "."]
    llm.enqueue(new_tokens, delay=0.1)
    result = control(alice, reply_id, "retry")
    assert result.status == 204, (result.status, result.body)
    again = control(alice, reply_id, "retry")  # while the retry runs
    assert again.status == 409, (again.status, again.body)
    wait_until(lambda: len(llm.requests) == 2, 3, message="the retried request to reach the model")
    row = wait_settled(live_server.database_url, reply_id, 5)
    assert row["status"] == "complete" and row["error"] is None
    assert row["body"] == "".join(new_tokens)
    wait_until(lambda: llm.client_closed_early[-1] is not None, 3, message="the retried stream to end")
    assert llm.client_closed_early == [True, False]

    done = wait_article(observer, reply_id, "complete")
    assert notice(done["html"]) is None and 'data-action="retry"' not in done["html"]
    # The observer's page followed the retry (its new empty article, the appends,
    # the settle around them) and shows the fresh answer.
    status, shown = None, None
    for data in list(observer.frames):
        append = parse_append(data)
        if append:
            if append[0] == reply_id and shown is not None:
                shown.apply(data)
            continue
        for article in parse_upsert(data):
            if article["id"] == reply_id:
                status = article["status"]
                if not article["keeps_body"]:
                    shown = Body(reply_id, article["body_html"])
    assert status == "complete" and shown.html.strip() == "<p>A fresh answer this time.</p>"


# -- 5. keep-alives while the model thinks ---------------------------------------------


def test_keepalive_comments_before_first_token(make_server):
    server = make_server(SSE_KEEPALIVE="0.5")
    tokens = ["Worth", " the", " wait", "."]
    server.llm.enqueue(tokens, delay=0.02, first_token_delay=2)
    alice = Browser(server)
    alice.load()

    started = time.monotonic()
    keepalives = []  # (arrival time, events complete before it)
    events, data, name, names = [], [], "", []
    with alice.stream("@gpt take your time") as response:
        reply_id = int(response.headers["X-Reply-Id"])
        while True:  # the raw lines, so comments are seen where they arrive
            raw = response.readline()
            if not raw:
                break
            line = raw.decode("utf-8").rstrip("\r\n")
            if line == ": keep-alive":
                keepalives.append((time.monotonic() - started, len(events)))
            elif line.startswith("data:"):
                data.append(line[6:] if line.startswith("data: ") else line[5:])
            elif line.startswith("event:"):
                name = line[6:].lstrip(" ")
            elif line == "" and data:
                events.append("\n".join(data))
                names.append(name)
                data, name = [], ""
            else:
                assert line == "", "unexpected line {!r}".format(line)
    assert data == [], "the stream ended inside an event"

    # Event 1 is the two articles; keep-alives come after it, before any token.
    before_first_token = [t for t, n in keepalives if n == 1]
    assert len(before_first_token) >= 2, keepalives
    assert before_first_token[0] < 1.5, "keep-alives arrive as they are sent, not when a buffer fills"
    assert 'data-status="streaming"' in events[0]
    assert 'data-status="complete"' in events[-1] and 'id="message-{}"'.format(reply_id) in events[-1]
    drawing = [{"event": n, "data": e} for n, e in zip(names[1:-1], events[1:-1])]
    assert tokens_text(drawing) == drawn("".join(tokens))
    row = wait_settled(server.database_url, reply_id, 5)
    assert row["status"] == "complete" and row["body"] == "".join(tokens)


# -- 6. websocket abuse ----------------------------------------------------------------


JUNK_FRAMES = [
    "hello",
    "{not json",
    "",
    "null",
    "[1, 2, 3]",
    '"follow"',
    '{"follow": "x"}',
    '{"follow": null}',
    '{"follow": -3}',
    '{"follow": 0}',
    '{"follow": 1.5}',
    '{"follow": [1]}',
    '{"follow": {"id": 1}}',
    '{"follow": 1e999}',
    '{"follow": 999999}',  # a well-formed id of no message
    '{"follow": 1, "x": ' + "1" * 300 + "}",  # long: over the 200-character cap
    "\u0000\ufffd\U0001f600",
]


def test_websocket_abuse_is_ignored_or_refused(live_server, ws_open):
    alice, bob = Browser(live_server), Browser(live_server)
    alice.load()
    sock, skip = observer_for(ws_open, live_server, alice, bob)

    for frame in JUNK_FRAMES:
        sock.ws.send(frame)
    sock.ws.send_binary(b"\x00\x01\xff binary junk")
    sock.ws.send_binary(b'{"follow": 1}')
    sock.ws.send("z" * 4000)  # big but within the limit
    time.sleep(0.5)
    assert not sock.closed.is_set(), "junk closed the socket (code {})".format(sock.close_code)
    assert sock.frames[skip:] == [], "junk got an answer: {!r}".format(sock.frames[skip:])

    # It is still live: a new message reaches it.
    live_id = alice.say("still there?")
    wait_article(sock, live_id, "complete")

    # An oversized frame (over 4096 bytes) closes that socket with 1009.
    big = ws_open(live_server, bob.page, after=live_id)
    big.ws.send("x" * 5000)
    assert big.closed.wait(5), "an oversized frame did not close the socket"
    assert big.close_code == 1009, big.close_code

    # The server is fine, and so are other sockets.
    response = urllib.request.urlopen(live_server.url + "/", timeout=5)
    assert response.status == 200
    response.close()
    fresh = ws_open(live_server, bob.page, after=0)
    fresh.wait_count(1)
    after_id = alice.say("after the abuse")
    wait_article(fresh, after_id, "complete")
    wait_article(sock, after_id, "complete")
    assert not sock.closed.is_set() and not fresh.closed.is_set()


@pytest.mark.parametrize(
    "frame",
    [
        '{"follow": 99999999999999999999999999}',  # an int SQLite cannot hold
        '{"follow": true}',  # a bool is an int to Python, but not a message id
    ],
)
def test_websocket_follow_needs_a_real_id(live_server, ws_open, frame):
    alice, bob = Browser(live_server), Browser(live_server)
    alice.load()
    sock, skip = observer_for(ws_open, live_server, alice, bob)
    sock.ws.send(frame)
    time.sleep(0.5)
    assert not sock.closed.is_set(), "{} dropped the socket; server log ends: {}".format(
        frame, live_server.logs()[-400:])
    assert sock.frames[skip:] == [], "{} got an answer: {!r}".format(frame, sock.frames[skip:])
    live_id = alice.say("still there?")
    wait_article(sock, live_id, "complete")
    assert "Traceback" not in live_server.logs()


# -- 7. limits over HTTP -------------------------------------------------------------------


def test_second_ask_while_streaming_is_refused(live_server):
    llm = live_server.llm
    tokens = ["Slow", " and", " steady", " wins", " the", " race", "."] * 2
    llm.enqueue(tokens, delay=0.1)
    alice, bob = Browser(live_server), Browser(live_server)
    alice.load()
    bob.load()

    with alice.stream("@gpt first question") as response:
        reply_id = int(response.headers["X-Reply-Id"])
        reader = SSEReader(response)
        reader.next()
        assert message_row(live_server.database_url, reply_id)["status"] == "streaming"
        before = count_messages(live_server)

        # htmx, with or without SSE: 429 shown under the composer.
        for sse in (True, False):
            result = alice.post("@gpt second question", sse=sse)
            assert result.status == 429, (result.status, result.body)
            assert result.headers["HX-Retarget"] == "#composer-error"
            assert "@gpt is still answering you" in html.unescape(result.body)
        # Without JavaScript: the page again, with the error and the draft kept.
        result = alice.post("@gpt second question", htmx=False, sse=False)
        assert result.status == 429
        page = html.unescape(result.body)
        assert "@gpt is still answering you" in page and "@gpt second question" in page
        assert count_messages(live_server) == before, "a refused post was stored"
        wait_until(lambda: llm.requests, 3, message="the first question to reach the model")
        time.sleep(0.2)
        assert len(llm.requests) == 1, "a refused post reached the model"

        # A plain message is fine meanwhile, and so is another session's ask.
        assert alice.say("just chatting") > reply_id
        llm.enqueue(["Bob", " gets", " one", "."], delay=0.01)
        result = bob.post("@gpt my turn", sse=False)
        assert result.status == 200, (result.status, result.body)
        assert count_messages(live_server) == before + 3
        events = list(reader)
    assert 'data-status="complete"' in events[-1]["data"]
    assert tokens_text(events[:-1]) == drawn("".join(tokens))

    # Once the reply is done, asking again works.
    wait_settled(live_server.database_url, reply_id, 5)
    llm.enqueue(["Again", "."], delay=0.01)
    result = alice.post("@gpt second question", sse=False)
    assert result.status == 200, (result.status, result.body)
    rows = query(live_server.database_url, "SELECT body FROM message WHERE role = 'user' ORDER BY id")
    assert [r["body"] for r in rows].count("@gpt second question") == 1
