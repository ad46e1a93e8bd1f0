"""End-to-end tests against a real gunicorn+gevent server (``live_server``)
whose model is the fake OpenAI-compatible server (``live_server.llm``).

Everything is checked on the wire (SSE bytes of the author's response, frames of
page sockets) and in the SQLite file the server writes, never through the app's
own objects.  Only the standard library and ``websocket-client`` are used.
"""
import html
import re
import socket
import time

import pytest
from markupsafe import escape

from chat.render.rendering import render_markdown
from support.body import Body
from support.body import apply_author_stream
from support.live import Browser
from support.live import Socket
from support.live import SSEReader
from support.live import author_body
from support.live import chunk_rows
from support.live import chunks_of
from support.live import fragments_for
from support.live import message_row
from support.live import parse_append
from support.live import parse_upsert
from support.live import query
from support.live import slow_tokens
from support.live import wait_settled
from support.live import wait_until

# Four sentences, a blank line, markup and quotes that must be escaped, a
# Markdown emphasis for the final render; ends on visible text.
TOKENS = [
    "Hello", " there", ",", " friend", ".",
    " This", " reply", " has", " <b>tags</b>", " &", ' "quotes"', ".", "\n\n",
    "Second", " paragraph", " asks", " why", "?",
    " It", " ends", " with", " **bold**", " text", "!",
    " Done", ".",
]
REPLY = "".join(TOKENS)
# What the chunker rules (sentence ends, blank lines) give for TOKENS.
EXPECTED_CHUNKS = [
    "Hello there, friend. ",
    'This reply has <b>tags</b> & "quotes".\n\n',
    "Second paragraph asks why? ",
    "It ends with **bold** text! ",
    "Done.",
]




@pytest.fixture
def sockets(live_server):
    """Opens page sockets and closes them all before the server stops."""
    opened = []

    def open_socket(page, **kwargs):
        sock = Socket(live_server, page, **kwargs)
        opened.append(sock)
        return sock

    yield open_socket
    for sock in opened:
        sock.close()


def ready_socket(open_socket, page):
    """A subscribed page socket: it connects with after=0 to a room holding at
    least one message, so the snapshot frame proves the server subscribed it.
    Returns (socket, number of snapshot frames to skip)."""
    sock = open_socket(page, after=0)
    sock.wait_count(1)
    return sock, 1


def read_author_stream(browser, text):
    """Post ``text`` over SSE and read the whole stream; returns (headers, events)."""
    with browser.stream(text) as response:
        assert response.status == 200
        headers = response.headers
        events = list(SSEReader(response))
    return headers, events


def split_observer_frames(frames, reply_id):
    """(articles frames, appends, finals) for one reply as an observer sees it."""
    appends, finals, others = [], [], []
    for data in frames:
        append = parse_append(data)
        if append:
            assert append[0] == reply_id, data
            appends.append(append[1])
        else:
            articles = parse_upsert(data)
            if any(a["id"] == reply_id and a["status"] == "complete" for a in articles):
                finals.append(articles)
            else:
                others.append(articles)
    return others, appends, finals


# -- 1. the author's stream ------------------------------------------------------


