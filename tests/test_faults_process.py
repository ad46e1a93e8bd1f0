"""Process faults and load against a real gunicorn+gevent server.

kill -9 mid-reply (the watchdog of the next process settles the reply), SIGTERM
(a short reply finishes inside the graceful timeout, a long one is marked
interrupted, open sockets do not hold the worker until it is killed), a viewer
that stops reading (dropped, nobody else waits), a slow viewer (whole frames
only) and many askers with many observers on one worker.  Everything is checked on the wire
and in the SQLite file the server writes.
"""
import base64
import os
import resource
import selectors
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from chat.render.rendering import render_markdown
from conftest import LiveServer
from support.body import Body
from support.live import PRESENCE
from support.live import Browser
from support.live import SSEReader
from support.live import author_body
from support.live import children
from support.live import chunk_rows
from support.live import chunks_of
from support.live import dead
from support.live import fragments_for
from support.live import llm_env
from support.live import message_row
from support.live import parse_append
from support.live import parse_upsert
from support.live import query
from support.live import slow_tokens
from support.live import wait_until

# -- servers ---------------------------------------------------------------------




@pytest.fixture
def servers():
    """Starts servers; at teardown stops them and kills whatever is left of
    their process groups (a test may have killed only part of one)."""
    started = []

    def start(tmp_path, env, graceful=5):
        server = LiveServer(tmp_path, env, graceful=graceful).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        try:
            os.killpg(server.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# -- reading what pages get ------------------------------------------------------


def articles_of(frames, message_id):
    """Every article for ``message_id`` in socket frames, in arrival order."""
    found = []
    for data in frames:
        if data.startswith("<hx-upsert"):
            found += [a for a in parse_upsert(data) if a["id"] == message_id]
    return found


def at_least(n, rows):
    """``rows`` if there are at least ``n`` of them, else None."""
    return rows if len(rows) >= n else None


def markdown_html(text):
    return str(render_markdown(text))


def page_body(frames, message_id):
    """What a page shows of ``message_id`` after applying socket ``frames`` in
    order, as (status, body html): an article replaces the message (keeping the
    body the page has when it says so), a chunk's fragment is applied to the body."""
    status, body = None, None
    for data in frames:
        append = parse_append(data)
        if append:
            if append[0] == message_id:
                assert status == "streaming", ("a chunk for a message not shown streaming", data[:200])
                body.apply(append[1])
            continue
        for article in parse_upsert(data):
            if article["id"] != message_id:
                continue
            if article["keeps_body"]:
                assert body is not None, "the page is told to keep a body it never had"
            else:
                body = Body(message_id, article["body_html"])
            status = article["status"]
    return status, (body.html if body is not None else None)






def read_events(reader, into):
    """Read SSE events into a list until the stream ends or breaks; returns how it ended."""
    try:
        for event in reader:
            into.append(event)
        return "eof"
    except Exception as exc:  # reset, incomplete chunked body...
        return type(exc).__name__


def read_drawn(reader):
    """Events up to and including the first one that draws reply text (a
    ``reply-at`` event only says where the next ones go)."""
    events = []
    while True:
        event = reader.next()
        assert event is not None, ("the stream ended before any text", events)
        events.append(event)
        if event["event"] != "reply-at":
            return events


# -- 1. kill -9 mid-reply ----------------------------------------------------------


def test_kill9_mid_reply_is_interrupted_by_next_process(tmp_path, fake_llm, servers, ws_open):
    tokens = slow_tokens(20)  # 60 tokens, 0.1 s apart: ~6 s
    expected = chunks_of(tokens)
    assert len(expected) == 20
    fake_llm.enqueue(tokens, delay=0.1)
    first = servers(tmp_path, llm_env(fake_llm))
    database_url = first.database_url
    alice = Browser(first)
    alice.load()

    with alice.stream("@gpt tell a long story") as response:
        reader = SSEReader(response)
        reply_id = int(response.headers["X-Reply-Id"])
        assert 'data-status="streaming"' in reader.next()["data"]
        wait_until(lambda: len(chunk_rows(database_url, reply_id)) >= 2, 8, message="two committed chunks")
        workers = children(first.proc.pid)
        assert workers, "no worker process found"
        os.killpg(first.proc.pid, signal.SIGKILL)  # master and worker: the whole group
        killed_at = time.monotonic()
        first.proc.wait(5)
        wait_until(lambda: all(dead(pid) for pid in workers), 5, message="the worker to die")
        events = []
        ended = read_events(reader, events)
    # The author's stream just breaks: no final article ever comes.
    assert not any("<article" in e["data"] for e in events), (ended, events[-1:])

    # What was committed before the kill is in the file, the reply still "streaming".
    chunks = chunk_rows(database_url, reply_id)
    k = len(chunks)
    assert 2 <= k < len(expected), "killed too late: {} chunks".format(k)
    assert [c["text"] for c in chunks] == expected[:k]
    committed = "".join(expected[:k])
    row = message_row(database_url, reply_id)
    assert (row["status"], row["body"], row["completed_at"]) == ("streaming", "", None)
    # The model's response was abandoned when the process died.
    wait_until(lambda: fake_llm.client_closed_early[0] is not None, 5, message="upstream to notice")
    assert fake_llm.client_closed_early == [True]

    # A new process on the same database file (with a slow heartbeat, so only
    # "running here" protects its own silent reply below). The dead process's
    # worker row names a pid that no longer runs: its reply is settled at the
    # new process's first sweep, not after INTERRUPT_AFTER without activity.
    second = servers(tmp_path, llm_env(fake_llm, WATCHDOG_INTERVAL=0.5, INTERRUPT_AFTER=3, HEARTBEAT_INTERVAL=30))
    restarted_at = time.monotonic()
    assert second.database_url == database_url
    bob = Browser(second)
    bob.load()
    observer = ws_open(second, bob.page, after=0)
    connected_at = time.monotonic()
    observer.wait_count(1)
    snapshot_status = articles_of(observer.frames[:1], reply_id)[0]["status"]

    def interrupted_article(frames):
        arts = articles_of(frames, reply_id)
        return arts and arts[-1]["status"] == "interrupted" and arts[-1]

    article = observer.wait_frames(interrupted_article, timeout=10, what="the interrupted article")
    settled_after = time.monotonic() - killed_at
    since_restart = time.monotonic() - restarted_at
    # Exactly one settling reaches the page: in its snapshot or as one live event.
    assert [a["status"] for a in articles_of(observer.frames, reply_id)] in (
        ["interrupted"], ["streaming", "interrupted"])
    # The page shows what was committed, drawn: the snapshot carries it, or the
    # settling keeps the body the streaming snapshot drew.
    assert page_body(observer.frames, reply_id) == ("interrupted", markdown_html(committed))
    if article["keeps_body"]:
        assert snapshot_status == "streaming"
    assert "Interrupted" in article["html"] and 'data-action="retry"' in article["html"]
    row = message_row(database_url, reply_id)
    assert row["status"] == "interrupted" and row["body"] == committed
    assert row["completed_at"] is not None and row["stream_page"] is None
    assert chunk_rows(database_url, reply_id) == []
    assert settled_after < 10
    assert since_restart < 5
    print("kill -9: observer connected {:.2f}s after the kill (snapshot {}), interrupted {:.2f}s after the "
          "kill, {:.2f}s after the restart".format(connected_at - killed_at, snapshot_status, settled_after, since_restart))
    assert second.logs().count("reply {} interrupted: its process".format(reply_id)) == 1

    # A reply of the new process that is slow to start (silent for longer than
    # INTERRUPT_AFTER, no heartbeat yet) is its own: the watchdog leaves it alone.
    tokens2 = slow_tokens(4)
    fake_llm.enqueue(tokens2, delay=0.1, first_token_delay=4.5)
    carol = Browser(second)
    carol.load()
    with carol.stream("@gpt take your time") as response:
        reader = SSEReader(response)
        reply2 = int(response.headers["X-Reply-Id"])
        events = list(reader)
    assert 'data-status="complete"' in events[-1]["data"], events[-1]["data"][:300]
    assert author_body(events, reply2) == markdown_html("".join(tokens2))
    row = message_row(database_url, reply2)
    assert (row["status"], row["body"]) == ("complete", "".join(tokens2))
    assert "reply {} interrupted".format(reply2) not in second.logs()
    # The observer saw it complete too, never interrupted.
    arts = observer.wait_frames(
        lambda f: (a := articles_of(f, reply2)) and a[-1]["status"] != "streaming" and a, what="reply 2 final"
    )
    assert [a["status"] for a in arts] == ["streaming", "complete"]
    assert page_body(observer.frames, reply2) == ("complete", markdown_html("".join(tokens2)))


# -- 2. SIGTERM ----------------------------------------------------------------------


def test_sigterm_lets_short_reply_finish(tmp_path, fake_llm, servers, ws_open):
    tokens = slow_tokens(4)[:10]  # 10 tokens, 0.1 s apart: ~1 s
    reply_text = "".join(tokens)
    fake_llm.enqueue(tokens, delay=0.1)
    server = servers(tmp_path, llm_env(fake_llm), graceful=8)
    alice, bob = Browser(server), Browser(server)
    alice.load()
    alice.say("hello")
    bob.load()
    observer = ws_open(server, bob.page, after=0)
    observer.wait_count(1)

    with alice.stream("@gpt a short one") as response:
        reader = SSEReader(response)
        reply_id = int(response.headers["X-Reply-Id"])
        head = [reader.next()]
        assert 'data-status="streaming"' in head[0]["data"]
        head += read_drawn(reader)  # the first token is on the page
        os.killpg(server.proc.pid, signal.SIGTERM)  # master and worker, as a platform does
        term_at = time.monotonic()
        events = []
        ended = read_events(reader, events)
    # The author's stream runs to its end during the graceful period...
    assert ended == "eof"
    assert 'data-status="complete"' in events[-1]["data"], events[-1:]
    assert author_body(head + events, reply_id) == markdown_html(reply_text)
    # The observer's socket either follows it to the end, or is closed by the
    # stopping server (the page then reconnects to the next process and
    # resyncs); it never just goes quiet.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        arts = articles_of(list(observer.frames), reply_id)
        if (arts and arts[-1]["status"] == "complete") or observer.closed.is_set():
            break
        time.sleep(0.05)
    arts = articles_of(list(observer.frames), reply_id)
    if arts and arts[-1]["status"] == "complete":
        assert page_body(observer.frames, reply_id) == ("complete", markdown_html(reply_text))
    else:
        assert observer.closed.is_set(), "the observer got neither the final article nor a close"
        assert [a["status"] for a in arts] in ([], ["streaming"]), arts
        if arts:  # whole chunks so far, drawn
            chunks = chunks_of(tokens)
            status, shown = page_body(observer.frames, reply_id)
            assert shown in [markdown_html("".join(chunks[:i])) for i in range(len(chunks) + 1)], shown
    row = message_row(server.database_url, reply_id)
    assert (row["status"], row["body"]) == ("complete", reply_text)
    assert row["completion_tokens"] == len(tokens)
    assert row["completed_at"] is not None and chunk_rows(server.database_url, reply_id) == []
    assert server.proc.poll() is None or time.monotonic() - term_at > 0.5
    # The page goes away too (nothing is in flight any more): the worker then
    # exits by itself, through its exit hook, long before the graceful timeout.
    observer.close()
    code = server.proc.wait(15)
    exited_after = time.monotonic() - term_at
    assert code == 0, server.logs()
    assert "Worker exiting" in server.logs(), server.logs()
    assert exited_after < 6, "exited {:.1f}s after SIGTERM".format(exited_after)


def test_sigterm_idle_page_socket_does_not_hold_worker(tmp_path, fake_llm, servers, ws_open):
    """An open page (its socket idle, nothing in flight) must not keep a
    stopping worker alive until the master SIGKILLs it at the graceful timeout:
    a killed worker never runs its exit hook, which settles replies in flight."""
    server = servers(tmp_path, llm_env(fake_llm), graceful=5)
    alice = Browser(server)
    alice.load()
    alice.say("hello")
    page = ws_open(server, alice.page, after=0)
    page.wait_count(1)
    os.killpg(server.proc.pid, signal.SIGTERM)
    term_at = time.monotonic()
    server.proc.wait(15)
    exited_after = time.monotonic() - term_at
    # The server ends the page's socket (the page reconnects to the next process).
    assert page.closed.wait(2), "the page socket is still open after the server exited"
    assert "Worker exiting" in server.logs(), (
        "the worker never reached its exit hook (killed by the master after "
        "{:.1f}s); log:\n{}".format(exited_after, server.logs())
    )
    assert exited_after < 4, "exited {:.1f}s after SIGTERM".format(exited_after)


@pytest.mark.parametrize("clients", ["none", "author-stream", "author-stream+page-socket"])
def test_sigterm_interrupts_long_reply(tmp_path, fake_llm, servers, ws_open, clients):
    """A reply that cannot finish within the graceful timeout (5 s) is marked
    interrupted, its committed text kept, and the process exits within ~6 s.
    ``clients``: what is connected when SIGTERM arrives -- nothing (the reply
    was asked without a stream), the asker's event stream, or that and a page socket."""
    tokens = slow_tokens(67)[:200]  # 200 tokens, 0.1 s apart: ~20 s
    fake_llm.enqueue(tokens, delay=0.1)
    server = servers(tmp_path, llm_env(fake_llm), graceful=5)
    database_url = server.database_url
    alice = Browser(server)
    alice.load()
    alice.say("hello")
    if "page-socket" in clients:
        page = ws_open(server, alice.page, after=0)
        page.wait_count(1)

    events, ended = [], None
    if clients == "none":
        result = alice.post("@gpt a long one", sse=False)
        assert result.status == 200, result.body
        reply_id = max(a["id"] for a in parse_upsert(result.body))
        chunks = wait_until(lambda: at_least(2, chunk_rows(database_url, reply_id)), 8,
                            message="two committed chunks")
        os.killpg(server.proc.pid, signal.SIGTERM)
        term_at = time.monotonic()
    else:
        with alice.stream("@gpt a long one") as response:
            reader = SSEReader(response)
            reply_id = int(response.headers["X-Reply-Id"])
            assert 'data-status="streaming"' in reader.next()["data"]
            chunks = wait_until(lambda: at_least(2, chunk_rows(database_url, reply_id)), 8,
                                message="two committed chunks")
            os.killpg(server.proc.pid, signal.SIGTERM)
            term_at = time.monotonic()
            ended = read_events(reader, events)
    committed = "".join(c["text"] for c in chunks)
    try:
        server.proc.wait(15)
    except subprocess.TimeoutExpired:
        pytest.fail("still running 15 s after SIGTERM")
    exited_after = time.monotonic() - term_at
    row = message_row(database_url, reply_id)
    assert row["status"] == "interrupted", (
        "reply left {!r} after SIGTERM (process exited after {:.1f}s); log:\n{}".format(
            row["status"], exited_after, server.logs()[-3000:])
    )
    # Its text is kept: what was committed at SIGTERM and then whatever else
    # the model had sent (whole tokens), never the whole reply.
    assert row["body"].startswith(committed), (committed[-100:], row["body"][-100:])
    prefixes = ["".join(tokens[:i]) for i in range(len(tokens))]
    assert row["body"] in prefixes, row["body"][-200:]
    assert row["completed_at"] is not None and row["stream_page"] is None
    assert chunk_rows(database_url, reply_id) == []
    assert exited_after < 6.5, "exited {:.1f}s after SIGTERM".format(exited_after)
    # The author's stream ends with the interrupted article.
    if clients != "none":
        assert events and 'data-status="interrupted"' in events[-1]["data"], (ended, events[-1:])


# -- 3. a viewer that stops reading ----------------------------------------------------


def raw_websocket(server, page, rcvbuf=1024, mss=536):
    """A page socket opened by hand on a raw TCP socket that reads only the
    handshake.  A tiny receive buffer and MSS keep what the kernels can buffer
    towards it small (Linux sizes the sender's buffer from the peer's MSS), so
    the server's writes to it soon block; ``None`` keeps the defaults."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if mss:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /ws?page={}&after=0 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n"
            "Origin: {}\r\n\r\n"
        ).format(page, server.port, key, server.url).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(1)  # byte by byte: take nothing past the handshake
        assert data, "closed during the handshake"
        head += data
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def ws_frames(data):
    """(opcode, payload) of the complete server frames in ``data`` (unmasked),
    but for the room's lists of people (test_presence.py has those)."""
    return [f for f in ws_split(data)[0] if not f[1].startswith(PRESENCE.encode())]


def ws_split(data):
    """(complete frames, bytes left over after them) of server frames in ``data``."""
    frames, i = [], 0
    while i + 2 <= len(data):
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        j = i + 2
        if length == 126:
            if j + 2 > len(data):
                break
            length, j = int.from_bytes(data[j:j + 2], "big"), j + 2
        elif length == 127:
            if j + 8 > len(data):
                break
            length, j = int.from_bytes(data[j:j + 8], "big"), j + 8
        if j + length > len(data):
            break
        frames.append((opcode, data[j:j + length]))
        i = j + length
    return frames, len(data) - i


def read_to_end(sock, timeout):
    """Everything ``sock`` still receives, and how it ended: "eof", "reset" or "open"."""
    sock.settimeout(0.5)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data, "reset"
        if not chunk:
            return data, "eof"
        data += chunk
    return data, "open"


class Poller(threading.Thread):
    """GET / again and again until stopped; records (status, seconds) per request."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server = server
        self.results = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.server.url + "/", timeout=10) as response:
                    response.read()
                    status = response.status
            except Exception as exc:
                status = repr(exc)
            self.results.append((status, time.monotonic() - started))
            self.stopping.wait(0.05)


def test_viewer_that_stops_reading_is_dropped(tmp_path, fake_llm, servers, ws_open):
    # 200 sentences of two tokens; "&" travels as "&amp;", so each append is ~1 KB.
    sentences = 200
    tokens = []
    for i in range(sentences):
        tokens += ["Line {} ".format(i + 1) + "a & b " * 40, "ends. " if i + 1 < sentences else "ends."]
    expected = chunks_of(tokens)
    assert len(expected) == sentences
    reply_text = "".join(tokens)
    fake_llm.enqueue(tokens, delay=0.005)
    server = servers(tmp_path, llm_env(fake_llm, SOCKET_QUEUE_SIZE=8))
    alice, bob = Browser(server), Browser(server)
    alice.load()
    alice.say("hello")
    bob.load()

    stuck = raw_websocket(server, "deadbeefdeadbeef")
    # Its snapshot proves it is subscribed; after that it never reads again.
    got = b""
    while not ws_frames(got):
        got += stuck.recv(1)
    assert b"hello" in ws_frames(got)[0][1]
    observer = ws_open(server, bob.page, after=0)
    observer.wait_count(1)
    poller = Poller(server)
    poller.start()

    try:
        started = time.monotonic()
        with alice.stream("@gpt a very long answer") as response:
            reader = SSEReader(response)
            reply_id = int(response.headers["X-Reply-Id"])
            events = list(reader)
        author_done = time.monotonic() - started
        assert 'data-status="complete"' in events[-1]["data"]
        assert author_body(events, reply_id) == markdown_html(reply_text)

        # The normal viewer got every append and the final article, in time.
        def final(frames):
            arts = articles_of(frames, reply_id)
            return arts and arts[-1]["status"] == "complete"

        observer.wait_frames(final, timeout=5, what="the final article")
        observer_done = time.monotonic() - started
    finally:
        poller.stopping.set()
        poller.join(15)
    frames = observer.frames[1:]
    appends = [parse_append(f) for f in frames]
    assert [a[1] for a in appends if a] == fragments_for(reply_id, expected)
    assert [a["status"] for a in articles_of(frames, reply_id)] == ["streaming", "complete"]
    assert page_body(frames, reply_id) == ("complete", markdown_html(reply_text))
    assert len(frames) == 1 + 1 + sentences + 1  # question, empty reply, appends, final
    # Liveness, not speed (the model takes ~2 s): a viewer that blocked the
    # reply would hold it until the socket timed out. Generous for a busy machine.
    assert observer_done < author_done + 5, (author_done, observer_done)
    assert author_done < 40, author_done

    # The server kept answering pages meanwhile.
    assert poller.results and all(status == 200 for status, _ in poller.results), poller.results
    slowest = max(seconds for _, seconds in poller.results)
    assert slowest < 5, slowest

    # The stuck viewer was cut: reading now drains what the kernels held, then
    # the connection ends (it would stay open, and get the final article, if
    # the server were still writing to it).
    rest, how = read_to_end(stuck, 10)
    stuck.close()
    assert how in ("eof", "reset"), "the stuck socket was never cut ({} bytes read)".format(len(got + rest))
    data = got + rest
    wire = sum(len(f.encode()) for f in observer.frames)
    assert len(data) < wire / 2, (len(data), wire)
    final_mark = 'id="message-{}" data-role="assistant" data-status="complete"'.format(reply_id)
    assert final_mark.encode() not in data
    stuck_appends = [parse_append(p.decode()) for op, p in ws_frames(data) if op == 1]
    print("stuck viewer: {} bytes, {} whole appends, ended by {}; observer {} bytes; author {:.2f}s, observer {:.2f}s,"
          " slowest GET {:.3f}s".format(len(data), len([a for a in stuck_appends if a]), how, wire, author_done,
                                        observer_done, slowest))
    assert server.proc.poll() is None
    assert "Traceback" not in server.logs(), server.logs()


def test_slow_viewer_gets_whole_frames(tmp_path, fake_llm, servers):
    """A viewer on a slow link (small buffers) whose snapshot is larger than
    what the kernels can hold must still get it whole: a frame cut short, with
    the connection left open, leaves the page waiting for bytes that never come
    (and reads the next frame as the rest of this one)."""
    server = servers(tmp_path, llm_env(fake_llm, POSTS_PER_MINUTE=100))
    alice = Browser(server)
    alice.load()
    for i in range(30):
        alice.say("Message {} ".format(i) + "x" * 3900)
    slow = raw_websocket(server, "5105105105105105")
    try:
        time.sleep(1)  # the server writes the ~120 KB snapshot while nobody reads
        data, how, frames = b"", "open", []
        slow.settimeout(0.1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not frames:
            try:
                chunk = slow.recv(4096)
            except socket.timeout:
                continue
            except ConnectionResetError:
                how = "reset"
                break
            if not chunk:
                how = "eof"
                break
            data += chunk
            frames = ws_frames(data)
            time.sleep(0.002)  # a slow link, still reading
        declared = data[1] & 0x7F
        if declared == 127:
            declared = int.from_bytes(data[2:10], "big")
        elif declared == 126:
            declared = int.from_bytes(data[2:4], "big")
        assert frames, "snapshot frame incomplete after 5 s: {} bytes of a {}-byte frame arrived; connection {}".format(
            len(data), declared, how)
        articles = parse_upsert(frames[0][1].decode("utf-8"))
        assert len(articles) == 30
        # And the next event arrives as its own frame.
        alice.say("after")
        deadline = time.monotonic() + 5
        while len(frames) < 2 and time.monotonic() < deadline:
            try:
                chunk = slow.recv(4096)
            except socket.timeout:
                continue
            data += chunk
            frames = ws_frames(data)
        assert [a["id"] for a in parse_upsert(frames[1][1].decode("utf-8"))] == [31]
    finally:
        slow.close()


# -- 4. load: 50 askers, 250 observers, one worker --------------------------------------


class RawObservers:
    """Many page sockets read by one thread into byte buffers, parsed only
    afterwards: the test process must not be the bottleneck (a reader thread
    per websocket-client socket costs more CPU than the server spends)."""

    def __init__(self, server, pages):
        self.socks = [raw_websocket(server, page, rcvbuf=None, mss=None) for page in pages]
        self.buffers = [bytearray() for _ in self.socks]
        self.closed = set()
        self.selector = selectors.DefaultSelector()
        for i, sock in enumerate(self.socks):
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, i)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.is_set():
            for key, _ in self.selector.select(0.1):
                i = key.data
                try:
                    data = key.fileobj.recv(1 << 18)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.closed.add(i)
                    self.selector.unregister(key.fileobj)
                    continue
                self.buffers[i] += data

    def frames(self, i, presence=False):
        """The text frames observer ``i`` got, all complete and unfragmented
        (with ``presence``, only the room's lists of people; else all others)."""
        frames, rest = ws_split(bytes(self.buffers[i]))
        assert rest == 0, "observer {}: {} bytes of an incomplete frame".format(i, rest)
        texts = []
        for opcode, payload in frames:
            assert opcode in (0x1, 0x9), "observer {}: frame with opcode {}".format(i, opcode)
            if opcode == 0x1 and payload.startswith(PRESENCE.encode()) == presence:
                texts.append(payload.decode("utf-8"))
        return texts

    def close(self):
        self.stopping.set()
        self.thread.join(5)
        for sock in self.socks:
            sock.close()
        self.selector.close()


def in_threads(fn, items, workers=32):
    """``fn`` over ``items`` in threads; results in order (exceptions re-raised)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def drawings(text):
    """{html: length of the shortest prefix of ``text`` drawn as that html}: every
    state a page may show of a reply streaming towards ``text``."""
    out = {}
    for n in range(len(text) + 1):
        out.setdefault(markdown_html(text[:n]), n)
    return out


def page_model(frames, watch, drawn):
    """Apply an observer's frames the way the page does; for each reply in
    ``watch`` (id -> final text; ``drawn``: id -> its ``drawings``) check that
    while it streams the page only ever shows it drawn from a prefix of its final
    text, never shorter than before.  Returns ({id: (final article html, body
    html shown)}, {id: finals seen}, {id: body html shown when the final came})."""
    shown, finals, streamed = {}, {}, {}
    for data in frames:
        append = parse_append(data)
        if append:
            message_id, fragment = append
            page = shown.get(message_id, {})
            assert page.get("status") == "streaming", ("append to a settled article", data)
            page["body"].apply(fragment)
            updated = [message_id]
        else:
            updated = []
            for article in parse_upsert(data):
                message_id = article["id"]
                before = shown.get(message_id, {})
                if article["keeps_body"]:
                    assert "body" in before, ("kept a body the page never had", article["html"])
                    body = before["body"]
                else:
                    body = Body(message_id, article["body_html"])
                if message_id in watch and article["status"] != "streaming":
                    if article["status"] == "complete":
                        finals[message_id] = finals.get(message_id, 0) + 1
                    if before.get("status") == "streaming":
                        streamed[message_id] = before["body"].html
                shown[message_id] = {"status": article["status"], "body": body, "html": article["html"],
                                     "at": before.get("at", 0)}
                updated.append(message_id)
        for message_id in updated:
            page = shown[message_id]
            if message_id in watch and page["status"] == "streaming":
                at = drawn[message_id].get(page["body"].html)
                assert at is not None, "reply {} shows a body that is no prefix of its final text drawn: {!r}".format(
                    message_id, page["body"].html[-120:])
                assert at >= page["at"], "reply {} went back from {} to {} characters".format(
                    message_id, page["at"], at)
                page["at"] = at
    return ({i: (shown[i]["html"], shown[i]["body"].html) if i in shown else None for i in watch},
            finals, streamed)


def test_load_50_askers_250_observers(tmp_path, fake_llm, servers):
    askers_n, per_asker = 50, 5
    observers_n = askers_n * per_asker
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 4096
    if soft < need:  # the server process inherits this limit
        new_soft = need if hard == resource.RLIM_INFINITY else min(hard, need)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 2 * observers_n + 200
    fake_llm._httpd.socket.listen(256)  # 50 model requests arrive at once

    replies = []
    for i in range(askers_n):  # 20 tokens each, one sentence per five
        tokens = []
        for j in range(4):
            tokens += ["Reply", " {}".format(i + 1), " part", " {}".format(j + 1), " ends. " if j < 3 else " ends."]
        replies.append("".join(tokens))
        fake_llm.enqueue(tokens, delay=0.02)
    server = servers(
        tmp_path,
        llm_env(fake_llm, MAX_CONCURRENT_REPLIES=1000, POSTS_PER_MINUTE=1000, ASKS_PER_MINUTE=1000),
    )
    host = Browser(server)
    host.load()
    host.say("welcome")

    # Every observer is its own browser (session, page) with its socket open.
    observer_pages = in_threads(lambda _: Browser(server), range(observers_n))
    in_threads(lambda b: b.load(), observer_pages)
    askers = in_threads(lambda _: Browser(server), range(askers_n))
    in_threads(lambda b: b.load(), askers)
    observers = RawObservers(server, [b.page for b in observer_pages])
    try:
        wait_until(lambda: all(ws_frames(bytes(b)) for b in observers.buffers), 20,
                   message="every observer's snapshot")  # all subscribed

        # The burst: 50 askers post at once and read their streams.
        barrier = threading.Barrier(askers_n)
        results = [None] * askers_n

        def ask(i):
            try:
                barrier.wait(30)
                started = time.monotonic()
                with askers[i].stream("@gpt question {}".format(i + 1)) as response:
                    assert response.status == 200
                    reply_id = int(response.headers["X-Reply-Id"])
                    events = list(SSEReader(response))
                results[i] = (reply_id, events, time.monotonic() - started)
            except Exception as exc:
                results[i] = exc

        burst = time.monotonic()
        threads = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(askers_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.1, burst + 60 - time.monotonic()))
        askers_done = time.monotonic() - burst
        failures = [(i, r) for i, r in enumerate(results) if not isinstance(r, tuple)]
        assert not failures, failures[:5]

        # Every asker's stream carried its reply, which completed.
        reply_ids = {}
        for i, (reply_id, events, seconds) in enumerate(results):
            first = parse_upsert(events[0]["data"])
            assert [(a["role"], a["status"]) for a in first] == [("user", "complete"), ("assistant", "streaming")]
            final = parse_upsert(events[-1]["data"])
            assert [(a["id"], a["status"]) for a in final] == [(reply_id, "complete")], events[-1]["data"][:300]
            row = message_row(server.database_url, reply_id)
            assert row["status"] == "complete"
            assert author_body(events, reply_id) == markdown_html(row["body"]), i
            reply_ids[reply_id] = (row["body"], final[0]["html"])
        assert len(reply_ids) == askers_n
        assert sorted(body for body, _ in reply_ids.values()) == sorted(replies)  # each reply once

        # Every observer ends with the same 50 final articles, whole.
        marker = b'data-role="assistant" data-status="complete"'
        wait_until(lambda: all(b.count(marker) >= askers_n for b in observers.buffers) or observers.closed, 30,
                   interval=0.1, message="every observer's final articles")
        observers_done = time.monotonic() - burst
        assert not observers.closed, "{} observers were cut under load".format(len(observers.closed))
        watch = {reply_id: body for reply_id, (body, _) in reply_ids.items()}
        drawn = {reply_id: drawings(body) for reply_id, body in watch.items()}
        full = {reply_id: markdown_html(body) for reply_id, body in watch.items()}
        expected = {reply_id: (final_html, full[reply_id]) for reply_id, (_, final_html) in reply_ids.items()}
        for n in range(observers_n):
            shows, finals, streamed = page_model(observers.frames(n)[1:], watch, drawn)
            assert shows == expected, "observer {} differs".format(n)
            assert finals == {i: 1 for i in watch}, "observer {}: final articles {}".format(n, finals)
            # Each reply's appends had drawn the whole text before its final article.
            assert streamed == full, "observer {} missed appends".format(n)
    finally:
        observers.close()

    assert query(server.database_url, "SELECT count(*) AS n FROM message WHERE status = 'streaming'")[0]["n"] == 0
    assert query(server.database_url, "SELECT count(*) AS n FROM chunk")[0]["n"] == 0
    assert query(server.database_url, "SELECT count(*) AS n FROM message WHERE role = 'assistant'")[0]["n"] == askers_n
    assert "Traceback" not in server.logs(), server.logs()[-3000:]
    slowest = max(r[2] for r in results)
    print("load: askers done {:.2f}s (slowest stream {:.2f}s), observers done {:.2f}s".format(
        askers_done, slowest, observers_done))
    assert observers_done < 30
