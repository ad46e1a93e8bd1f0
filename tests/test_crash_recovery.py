"""After a crash, replies say so in seconds: each process keeps a worker row
(workers.py), so the watchdog settles a reply as soon as the process that
claimed it is gone (a pid that no longer runs on this machine; a host that
stopped beating for HEARTBEAT_INTERVAL), and never a live process's reply,
however silent. A page open through a kill -9 and a restart shows the reply
interrupted, with its committed text, within 5 s of the restart; on
PostgreSQL, a process gone from another host is settled within
2 x HEARTBEAT_INTERVAL of the crash."""
import os
import signal
import subprocess
import time
from datetime import timedelta

import pytest

from chat.stream import watchdog
from chat.stream import workers
from conftest import BACKEND
from conftest import LiveServer
from conftest import fake_model_server
from models import INTERRUPTED
from models import STREAMING
from models import Chunk
from models import Message
from models import Worker
from models import db
from models import utcnow
from support.browser import assert_no_errors
from support.browser import expected_text
from support.live import Browser
from support.live import SSEReader
from support.live import children
from support.live import chunk_rows
from support.live import llm_env
from support.live import message_row
from support.live import query
from support.live import slow_tokens
from support.live import wait_until

# -- deciding who is gone -----------------------------------------------------------


def row(identity, seen_at, worker_id="w"):
    return Worker(id=worker_id, identity=identity, seen_at=seen_at)


def test_a_process_of_this_machine_is_gone_as_soon_as_its_pid_is(app):
    child = subprocess.Popen(["sleep", "60"])
    try:
        me = row(workers.identity(child.pid), 1000.0)
        assert not workers.gone(me, 1001.0, 15, sqlite=True)
        assert not workers.gone(me, 1001.0, 15, sqlite=False)
        # The same pid running another program (a different start time) is not it.
        assert workers.gone(row(me.identity.rsplit(" ", 1)[0] + " 12345", 1000.0), 1001.0, 15, sqlite=False)
        child.kill()
        wait_until(lambda: workers.started(child.pid) is None, 5, message="the child to be a zombie")
        assert workers.gone(me, 1001.0, 15, sqlite=False), "a zombie is gone"
        child.wait()
        assert workers.gone(me, 1001.0, 15, sqlite=False)
    finally:
        child.kill()
        child.wait()


def test_a_process_of_another_host_is_gone_once_it_stops_beating(app):
    elsewhere = row("another-boot/4026531836 4242 777", 1000.0)
    assert not workers.gone(elsewhere, 1000.0 + 14.9, 15, sqlite=False)
    assert workers.gone(elsewhere, 1000.0 + 15.1, 15, sqlite=False)
    # SQLite is served by one machine: a worker of another boot or container is gone.
    assert workers.gone(elsewhere, 1000.0 + 1, 15, sqlite=True)


def test_a_beat_is_stored_by_the_database_clock_and_leaving_removes_it(app):
    with app.app_context(), db.connection_context():
        before = workers.now()
        workers.beat("me:1")
        first = Worker.get_by_id("me:1")
        assert before <= first.seen_at <= workers.now()
        assert abs(first.seen_at - time.time()) < 5
        assert first.identity == workers.identity()
        assert not workers.gone(first, workers.now(), 15)
        workers.beat("me:1")
        assert Worker.get_by_id("me:1").seen_at >= first.seen_at and Worker.select().count() == 1
        Worker.update(seen_at=Worker.seen_at - 700).execute()
        workers.beat("me:2")
        assert workers.prune(600) == 1
        assert [w.id for w in Worker.select()] == ["me:2"]
        workers.leave("me:2")
        assert Worker.select().count() == 0


def test_the_watchdog_beats_three_times_a_heartbeat():
    assert watchdog.tick(5.0, 15.0) == 5.0
    assert watchdog.tick(5.0, 2.0) == pytest.approx(2 / 3)


def streaming_reply(claimed_by, text="Committed first. "):
    """A reply left streaming long ago (older than INTERRUPT_AFTER), with a committed chunk."""
    long_ago = utcnow() - timedelta(hours=1)
    question = Message.create(room="lobby", author="Ann", role="user", body="@gpt hi", created_at=long_ago)
    reply = Message.create(
        room="lobby", author="gpt", role="assistant", status=STREAMING, reply_to=question,
        claimed_by=claimed_by, created_at=long_ago, active_at=long_ago,
    )
    Chunk.create(message=reply, seq=1, text=text, created_at=long_ago)
    return reply