def test_author_stream_carries_every_token(live_server):
    live_server.llm.enqueue(TOKENS, delay=0.02)
    alice = Browser(live_server)
    alice.load()
    text = "Hey @gpt, explain <streaming> & \"chunks\" please"

    with alice.stream(text) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        reply_id = int(response.headers["X-Reply-Id"])
        assert response.headers["HX-Retarget"] == "#message-{}-body".format(reply_id)
        assert response.headers["HX-Reswap"] == "beforeend"
        assert response.headers["Cache-Control"] == "no-cache"
        events = list(SSEReader(response))

    assert len(events) >= 3
    # First event: the user's article and the empty streaming reply, in id order.
    first = parse_upsert(events[0]["data"])
    assert [(a["role"], a["status"]) for a in first] == [("user", "complete"), ("assistant", "streaming")]
    user, reply = first
    assert reply["id"] == reply_id and user["id"] < reply_id
    assert html.unescape(user["body_html"]) == text
    assert "<streaming>" not in user["html"], "user text must be escaped"
    assert reply["body_html"] == "" and reply["body_kind"] == "markdown"

    # Middle events: the reply drawn as sanitized Markdown as it grows; applied
    # in order they give exactly the rendered reply.
    middle = events[1:-1]
    for event in middle:
        assert event["event"] in (None, "reply-at")
        assert "<b>" not in event["data"], "model markup travels escaped: " + event["data"]
        assert event["data"].strip(), "no whitespace-only swaps"
    drawn = author_body(events, reply_id)
    assert drawn == str(render_markdown(REPLY))
    assert "<strong>bold</strong>" in drawn and "&lt;b&gt;tags&lt;/b&gt;" in drawn

    # Last event: the article, complete, around the body the page already shows.
    final = parse_upsert(events[-1]["data"])
    assert len(final) == 1 and final[0]["id"] == reply_id
    assert final[0]["status"] == "complete" and final[0]["body_kind"] == "markdown"
    assert final[0]["keeps_body"] and final[0]["body_html"] == ""
    assert "{} completion tokens".format(len(TOKENS)) in final[0]["html"]

    # What the model was asked.
    assert len(live_server.llm.requests) == 1
    assert live_server.llm.headers[0]["Authorization"] == "Bearer test-key"
    request = live_server.llm.requests[0]
    assert request["model"] == "fake-model" and request["stream"] is True
    messages = request["messages"]
    assert messages[0]["role"] == "system" and "gpt" in messages[0]["content"]
    assert messages[-1] == {"role": "user", "content": "{}: {}".format(alice.name, text)}


# -- 2. an observer's socket -----------------------------------------------------


def test_observer_gets_one_append_per_chunk(live_server, sockets):
    assert chunks_of(TOKENS) == EXPECTED_CHUNKS
    alice, bob = Browser(live_server), Browser(live_server)
    alice.load()
    alice.say("hi all")
    bob.load()
    assert bob.page != alice.page
    observer, skip = ready_socket(sockets, bob.page)

    live_server.llm.enqueue(TOKENS, delay=0.02)
    headers, events = read_author_stream(alice, "@gpt tell us something")
    reply_id = int(headers["X-Reply-Id"])
    n = len(EXPECTED_CHUNKS)
    frames = observer.wait_count(skip + n + 3)[skip:]
    time.sleep(0.2)  # nothing more may follow
    assert len(observer.frames) == skip + n + 3, observer.frames[skip + n + 3:]

    # The two new articles come first, one frame each, then the appends, then the final.
    user_frame, reply_frame = parse_upsert(frames[0]), parse_upsert(frames[1])
    assert [(a["id"], a["role"]) for a in user_frame] == [(reply_id - 1, "user")]
    assert [(a["id"], a["role"], a["status"], a["body_html"]) for a in reply_frame] == [
        (reply_id, "assistant", "streaming", "")
    ]
    appends = [parse_append(f) for f in frames[2:2 + n]]
    assert all(a is not None and a[0] == reply_id for a in appends), frames[2:2 + n]
    # One fragment per committed chunk, in order, exactly what the stored text gives.
    assert [a[1] for a in appends] == fragments_for(reply_id, EXPECTED_CHUNKS)
    body = Body(reply_id)
    for a in appends:
        assert "<b>" not in a[1], "model markup travels escaped"
        body.apply(a[1])
    assert body.html == str(render_markdown(REPLY))  # nothing is held back
    final = parse_upsert(frames[-1])
    assert [(a["id"], a["status"], a["keeps_body"]) for a in final] == [(reply_id, "complete", True)]

    # Bandwidth: the reply text crosses the socket about once before completion,
    # and completion does not send it again.
    append_bytes = sum(len(f.encode()) for f in frames[2:2 + n])
    assert append_bytes < len(str(escape(REPLY)).encode()) + n * 80
    assert len(frames[-1].encode()) < 1000
    for f in frames[:-1]:  # no frame before the final one carries the whole reply
        assert REPLY not in html.unescape(f)
        assert str(escape(REPLY)) not in f


# -- 3. the asker's own socket skips its reply ------------------------------------


