"""Observer sockets: one per open page, fed by the hub through one writer.

On every (re)connect the page says what it has (the last message id it shows,
the replies it shows as streaming, the replies it follows after losing its own
stream); the server answers with one snapshot that makes the page converge,
then forwards live events. Per socket it remembers how many chunks of each reply
the page has, so appends are never applied twice or out of order: a gap is
healed by re-sending the whole article. A finished reply whose page has every
chunk only gets its article's new status around the body it already shows.

An open socket costs one greenlet, the request's own, which is the socket's
only writer. Its incoming frames are read by a callback of the event loop when
the socket is readable (simple-websocket starts no reader of its own:
``NoReaderThread``); whatever they ask for, pongs and the closing handshake
included, is queued to that writer.
"""
import logging
import re
import socket

import gevent
from flask import current_app
from gevent.queue import Empty
from simple_websocket import ConnectionClosed
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection
from wsproto.events import Ping

from chat.fanout.frames import header_size
from chat.fanout.frames import shared_frame
from chat.fanout.frames import text_frame
from chat.fanout.hub import CLOSING
from chat.fanout.hub import FINAL
from chat.fanout.hub import PING
from chat.fanout.hub import RESYNC
from chat.fanout.reading import FrameReader
from chat.fanout.reading import Pong
from chat.render.rendering import render_message
from chat.render.rendering import upsert
from models import Message
from models import db

log = logging.getLogger(__name__)

SNAPSHOT_LIMIT = 100
# Most queued events one write sends together.
BATCH = 64
# An id as pages send it: ASCII digits only (str.isdigit() also takes "²",
# which int() refuses).
_ID = re.compile(r"[0-9]{1,18}")


def parse_ids(value, limit=200):
    """Comma-separated positive integers from a query parameter (junk ignored)."""
    ids = []
    for part in (value or "").split(",")[:limit]:
        part = part.strip()
        if _ID.fullmatch(part):
            ids.append(int(part))
    return ids
