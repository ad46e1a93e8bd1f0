"""Several processes, one conversation, on PostgreSQL: two app servers on two
ports sharing one database, gunicorn with two workers, and the cross-process
relay (LISTEN/NOTIFY) losing its connection or the whole database restarting
mid-reply. Every page must end exact.

These run in the PostgreSQL pass of ``scripts/test.sh`` (``TEST_DATABASE=postgres``).
"""
import time

import psycopg
import pytest

from conftest import BACKEND
from conftest import LiveServer
from conftest import postgres_server
from support.body import Body
from support.live import ARTICLE_RE
from support.live import BODY_RE
from support.live import Browser
from support.live import SSEReader
from support.live import author_body
from support.live import chunks_of
from support.live import control
from support.live import fragments_for
from support.live import message_row
from support.live import parse_append
from support.live import parse_upsert
from support.live import query
from support.live import slow_tokens
from support.live import wait_article
from support.live import wait_settled
from support.live import wait_until

pytestmark = pytest.mark.skipif(
    BACKEND != "postgres", reason="PostgreSQL only: runs in scripts/test.sh's TEST_DATABASE=postgres pass"
)


@pytest.fixture
def servers(tmp_path, fake_llm):
    """``start(workers=1)`` app servers on their own ports, all on this test's database."""
    started = []

    def start(workers=1, **env):
        settings = {
            "OPENAI_API_KEY": "test-key",
            "OPENAI_BASE_URL": fake_llm.base_url,
            "OPENAI_MODEL": "fake-model",
        }
        settings.update(env)
        server = LiveServer(tmp_path, settings, workers=workers, backend="postgres").start()
        server.llm = fake_llm
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def listeners(server):
    """The relay listeners connected to ``server``'s database (one per process)."""
    name = server.database_url.rsplit("/", 1)[1]
    return query(
        postgres_server().url(),
        "SELECT pid FROM pg_stat_activity WHERE datname = ? AND application_name = 'chat-listener'",
        (name,),
    )


def two_processes(servers, ws_open, **env):
    """Servers A and B on one database, both listening; Alice on A has said
    hello; an observer's page on B is subscribed. (a, b, alice, observer)."""
    a, b = servers(**env), servers(**env)
    wait_until(lambda: len(listeners(a)) == 2, 10, message="both processes listening")
    alice = Browser(a)
    alice.load()
    alice.say("hi all")
    return a, b, alice, observe(ws_open, b, alice, Browser(b))


def observe(ws_open, server, author, watcher):
    """A subscribed socket for ``watcher``'s page on ``server`` (``author`` has
    posted first, so the snapshot frame proves the subscription)."""
    watcher.load()
    sock = ws_open(server, watcher.page, after=0)
    sock.wait_count(1)
    return sock


def replay(frames, reply_id):
    """What a page shows of ``reply_id`` after applying ``frames`` in order, as
    (status, body html): articles replace the message (a settle keeps the
    body), appends apply their swaps to the body."""
    status, body = None, None
    for data in frames:
        append = parse_append(data)
        if append:
            if append[0] == reply_id and body is not None:
                body.apply(data)
            continue
        for article in parse_upsert(data):
            if article["id"] == reply_id:
                status = article["status"]
                if not article["keeps_body"] or body is None:
                    body = Body(reply_id, article["body_html"])
    return status, body.html if body is not None else None


def assert_sentences(appends, reply_id, tokens):
    """Sentence-level growth: one append per committed chunk, in order. The last
    may be missing on another process: when the reply settles before that
    process re-reads the chunk, the final article carries it instead."""
    expected = fragments_for(reply_id, chunks_of(tokens))
    assert appends == expected[: len(appends)] and len(appends) >= len(expected) - 1, appends


def final_body(sock, reply_id, status="complete", timeout=15):
    """The reply's body as the page shows it once the reply has ``status``."""
    wait_article(sock, reply_id, status, timeout)
    shown_status, body = replay(sock.frames, reply_id)
    assert shown_status == status
    return body


def stream_all(browser, text):
    """Post over SSE on ``browser``'s server and read the whole stream."""
    with browser.stream(text) as response:
        reply_id = int(response.headers["X-Reply-Id"])
        events = list(SSEReader(response))
    return reply_id, events


def fresh_body(server, reply_id):
    """The reply's body as a fresh page load on ``server`` renders it."""
    page = Browser(server).load()
    for match in ARTICLE_RE.finditer(page):
        if int(match.group(1)) == reply_id:
            return BODY_RE.search(match.group(3)).group(4)
    raise AssertionError("reply {} is not on the page".format(reply_id))