def test_sweep_settles_a_dead_processes_replies_and_never_a_live_ones(app):
    chat = app.extensions["chat"]
    child = subprocess.Popen(["sleep", "60"])
    try:
        with app.app_context(), db.connection_context():
            Worker.insert(id="dead:1", identity=workers.identity(child.pid), seen_at=workers.clock()).execute()
            Worker.insert(id="live:1", identity=workers.identity(), seen_at=workers.clock()).execute()
            doomed = streaming_reply("dead:1", "Said before the crash. ")
            silent = streaming_reply("live:1")
            orphan = streaming_reply("nobody:1")  # claimed by a process that left no row
            child.kill()
            child.wait()
            settled = watchdog.sweep(chat["generator"], chat["hub"], chat["relay"], stale_after=45, gone_after=15)
            assert sorted(settled) == sorted([doomed.id, orphan.id])
            assert Message.get_by_id(doomed.id).status == INTERRUPTED
            assert Message.get_by_id(doomed.id).body == "Said before the crash. "
            # The live process's reply is untouched, though silent for an hour.
            assert Message.get_by_id(silent.id).status == STREAMING
            assert Chunk.select().where(Chunk.message == silent.id).count() == 1
            # Once the live one stops beating (another host), it is gone too.
            Worker.update(identity="another-boot/1 1 1", seen_at=Worker.seen_at - 16).where(Worker.id == "live:1").execute()
            assert watchdog.sweep(chat["generator"], chat["hub"], chat["relay"], 45, 15) == [silent.id]
    finally:
        child.kill()
        child.wait()


def test_a_process_that_stops_cleanly_leaves_no_row(tmp_path, fake_llm):
    server = fake_model_server(tmp_path, fake_llm)
    workers_of = lambda: query(server.database_url, "SELECT id, identity FROM worker")  # noqa: E731
    try:
        rows = wait_until(workers_of, 10, message="the server's worker row")
        assert len(rows) == 1 and " {} ".format(children(server.proc.pid)[0]) in rows[0]["identity"]
    finally:
        server.stop()  # SIGTERM: the worker settles its replies and leaves
    assert workers_of() == []


# -- a crash and a restart, on a page ----------------------------------------------


def crash(server):
    """kill -9 the whole server (master and worker) and wait for it to be gone."""
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(5)
    server.stop()  # only closes its log now


def test_a_crash_shows_on_every_page_within_seconds_of_the_restart(tmp_path, fake_llm, people):
    """Default settings (INTERRUPT_AFTER 45 s): the reply a kill -9 cut shows
    as interrupted on a page kept open through the restart, and on the
    asker's, within 5 s of the new process answering."""
    fake_llm.enqueue(slow_tokens(30), delay=0.1)
    first = fake_model_server(tmp_path, fake_llm)
    port = first.port
    asker = people(first).open()
    observer = people(first).open()
    asker.send("@gpt tell a long story")
    reply_id = asker.page.evaluate(
        "document.querySelector('#messages > article[data-role=assistant]').id")
    number = int(reply_id.split("-")[1])
    wait_until(lambda: len(chunk_rows(first.database_url, number)) >= 2, 10, message="two committed chunks")
    crash(first)
    committed = "".join(c["text"] for c in chunk_rows(first.database_url, number))
    assert message_row(first.database_url, number)["status"] == "streaming"

    # A platform takes seconds to bring the process back: pages that back
    # off to a minute between tries would come back long after it.
    time.sleep(8)
    second = LiveServer(tmp_path, first.env, port=port).start()
    restarted = time.monotonic()
    try:
        for person in (observer, asker):
            person.server = second
            person.wait_for(
                "(id) => document.getElementById(id).dataset.status === 'interrupted'", arg=reply_id,
                what="the reply shown interrupted")
            assert time.monotonic() - restarted < 5, "shown {:.1f}s after the restart".format(time.monotonic() - restarted)
            assert person.page.locator("#{} .message-badge".format(reply_id)).text_content().strip() == "Interrupted"
            assert person.body_text(reply_id) == expected_text(person, committed)
        row = message_row(second.database_url, number)
        assert row["status"] == "interrupted" and row["body"] == committed
        print("kill -9 then restart: interrupted on both pages {:.2f}s after the restart".format(
            time.monotonic() - restarted))
        # The question was sent: the asker's composer does not say otherwise.
        assert asker.page.locator("#composer-error").text_content() == ""
        # The pages' sockets failed while the server was down, the asker's stream with it.
        expected = (
            "WebSocket", "htmx:ws:error", "ERR_CONNECTION_REFUSED", "ERR_INCOMPLETE_CHUNKED_ENCODING", "htmx:sse:error"
        )
        for person in (observer, asker):
            person.errors = [e for e in person.errors if not any(x in e for x in expected)]
        assert_no_errors(observer, asker)
    finally:
        second.stop()