class PageSocket(FrameReader):
    """The server side of one page's socket; ``ws`` needs send/receive/close."""

    # Kept for as long as the page stays open: no per-instance dict.
    __slots__ = (
        "ws", "ping_interval", "hub", "room", "page", "after", "streaming", "followed", "delivered", "sent",
        "sub", "presence", "who", "_ended", "_last", "_out", "_incoming", "_incoming_size",
    )

    def __init__(
        self, ws, hub, room, page, after=0, streaming=(), follow=(), ping_interval=None, presence=None, who=None
    ):
        self.ws = ws
        self.ping_interval = ping_interval
        self.hub = hub
        self.room = room
        self.page = page
        self.after = after
        # Usually empty: frozenset() is one shared object.
        self.streaming = frozenset(streaming)
        self.followed = frozenset(follow)
        self.delivered = {}  # message id -> chunks the page has (FINAL when settled)
        self.sent = 0  # bytes of messages, for tests and the benchmark
        self._out = []  # frames handled but not yet written
        self.sub = None
        # Who this page is, (session key, name), for the room's list of people.
        self.presence = presence
        self.who = who
        self._ended = False  # the page went, or must go: the writer stops
        self._last = None  # the Close frame the writer sends before it stops

    # -- what gets sent ----------------------------------------------------

    def _write(self, event):
        """Send one whole control frame (a ping, a pong, a close), after the
        page's frames queued before it. simple-websocket's own send makes a
        single ``sock.send``, which under gevent may write only part of a large
        frame to a slow reader; encoding here and using ``sendall`` cannot."""
        connection = getattr(self.ws, "ws", None)
        if connection is None:  # a stand-in socket in tests
            if isinstance(event, CloseConnection):
                self.ws.close(event.code, event.reason)
            return
        self._flush()
        # The answer to the page's Close is the one frame sent after it.
        answering = isinstance(event, CloseConnection) and connection.state == ConnectionState.REMOTE_CLOSING
        if not answering and (not self.ws.connected or connection.state != ConnectionState.OPEN):
            raise ConnectionClosed(self.ws.close_reason, self.ws.close_message)
        self.ws.sock.sendall(connection.send(event))

    def _send(self, html, shared=False):
        """Queue one message for the page (``shared``: a hub event's, the same
        for every socket); ``_flush`` writes what is queued."""
        if getattr(self.ws, "ws", None) is None:  # a stand-in socket in tests
            data = str(html)
            self.ws.send(data)
            self.sent += len(data.encode("utf-8"))
            return
        frame = shared_frame(html) if shared else text_frame(html)
        self._out.append(frame)
        self.sent += len(frame) - header_size(len(frame))

    def _flush(self):
        """Write every queued message in one go (one system call for a burst)."""
        if not self._out:
            return
        out, self._out = self._out, []
        connection = self.ws.ws
        if not self.ws.connected or connection.state != ConnectionState.OPEN:
            if self._ended:
                return  # the page is going: what it would not read is dropped
            raise ConnectionClosed(self.ws.close_reason, self.ws.close_message)
        self.ws.sock.sendall(out[0] if len(out) == 1 else b"".join(out))

    def _attached(self, message_id, page):
        """True when this page gets ``message_id`` through its own stream."""
        return page is not None and page == self.page and message_id not in self.followed

    def _article(self, message):
        """Render a message as the page must show it now; remember its seq."""
        text, seq = message.committed()
        self.delivered[message.id] = FINAL if not message.is_streaming else seq
        return render_message(message, text)

    def snapshot(self):
        """One upsert with every message the page lacks or may show stale, and
        who is in the room now."""
        articles = _aside(self._stale_articles)
        if articles:
            self._send(upsert(*articles))
        if self.presence is not None:
            self._send(_aside(lambda: self.presence.shown(self.room)))

    def _stale_articles(self):
        with db.connection_context():
            query = Message.select().where(Message.room == self.room)
            newer = list(
                query.where(Message.id > self.after).order_by(Message.id.desc()).limit(SNAPSHOT_LIMIT)
            )
            stale_ids = (self.streaming | self.followed) - {m.id for m in newer}
            stale = list(query.where(Message.id.in_(list(stale_ids)))) if stale_ids else []
            articles = [
                self._article(m)
                for m in sorted(newer + stale, key=lambda m: m.id)
                if not (m.is_streaming and self._attached(m.id, m.stream_page))
            ]
        return articles

    def catch_up(self):
        """Send whatever changed while events may have been lost: every message
        newer than the newest the page has, and every reply it still shows as
        streaming, as stored now."""
        finished = {i for i, seq in self.delivered.items() if seq == FINAL}
        self.streaming = (self.streaming - finished) | (set(self.delivered) - finished)
        self.after = max([self.after, *self.delivered])
        self.snapshot()

    def resync(self, message_id):
        """Re-send one whole article (after a gap, or when the page starts following)."""
        html = _aside(lambda: self._whole_article(message_id))
        if html is not None:
            self._send(html)

    def _whole_article(self, message_id):
        with db.connection_context():
            # Only this socket's room: a page cannot pull another room's messages.
            message = Message.get_or_none((Message.id == message_id) & (Message.room == self.room))
            return upsert(self._article(message)) if message is not None else None

    def handle(self, event):
        """Apply one hub event (or a ("follow", id) request from the page)."""
        if event is CLOSING:
            raise _Closing()
        if event is RESYNC:
            self.catch_up()
            return
        if event is PING:  # pings keep idle sockets open through proxies
            self._write(Ping())
            return
        if isinstance(event, Pong):
            self._write(event.event)
            return
        if isinstance(event, tuple):  # the page lost its own stream of this reply
            self.followed = self.followed | {event[1]}
            self.resync(event[1])
            return
        if event.kind in ("presence", "room"):  # who is in the room, or its assistant, changed
            self._send(event.html, shared=True)
            return
        if event.kind == "detach":
            if event.page == self.page:
                self.followed = self.followed | {event.message_id}
                self.resync(event.message_id)
            return
        if self._attached(event.message_id, event.page):
            return
        have = self.delivered.get(event.message_id)
        if event.kind == "article":
            if have is not None and event.seq < have and have != FINAL:
                return  # older than what the page already shows
            if have == FINAL and event.seq == FINAL:
                return  # settled already (the snapshot raced this event)
            self.delivered[event.message_id] = event.seq
            self._send(event.html, shared=True)
        elif event.kind == "settle":
            if have != event.seq:
                # Its body is not the final one (chunks missed, or a retried
                # reply this page still shows settled): send it all.
                self.resync(event.message_id)
                return
            self.delivered[event.message_id] = FINAL
            self._send(event.html, shared=True)
        elif event.kind == "append":
            if have is not None and event.seq <= have:
                return
            if have is None or event.seq != have + 1:
                self.resync(event.message_id)
                return
            self.delivered[event.message_id] = event.seq
            self._send(event.html, shared=True)

    # -- the writer, and what reads the page's frames ----------------------------

    def write_loop(self):
        """The only code that sends on this socket, pings included (runs
        inside the request's app context)."""
        try:
            self.snapshot()
            self._flush()
            while True:
                event = self.sub.queue.get()
                if self._ended:
                    break
                self.handle(event)
                # Whatever else is queued by now goes out with it.
                for _ in range(BATCH - 1):
                    try:
                        event = self.sub.queue.get_nowait()
                    except Empty:
                        break
                    if self._ended:
                        break
                    self.handle(event)
                self._flush()
                if self._ended:
                    break
            if self._last is not None:  # the answer to the page's Close, or ours
                self._write(self._last)
            self.ws.connected = False
        except _Closing:
            # The server is restarting: 1012 makes htmx reconnect (to the next process).
            try:
                self._write(CloseConnection(1012, "server restarting"))  # after what is queued
                self.ws.connected = False
            except (ConnectionClosed, OSError):
                pass
        except (ConnectionClosed, OSError):
            pass
        except Exception:
            log.exception("socket writer for page %s failed", self.page)

    def _cut(self):
        """Drop a viewer that stopped reading: its page reconnects and resyncs."""
        sock = getattr(self.ws, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def serve(self):
        """Subscribe, read the page's frames as they come, and be the writer
        until the page goes."""
        self.sub = self.hub.subscribe(self.room, on_overflow=self._cut)
        self.hub.keep_alive(self.ping_interval)
        if self.presence is not None and self.who is not None:
            self.presence.join(self.room, *self.who)
        stop_reading = self._start_reading()
        try:
            self.write_loop()
        finally:
            stop_reading()
            self.hub.unsubscribe(self.sub)
            if self.presence is not None and self.who is not None:
                self.presence.leave(self.room, self.who[0])
            # However the writer ended, end the connection too: the page
            # reconnects and resyncs instead of looking live while receiving nothing.
            self._cut()


def _aside(work):
    """``work()`` in a greenlet of its own, in this app's context. peewee keeps
    each greenlet's connection state (about 1 KB) for as long as the greenlet
    lives: a page socket's writer lives as long as the page, and reads the
    database seldom."""
    app = current_app._get_current_object()

    def run():
        with app.app_context():
            return work()

    return gevent.spawn(run).get()


class _Closing(Exception):
    """The hub asked every socket to close (the process is shutting down)."""