def test_askers_socket_skips_own_reply(live_server, sockets):
    alice, bob, carol = Browser(live_server), Browser(live_server), Browser(live_server)
    alice.load()
    alice.say("hi all")
    bob.load()
    own, own_skip = ready_socket(sockets, alice.page)
    observer, obs_skip = ready_socket(sockets, bob.page)

    live_server.llm.enqueue(TOKENS, delay=0.02)
    headers, events = read_author_stream(alice, "@gpt are you there?")
    reply_id = int(headers["X-Reply-Id"])
    assert author_body(events, reply_id) == str(render_markdown(REPLY))

    # The observer gets everything; wait for its final swap.
    observer.wait_frames(lambda f: any(split_observer_frames(f[obs_skip:], reply_id)[2]), what="final swap")
    # A sentinel from a third browser: once the asker's socket has it, every
    # earlier event of the room has been through that socket's queue.
    carol.load()
    sentinel = carol.say("sentinel")
    own.wait_frames(lambda f: any('id="message-{}"'.format(sentinel) in x for x in f), what="sentinel")
    own_frames = own.frames[own_skip:]
    assert len(own_frames) == 1, "the asker's socket got its own post/reply events: {!r}".format(own_frames[:-1])
    assert [a["id"] for a in parse_upsert(own_frames[0])] == [sentinel]

    observer.wait_frames(lambda f: any('id="message-{}"'.format(sentinel) in x for x in f), what="sentinel")
    others, appends, finals = split_observer_frames(observer.frames[obs_skip:], reply_id)
    assert appends == fragments_for(reply_id, EXPECTED_CHUNKS)
    assert len(finals) == 1
    assert [[a["id"] for a in arts] for arts in others] == [[reply_id - 1], [reply_id], [sentinel]]


# -- 4. database rows --------------------------------------------------------------


def test_db_rows_while_streaming_and_after(live_server):
    tokens = slow_tokens(4)  # 12 tokens, 0.2 s apart: ~2.2 s
    reply_text = "".join(tokens)
    expected = chunks_of(tokens)
    assert len(expected) == 4
    live_server.llm.enqueue(tokens, delay=0.2)
    alice = Browser(live_server)
    alice.load()
    database_url = live_server.database_url

    with alice.stream("@gpt count slowly") as response:
        reader = SSEReader(response)
        reply_id = int(response.headers["X-Reply-Id"])
        assert reader.next() is not None
        user_id = message_row(database_url, reply_id)["reply_to_id"]
        user = message_row(database_url, user_id)
        assert (user["role"], user["status"], user["body"], user["author"]) == (
            "user", "complete", "@gpt count slowly", alice.name)

        def mid_way():
            (msg,), chunks = query(
                database_url,
                [
                    ("SELECT * FROM message WHERE id = ?", (reply_id,)),
                    ("SELECT seq, text FROM chunk WHERE message_id = ? ORDER BY seq", (reply_id,)),
                ],
            )
            return (msg, chunks) if len(chunks) >= 2 else None

        msg, chunks = wait_until(mid_way, 6, message="two committed chunks")
        assert msg["status"] == "streaming", "looked too late: {}".format(msg["status"])
        assert msg["body"] == "" and msg["completed_at"] is None
        assert msg["stream_page"] == alice.page and msg["claimed_by"]
        assert [c["seq"] for c in chunks] == list(range(1, len(chunks) + 1))
        committed = "".join(c["text"] for c in chunks)
        assert reply_text.startswith(committed)
        assert [c["text"] for c in chunks] == expected[: len(chunks)]
        assert len(chunks) < len(expected)
        rest = list(reader)

    body = Body(reply_id)
    apply_author_stream(body, [(e["event"] or "", e["data"]) for e in rest[:-1]])
    assert body.html == str(render_markdown(reply_text))
    assert 'data-status="complete"' in rest[-1]["data"]
    msg = wait_settled(database_url, reply_id, 5)
    assert msg["status"] == "complete"
    assert msg["body"] == reply_text
    assert msg["completion_tokens"] == len(tokens)
    assert msg["prompt_tokens"] and msg["ttft_ms"] is not None and msg["completed_at"]
    assert msg["model"] == "fake-model" and msg["error"] is None and msg["stream_page"] is None
    assert chunk_rows(database_url, reply_id) == []
    assert query(database_url, "SELECT count(*) AS n FROM chunk")[0]["n"] == 0


# -- 5. the author leaves mid-reply ------------------------------------------------