# -- PostgreSQL: a process gone from another host ------------------------------------

postgres_only = pytest.mark.skipif(
    BACKEND != "postgres", reason="PostgreSQL only: runs in scripts/test.sh's TEST_DATABASE=postgres pass"
)
# Each server in its own pid namespace looks to the others like another host:
# only its beats tell them it is alive.
ELSEWHERE = ["unshare", "--pid", "--fork", "--mount-proc"]


def elsewhere():
    """The unshare command that runs here: as root, or in a user namespace."""
    for command in (ELSEWHERE, ["unshare", "--user", "--map-root-user"] + ELSEWHERE[1:]):
        try:
            if subprocess.run(command + ["true"], capture_output=True, timeout=10).returncode == 0:
                return command
        except (OSError, subprocess.TimeoutExpired):
            pass
    return None


@postgres_only
def test_on_postgres_a_process_gone_from_another_host_is_settled_within_two_heartbeats(tmp_path, fake_llm, ws_open):
    prefix = elsewhere()
    if prefix is None:
        pytest.fail("unshare --pid cannot run here: the test needs a process that looks like another host")
    heartbeat = 2.0
    env = llm_env(fake_llm, HEARTBEAT_INTERVAL=heartbeat, WATCHDOG_INTERVAL=1)
    started = []

    def start(prefix=()):
        server = LiveServer(tmp_path, env, backend="postgres", prefix=prefix).start()
        started.append(server)
        return server

    try:
        doomed, quiet, sweeper = start(prefix), start(prefix), start()
        fake_llm.enqueue(slow_tokens(30), delay=0.1)
        fake_llm.enqueue(slow_tokens(2), delay=0.05, first_token_delay=3 * heartbeat + 1)
        observer = Browser(sweeper)
        observer.load()
        sock = ws_open(sweeper, observer.page, after=0)
        ann, bo = Browser(doomed), Browser(quiet)
        ann.load()
        bo.load()
        with ann.stream("@gpt tell a long story") as response:
            cut = int(response.headers["X-Reply-Id"])
            wait_until(lambda: len(fake_llm.requests) == 1, 5, message="the long story asked first")
            with bo.stream("@gpt think hard first") as silent:
                thinking = int(silent.headers["X-Reply-Id"])
                recover(sweeper, quiet, doomed, cut, thinking, silent, heartbeat, sock)
    finally:
        for server in started:
            server.stop()


def recover(sweeper, quiet, doomed, cut, thinking, silent, heartbeat, sock):
    """Kill ``doomed`` mid-reply ``cut``: another process settles it in time,
    while the other host's silent reply ``thinking`` completes."""
    wait_until(lambda: len(chunk_rows(sweeper.database_url, cut)) >= 2, 10, message="two committed chunks")
    crash(doomed)
    crashed = time.monotonic()
    committed = "".join(c["text"] for c in chunk_rows(sweeper.database_url, cut))
    wait_until(lambda: message_row(sweeper.database_url, cut)["status"] != "streaming", 2 * heartbeat + 2,
               message="the cut reply to be settled")
    took = time.monotonic() - crashed
    row = message_row(sweeper.database_url, cut)
    assert row["status"] == "interrupted" and row["body"] == committed
    assert took < 2 * heartbeat, "settled {:.1f}s after the crash".format(took)
    # The other host's reply, silent for longer than that, is alive: it completes.
    events = list(SSEReader(silent))
    assert 'data-status="complete"' in events[-1]["data"]
    assert message_row(sweeper.database_url, thinking)["status"] == "complete"
    sock.wait_frames(
        lambda frames: any('id="message-{}"'.format(cut) in f and 'data-status="interrupted"' in f for f in frames),
        what="the interrupted article on the sweeper's page")
    logs = sweeper.logs() + quiet.logs()
    assert logs.count("reply {} interrupted: its process".format(cut)) == 1
    assert "reply {} interrupted".format(thinking) not in logs
    print("PostgreSQL, another host killed: settled {:.2f}s after the crash (HEARTBEAT_INTERVAL {}s)".format(
        took, heartbeat))
