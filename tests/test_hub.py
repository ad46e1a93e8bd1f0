"""The hub's fan-out and each socket's convergence rules, with a recording socket."""
import gevent
import pytest

from chat.fanout.hub import FINAL
from chat.fanout.hub import Event
from chat.fanout.hub import Hub
from chat.fanout.sockets import PageSocket
from chat.fanout.sockets import parse_ids
from chat.render.rendering import chunk_fragment
from models import Chunk
from models import Message


class RecordingSocket:
    """Stands in for a websocket: records what the server sends."""

    def __init__(self):
        self.sent = []

    def send(self, data):
        self.sent.append(data)

    def receive(self, timeout=None):
        gevent.sleep(timeout or 0)
        return None

    def close(self, *args):
        pass


def test_publish_reaches_every_subscriber_of_the_room_only():
    hub = Hub()
    a = hub.subscribe("lobby")
    b = hub.subscribe("lobby")
    other = hub.subscribe("elsewhere")
    event = Event("article", "lobby", 1, html="<x>")
    hub.publish(event)
    assert a.queue.get_nowait() is event
    assert b.queue.get_nowait() is event, "one rendered event shared by all"
    assert other.queue.empty()
    hub.unsubscribe(a)
    assert hub.count("lobby") == 1


def test_a_full_queue_drops_only_that_subscriber():
    hub = Hub(queue_size=2)
    dropped = []
    slow = hub.subscribe("lobby", on_overflow=lambda: dropped.append("slow"))
    fast = hub.subscribe("lobby")
    for i in range(5):
        hub.publish(Event("append", "lobby", 1, seq=i + 1))
        fast.queue.get_nowait()  # the fast reader keeps up
    assert dropped == ["slow"], "overflow is reported once"
    assert slow.dropped
    assert slow.queue.qsize() == 2
    assert fast.queue.empty() and not fast.dropped


def test_parse_ids_ignores_junk():
    assert parse_ids("1,2,x,,-3, 4") == [1, 2, 4]
    assert parse_ids(None) == []


@pytest.fixture
def room(app):
    with app.app_context():
        yield app


def make_reply(chunks=(), page=None):
    question = Message.create(room="lobby", author="Ann", role="user", body="@gpt hi")
    reply = Message.create(room="lobby", author="gpt", role="assistant", status="streaming", stream_page=page)
    for seq, text in enumerate(chunks, 1):
        Chunk.create(message=reply.id, seq=seq, text=text)
    return question, reply


def test_snapshot_sends_newer_messages_and_current_reply_text(room):
    old = Message.create(room="lobby", author="Old", role="user", body="before")
    question, reply = make_reply(["One. ", "Two. "])
    ws = RecordingSocket()
    sock = PageSocket(ws, Hub(), "lobby", "pageB", after=old.id)
    sock.snapshot()
    assert len(ws.sent) == 1
    snap = ws.sent[0]
    assert snap.startswith('<hx-upsert hx-target="#messages" sort>')
    assert 'id="message-{}"'.format(question.id) in snap
    assert "<p>One. Two.</p>" in snap and 'data-status="streaming"' in snap
    assert 'id="message-{}"'.format(old.id) not in snap
    assert sock.delivered[reply.id] == 2


def test_snapshot_leaves_the_authors_own_stream_alone(room):
    question, reply = make_reply(["One. "], page="pageA")
    ws = RecordingSocket()
    PageSocket(ws, Hub(), "lobby", "pageA", after=question.id, streaming=[reply.id]).snapshot()
    assert ws.sent == [], "the author's page already has more than what is committed"
    ws = RecordingSocket()
    PageSocket(ws, Hub(), "lobby", "pageA", after=question.id, follow=[reply.id]).snapshot()
    assert "<p>One.</p>" in ws.sent[0], "once it follows, it gets the committed text"


def test_appends_are_sent_once_and_in_order_and_gaps_resync(room):
    _, reply = make_reply(["One. ", "Two. ", "Three. "])
    ws = RecordingSocket()
    sock = PageSocket(ws, Hub(), "lobby", "pageB")
    sock.delivered[reply.id] = 1

    def append(seq, before, text):
        return Event("append", "lobby", reply.id, seq, chunk_fragment(reply.id, before, text))

    sock.handle(append(1, "", "One. "))
    assert ws.sent == [], "already delivered"
    sock.handle(append(2, "One. ", "Two. "))
    assert ws.sent == [chunk_fragment(reply.id, "One. ", "Two. ")]
    sock.handle(append(2, "One. ", "Two. "))
    assert len(ws.sent) == 1, "a duplicate is skipped"
    sock.handle(append(4, "One. Two. Three. ", "Four. "))
    assert len(ws.sent) == 2 and "<p>One. Two. Three.</p>" in ws.sent[1], "a gap resyncs the article"
    assert sock.delivered[reply.id] == 3