def test_author_disconnect_mid_reply_still_completes(live_server, sockets):
    tokens = slow_tokens(6)  # 18 tokens, 0.1 s apart: ~1.7 s
    reply_text = "".join(tokens)
    expected = chunks_of(tokens)
    alice, bob = Browser(live_server), Browser(live_server)
    alice.load()
    alice.say("hi all")
    bob.load()
    observer, obs_skip = ready_socket(sockets, bob.page)
    own, own_skip = ready_socket(sockets, alice.page)  # the author's page stays open

    live_server.llm.enqueue(tokens, delay=0.1)
    with alice.stream("@gpt go on without me") as response:
        reader = SSEReader(response)
        reply_id = int(response.headers["X-Reply-Id"])
        assert "streaming" in reader.next()["data"]
        got = [reader.next(), reader.next()]
        assert "<p>Sentence" in got[0]["data"] and all(e is not None for e in got)
        # Shut the TCP connection down (not just drop our reference), so the
        # server's next write fails rather than filling a kernel buffer.
        response.fp.raw._sock.shutdown(socket.SHUT_RDWR)
    t_closed = time.monotonic()

    # The server notices while the reply still runs: the author's stream is
    # detached (its page no longer named as the reply's streaming page).
    def detached_row():
        row = message_row(live_server.database_url, reply_id)
        return row if row["stream_page"] is None else None

    detached = wait_until(detached_row, 3, message="the author's stream to be detached")
    assert detached["status"] == "streaming", "detached only at completion"
    msg = wait_settled(live_server.database_url, reply_id, 8)
    assert msg["status"] == "complete" and msg["body"] == reply_text
    assert msg["completion_tokens"] == len(tokens)
    assert chunk_rows(live_server.database_url, reply_id) == []
    # The upstream request ran to its end: leaving did not cancel the reply.
    wait_until(lambda: live_server.llm.client_closed_early[-1] is not None, 3, message="upstream end")
    assert live_server.llm.client_closed_early == [False]

    # The observer saw the whole reply and exactly one final swap.
    observer.wait_frames(lambda f: split_observer_frames(f[obs_skip:], reply_id)[2], what="final swap")
    others, appends, finals = split_observer_frames(observer.frames[obs_skip:], reply_id)
    assert appends == fragments_for(reply_id, expected)
    assert len(finals) == 1 and finals[0][0]["keeps_body"]

    # The author's own page socket was told to follow: a resync of the reply as
    # committed so far, then only the chunks after it, then the final article.
    own.wait_frames(lambda f: split_observer_frames(f[own_skip:], reply_id)[2], what="final on the author's socket")
    own_frames = own.frames[own_skip:]
    resync = parse_upsert(own_frames[0])
    assert [(a["id"], a["status"]) for a in resync] == [(reply_id, "streaming")]
    body = Body(reply_id, resync[0]["body_html"])
    others, appends, finals = split_observer_frames(own_frames[1:], reply_id)
    assert others == []
    for fragment in appends:
        body.apply(fragment)
    assert body.html == str(render_markdown(reply_text))
    assert len(finals) == 1
    assert time.monotonic() - t_closed < 5


# -- 6. an observer reconnects mid-reply --------------------------------------------