# -- two processes, one database ---------------------------------------------------


def test_observer_on_another_process_sees_every_sentence(servers, ws_open):
    a, b, alice, observer = two_processes(servers, ws_open)

    tokens = slow_tokens(5)
    a.llm.enqueue(tokens, delay=0.05)
    reply_id, events = stream_all(alice, "@gpt five sentences please")
    body = final_body(observer, reply_id)
    assert author_body(events, reply_id) == body, "the asker's page and the observer's agree"
    frames = observer.frames[1:]
    # The question and the empty reply, one append per committed sentence, the final.
    appends = [f for f in frames if parse_append(f)]
    assert_sentences(appends, reply_id, tokens)
    row = message_row(b.database_url, reply_id)
    assert row["status"] == "complete" and row["body"] == "".join(tokens)
    assert fresh_body(b, reply_id) == body == fresh_body(a, reply_id)


def test_stop_posted_to_the_other_process_stops_the_reply(servers, ws_open):
    a, b, alice, observer = two_processes(servers, ws_open)
    a.llm.enqueue(slow_tokens(20), delay=0.1)  # about 6 s if nobody stops it

    with alice.stream("@gpt a long answer") as response:
        reply_id = int(response.headers["X-Reply-Id"])
        reader = SSEReader(response)
        tokens = 0
        while tokens < 5:
            event = reader.next()
            assert event is not None
            tokens += event["event"] is None and not event["data"].startswith("<hx-upsert")
        # Alice's session, but the request goes to the process that does not run it.
        alice.server = b
        stopped_at = time.monotonic()
        assert control(alice, reply_id, "stop").status == 204
        alice.server = a
        rest = list(reader)
    assert time.monotonic() - stopped_at < 2, "the running process stopped it at once"
    final = [a for e in rest if e["event"] is None and e["data"].startswith("<hx-upsert") for a in parse_upsert(e["data"])]
    assert [(f["id"], f["status"]) for f in final] == [(reply_id, "stopped")]

    row = wait_settled(a.database_url, reply_id, 5)
    assert row["status"] == "stopped" and row["stop_requested"] is True
    assert 0 < len(row["body"]) < len("".join(slow_tokens(20)))
    assert query(a.database_url, "SELECT count(*) AS n FROM chunk")[0]["n"] == 0
    assert final_body(observer, reply_id, "stopped") == fresh_body(b, reply_id) == fresh_body(a, reply_id)


def test_stop_of_a_reply_whose_process_died_settles_it(servers, ws_open):
    a = servers(REMOTE_STOP_WAIT="0.5")
    alice = Browser(a)
    alice.load()
    # A reply another process was generating when it died: streaming, a chunk, no process.
    url = a.database_url
    alice.say("hi")
    with psycopg.connect(url, autocommit=True) as conn:
        key = conn.execute("SELECT session_key FROM message ORDER BY id DESC LIMIT 1").fetchone()[0]
        reply_id = conn.execute(
            "INSERT INTO message (room, author, role, session_key, status, body, created_at, active_at,"
            " claimed_by, stop_requested) VALUES ('main', 'gpt', 'assistant', %s, 'streaming', '', now(), now(),"
            " 'gone:1:abc', false) RETURNING id",
            (key,),
        ).fetchone()[0]
        conn.execute("INSERT INTO chunk (message_id, seq, text, created_at) VALUES (%s, 1, 'Kept. ', now())", (reply_id,))
    assert control(alice, reply_id, "stop").status == 204
    row = message_row(url, reply_id)
    assert row["status"] == "stopped" and row["body"] == "Kept. "


def test_two_gunicorn_workers_serve_one_conversation(servers, ws_open):
    server = servers(workers=2)
    wait_until(lambda: len(listeners(server)) == 2, 15, message="a listener per worker")
    alice = Browser(server)
    alice.load()
    alice.say("hi all")
    observers = [observe(ws_open, server, alice, Browser(server)) for _ in range(6)]
    tokens = slow_tokens(4)
    server.llm.enqueue(tokens, delay=0.03)
    reply_id, events = stream_all(alice, "@gpt hello workers")
    bodies = {final_body(sock, reply_id) for sock in observers}
    assert bodies == {fresh_body(server, reply_id)} == {author_body(events, reply_id)}
    for sock in observers:
        appends = [f for f in sock.frames if parse_append(f)]
        assert_sentences(appends, reply_id, tokens)
    assert message_row(server.database_url, reply_id)["body"] == "".join(tokens)