def test_stale_articles_are_skipped_and_final_ones_always_sent(room):
    _, reply = make_reply(["One. "])
    ws = RecordingSocket()
    sock = PageSocket(ws, Hub(), "lobby", "pageB")
    sock.delivered[reply.id] = 1
    sock.handle(Event("article", "lobby", reply.id, 0, "<empty>"))
    assert ws.sent == [], "an older render would erase committed text"
    sock.handle(Event("article", "lobby", reply.id, FINAL, "<final>"))
    assert ws.sent == ["<final>"]
    sock.handle(Event("append", "lobby", reply.id, 2, "<late>"))
    assert ws.sent == ["<final>"], "nothing appends to a settled message"


def test_settle_keeps_the_body_of_pages_that_have_every_chunk(room):
    """A finished reply's pages get only its new status around the body they
    show; a page that misses chunks gets the whole article instead."""
    _, reply = make_reply(["One. ", "Two. "])
    settled = Event("settle", "lobby", reply.id, 2, "<status flip>")
    ws = RecordingSocket()
    sock = PageSocket(ws, Hub(), "lobby", "pageB")
    sock.delivered[reply.id] = 2
    sock.handle(settled)
    assert ws.sent == ["<status flip>"] and sock.delivered[reply.id] == FINAL
    sock.handle(settled)
    assert len(ws.sent) == 2 and "<p>One. Two.</p>" in ws.sent[1], (
        "a settle the page cannot match (a retried reply it shows settled) re-sends the article"
    )
    behind = RecordingSocket()
    sock = PageSocket(behind, Hub(), "lobby", "pageC")
    sock.delivered[reply.id] = 1
    sock.handle(settled)
    assert len(behind.sent) == 1 and "<p>One. Two.</p>" in behind.sent[0], "a page behind gets the article"


def test_the_author_page_skips_its_reply_until_it_detaches(room):
    _, reply = make_reply(["One. ", "Two. "], page="pageA")
    ws = RecordingSocket()
    sock = PageSocket(ws, Hub(), "lobby", "pageA")
    sock.handle(Event("article", "lobby", reply.id, 0, "<new>", page="pageA"))
    sock.handle(Event("append", "lobby", reply.id, 1, "<one>", page="pageA"))
    assert ws.sent == []
    sock.handle(Event("detach", "lobby", reply.id, page="pageB"))
    assert ws.sent == [], "another page's detach is not ours"
    sock.handle(Event("detach", "lobby", reply.id, page="pageA"))
    assert len(ws.sent) == 1 and "<p>One. Two.</p>" in ws.sent[0]
    sock.handle(Event("append", "lobby", reply.id, 3, "<three>", page="pageA"))
    assert ws.sent[-1] == "<three>", "after detaching, the page follows like an observer"


def test_follow_request_from_the_page_resyncs(room):
    _, reply = make_reply(["One. "], page="pageA")
    ws = RecordingSocket()
    sock = PageSocket(ws, Hub(), "lobby", "pageA")
    sock.handle(("follow", reply.id))
    assert "<p>One.</p>" in ws.sent[0]
    assert reply.id in sock.followed


def test_serve_runs_snapshot_then_live_events_and_unsubscribes(room):
    hub = Hub()
    question, reply = make_reply([])
    ws = RecordingSocket()
    sock = PageSocket(ws, hub, "lobby", "pageB", after=reply.id)
    def serve_in_app():  # as flask-sock does: inside the request's app context
        with room.app_context():
            sock.serve()

    server = gevent.spawn(serve_in_app)
    gevent.sleep(0.01)
    assert hub.count("lobby") == 1
    hub.publish(Event("append", "lobby", reply.id, 1, "<one>"))
    gevent.sleep(0.01)
    # The page never had this reply: the writer resyncs instead of appending blindly.
    assert len(ws.sent) == 1 and 'id="message-{}"'.format(reply.id) in ws.sent[0]
    server.kill()
    assert hub.count("lobby") == 0


def test_a_writer_that_breaks_cuts_the_connection(room):
    class RawSocket:
        def __init__(self):
            self.shut = False

        def shutdown(self, how):
            self.shut = True

    class BrokenSocket(RecordingSocket):
        def __init__(self):
            super().__init__()
            self.sock = RawSocket()

        def send(self, data):
            raise ValueError("unexpected")

    make_reply(["One. "])
    ws = BrokenSocket()
    sock = PageSocket(ws, Hub(), "lobby", "pageB", after=0)

    def serve_in_app():
        with room.app_context():
            sock.serve()

    server = gevent.spawn(serve_in_app)
    gevent.sleep(0.05)
    assert ws.sock.shut, "the page must see the socket drop and reconnect"
    server.kill()