def test_observer_reconnect_converges(live_server, sockets):
    tokens = slow_tokens(10)  # 30 tokens, 0.08 s apart: ~2.4 s
    reply_text = "".join(tokens)
    expected = chunks_of(tokens)
    assert len(expected) == 10
    alice, bob = Browser(live_server), Browser(live_server)
    alice.load()
    alice.say("hi all")
    bob.load()
    first, skip = ready_socket(sockets, bob.page)

    live_server.llm.enqueue(tokens, delay=0.08)
    with alice.stream("@gpt a long one please") as response:
        reader = SSEReader(response)
        reply_id = int(response.headers["X-Reply-Id"])
        # Bob has the two articles and two appends, then his network drops.
        first.wait_frames(lambda f: len(split_observer_frames(f[skip:], reply_id)[1]) >= 2, what="two appends")
        first.close()
        before = split_observer_frames(first.frames[skip:], reply_id)
        had = len(before[1])
        assert before[1] == fragments_for(reply_id, expected)[:had]
        # Chunks get committed while he is away.
        wait_until(lambda: len(chunk_rows(live_server.database_url, reply_id)) >= had + 2, 5,
                   message="chunks committed while disconnected")
        second = sockets(bob.page, after=reply_id, streaming=[reply_id])
        snapshot = parse_upsert(second.wait_count(1)[0])
        events = list(reader)
    assert 'data-status="complete"' in events[-1]["data"]

    assert [(a["id"], a["status"]) for a in snapshot] == [(reply_id, "streaming")]
    # The snapshot holds whole committed chunks, drawn: the first k of them.
    prefixes = [str(render_markdown("".join(expected[:i]))) for i in range(len(expected) + 1)]
    snap_html = snapshot[0]["body_html"]
    assert snap_html in prefixes, snap_html
    k = prefixes.index(snap_html)
    assert had < k < len(expected), "reconnected while the reply was still streaming"

    second.wait_frames(lambda f: split_observer_frames(f[1:], reply_id)[2], what="final swap after reconnect")
    others, appends, finals = split_observer_frames(second.frames[1:], reply_id)
    assert others == []
    assert appends == fragments_for(reply_id, expected)[k:], "only new chunks, none twice"
    body = Body(reply_id, snap_html)
    for fragment in appends:
        body.apply(fragment)
    assert body.html == str(render_markdown(reply_text))
    assert len(finals) == 1 and finals[0][0]["keeps_body"]

    # A page still showing the reply as streaming that reconnects after the end
    # gets the final article in its snapshot (there is no later event to heal it).
    late = sockets(bob.page, after=reply_id, streaming=[reply_id])
    final = parse_upsert(late.wait_count(1)[0])
    assert [(a["id"], a["status"], a["body_kind"]) for a in final] == [(reply_id, "complete", "markdown")]
    assert final[0]["body_html"].startswith("<p>Sentence number 1 ends. Sentence number 2")
    # A page that already has everything gets nothing.
    quiet = sockets(bob.page, after=reply_id)
    assert not quiet.closed.wait(0.3) and quiet.frames == [] and len(late.frames) == 1


# -- 7. bad input -------------------------------------------------------------------


def test_bad_input_is_refused(live_server, sockets):
    alice = Browser(live_server)
    alice.load()
    count = lambda: query(live_server.database_url, "SELECT count(*) AS n FROM message")[0]["n"]  # noqa: E731

    # Empty (after cleaning) bodies: 400 with a readable message, htmx or not.
    for body in ["", "   \n\t  ", "\u200b\u200e \r\n"]:
        result = alice.post(body)
        assert result.status == 400, (body, result.status)
        assert result.headers["HX-Retarget"] == "#composer-error"
        assert result.body.strip() == "Write something first: empty messages are not sent."
    result = alice.post(" ", htmx=False, sse=False)
    assert result.status == 400
    assert re.search(r'id="composer-error"[^>]*>Write something first: empty messages are not sent\.</p>', result.body)
    result = alice.post("x" * 4001)
    assert result.status == 413 and "4,001 characters" in result.body and "4,000" in result.body
    assert count() == 0

    # No CSRF token, a wrong one, or no session at all: 403 and nothing stored.
    for kwargs in [{"token": None, "field_token": None}, {"token": "forged", "field_token": "forged"}]:
        result = alice.post("@gpt hello", **kwargs)
        assert result.status == 403, kwargs
        assert result.headers["HX-Retarget"] == "#composer-error"
        assert result.body.strip() == "This page had expired, so your message was not sent. It is still here: press Send again."
        assert result.headers["X-CSRF-Token"] == alice.csrf  # the session's own, for the page to take
    stranger = Browser(live_server)  # no cookie: a token copied from another session
    stranger.page, stranger.csrf = alice.page, alice.csrf
    result = stranger.post("@gpt hello")
    assert result.status == 403
    assert count() == 0
    assert live_server.llm.requests == []

    # A socket from a foreign (or missing) Origin is closed with 1008 and no data.
    for origin in ["http://evil.example", "http://127.0.0.1:{}".format(live_server.port + 1), None]:
        sock = sockets(alice.page, origin=origin)
        assert sock.closed.wait(5), origin
        assert sock.close_code == 1008, (origin, sock.close_code)
        assert sock.frames == []
    # ...while the same origin is served (the room is empty: no snapshot, stays open).
    ok = sockets(alice.page)
    assert not ok.closed.wait(0.3) and ok.frames == []