# -- the relay's connection and the database itself fail mid-reply -----------------


def test_listener_connection_killed_mid_reply(servers, ws_open):
    a, b, alice, observer = two_processes(servers, ws_open)
    tokens = slow_tokens(8)
    a.llm.enqueue(tokens, delay=0.1)

    with alice.stream("@gpt eight sentences") as response:
        reply_id = int(response.headers["X-Reply-Id"])
        observer.wait_frames(lambda f: sum(1 for x in f if parse_append(x)) >= 2, 10, "two appends")
        killed = postgres_server().terminate(a.database_url, application_name="chat-listener")
        assert killed == 2
        events = list(SSEReader(response))
    body = final_body(observer, reply_id)
    assert message_row(a.database_url, reply_id)["body"] == "".join(tokens)
    assert fresh_body(b, reply_id) == body
    wait_until(lambda: len(listeners(a)) == 2, 10, message="both listeners back")
    assert events[-1]["data"].startswith("<hx-upsert")


def test_database_restart_mid_reply(servers, ws_open):
    a, b, alice, observer = two_processes(servers, ws_open)
    tokens = slow_tokens(10)
    a.llm.enqueue(tokens, delay=0.1)

    with alice.stream("@gpt ten sentences") as response:
        reply_id = int(response.headers["X-Reply-Id"])
        observer.wait_frames(lambda f: sum(1 for x in f if parse_append(x)) >= 2, 10, "two appends")
        postgres_server().restart()
        events = list(SSEReader(response))
    final = [x for e in events if e["data"].startswith("<hx-upsert") for x in parse_upsert(e["data"])]
    assert [(f["id"], f["status"]) for f in final][-1] == (reply_id, "complete")
    body = final_body(observer, reply_id, timeout=30)
    row = wait_settled(a.database_url, reply_id, 10)
    assert row["status"] == "complete" and row["body"] == "".join(tokens)
    assert author_body(events, reply_id) == body == fresh_body(b, reply_id)
    wait_until(lambda: len(listeners(a)) == 2, 15, message="both listeners back")


def test_no_process_interrupts_a_live_reply_of_another(servers, ws_open):
    """Both processes sweep for dead replies every half second and call one
    dead after 3 s without activity; A's model is silent for 5 s before its
    first token. A's heartbeat (every second) keeps B's watchdog off it."""
    fast = dict(WATCHDOG_INTERVAL="0.5", INTERRUPT_AFTER="3", HEARTBEAT_INTERVAL="1")
    a, b, alice, observer = two_processes(servers, ws_open, **fast)
    tokens = slow_tokens(2)
    a.llm.enqueue(tokens, delay=0.05, first_token_delay=5)
    reply_id, events = stream_all(alice, "@gpt think first")
    row = wait_settled(a.database_url, reply_id, 5)
    assert row["status"] == "complete" and row["body"] == "".join(tokens)
    assert final_body(observer, reply_id) == fresh_body(b, reply_id)
    statuses = [x["status"] for f in observer.frames if f.startswith("<hx-upsert")
                for x in parse_upsert(f) if x["id"] == reply_id]
    assert "interrupted" not in statuses
    assert "interrupted" not in a.logs() + b.logs()


def test_rooms_stay_apart_across_processes(servers, ws_open):
    """A message posted on process A in room alpha reaches alpha's pages on
    process B through the relay, and never a page of another room there."""
    a, b = servers(), servers()
    wait_until(lambda: len(listeners(a)) == 2, 10, message="both processes listening")
    ann, bo = Browser(a), Browser(a)
    ann.load("/r/alpha")
    bo.load("/r/beta")
    ann.say("alpha opens")
    bo.say("beta opens")
    on_b = {}
    for room, first in [("alpha", "alpha opens"), ("beta", "beta opens")]:
        on_b[room] = ws_open(b, "b0b0" + str(len(on_b)), after=0, room=room)
        on_b[room].wait_frames(lambda frames, first=first: any(first in f for f in frames), what=first)
    said = ann.say("only alpha hears this")
    on_b["alpha"].wait_frames(
        lambda frames: any('id="message-{}"'.format(said) in f for f in frames), what="alpha's message on B"
    )
    bo_said = bo.say("only beta hears this")
    on_b["beta"].wait_frames(
        lambda frames: any('id="message-{}"'.format(bo_said) in f for f in frames), what="beta's message on B"
    )
    assert not any("beta" in f for f in on_b["alpha"].frames)
    assert not any("alpha" in f for f in on_b["beta"].frames)
