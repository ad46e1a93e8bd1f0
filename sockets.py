"""Observer sockets: one per open page, fed by the hub through one writer.

On every (re)connect the page says what it has (the last message id it shows,
the replies it shows as streaming, the replies it follows after losing its own
stream); the server answers with one snapshot that makes the page converge,
then forwards live events. Per socket it remembers how many chunks of each reply
the page has, so appends are never applied twice or out of order: a gap is
healed by re-sending the whole article.
"""
import json
import logging
import socket

import gevent
from flask import current_app
from flask import request
from gevent.queue import Empty
from simple_websocket import ConnectionClosed
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection
from wsproto.events import Ping
from wsproto.events import TextMessage

from hub import CLOSING
from hub import FINAL
from models import Message
from models import db
from rendering import render_message
from rendering import upsert

log = logging.getLogger(__name__)

SNAPSHOT_LIMIT = 100


def decline_compression():
    """Before the socket route: forget the page's ``permessage-deflate`` offer.

    Browsers always offer it and simple-websocket accepts it, and then every
    socket keeps a zlib compressor of its own for as long as it is open
    (about 100 KB resident once a message went through it), several times
    what the rest of an idle socket costs; each fragment would also be
    compressed once per socket instead of rendered once for all. Frames go out
    uncompressed instead."""
    if request.endpoint == "socket":
        request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)


def parse_ids(value, limit=200):
    """Comma-separated positive integers from a query parameter (junk ignored)."""
    ids = []
    for part in (value or "").split(",")[:limit]:
        if part.strip().isdigit():
            ids.append(int(part))
    return ids


class PageSocket:
    """The server side of one page's socket; ``ws`` needs send/receive/close."""

    def __init__(self, ws, hub, room, page, after=0, streaming=(), follow=(), ping_interval=None):
        self.ws = ws
        self.ping_interval = ping_interval
        self.hub = hub
        self.room = room
        self.page = page
        self.after = after
        self.streaming = set(streaming)
        self.followed = set(follow)
        self.delivered = {}  # message id -> chunks the page has (FINAL when settled)
        self.sent = 0  # bytes, for tests and the benchmark
        self.sub = None

    # -- what gets sent ----------------------------------------------------

    def _write(self, event):
        """Send one whole frame. simple-websocket's own send makes a single
        ``sock.send``, which under gevent may write only part of a large frame
        to a slow reader; encoding here and using ``sendall`` cannot."""
        connection = getattr(self.ws, "ws", None)
        if connection is None:  # a stand-in socket in tests
            if isinstance(event, TextMessage):
                self.ws.send(event.data)
            elif isinstance(event, CloseConnection):
                self.ws.close(event.code, event.reason)
            return
        if not self.ws.connected or connection.state != ConnectionState.OPEN:
            raise ConnectionClosed(self.ws.close_reason, self.ws.close_message)
        self.ws.sock.sendall(connection.send(event))

    def _send(self, html):
        data = str(html)
        self._write(TextMessage(data=data))
        self.sent += len(data.encode("utf-8"))

    def _attached(self, message_id, page):
        """True when this page gets ``message_id`` through its own stream."""
        return page is not None and page == self.page and message_id not in self.followed

    def _article(self, message):
        """Render a message as the page must show it now; remember its seq."""
        text, seq = message.committed()
        self.delivered[message.id] = FINAL if not message.is_streaming else seq
        return render_message(message, text)

    def snapshot(self):
        """One upsert with every message the page lacks or may show stale."""
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
        if articles:
            self._send(upsert(*articles))

    def resync(self, message_id):
        """Re-send one whole article (after a gap, or when the page starts following)."""
        with db.connection_context():
            message = Message.get_or_none(Message.id == message_id)
            if message is None:
                return
            html = upsert(self._article(message))
        self._send(html)

    def handle(self, event):
        """Apply one hub event (or a ("follow", id) request from the page)."""
        if event is CLOSING:
            raise _Closing()
        if isinstance(event, tuple):  # the page lost its own stream of this reply
            self.followed.add(event[1])
            self.resync(event[1])
            return
        if event.kind == "detach":
            if event.page == self.page:
                self.followed.add(event.message_id)
                self.resync(event.message_id)
            return
        if self._attached(event.message_id, event.page):
            return
        have = self.delivered.get(event.message_id)
        if event.kind == "article":
            if have is not None and event.seq < have:
                return  # older than what the page already shows
            self.delivered[event.message_id] = event.seq
            self._send(event.html)
        elif event.kind == "append":
            if have is not None and event.seq <= have:
                return
            if have is None or event.seq != have + 1:
                self.resync(event.message_id)
                return
            self.delivered[event.message_id] = event.seq
            self._send(event.html)

    # -- the two greenlets ---------------------------------------------------

    def write_loop(self, app):
        """The only code that sends on this socket, pings included (renders
        need ``app``'s context)."""
        try:
            with app.app_context():
                self.snapshot()
                while True:
                    try:
                        event = self.sub.queue.get(timeout=self.ping_interval)
                    except Empty:
                        # Pings keep idle sockets open through proxies.
                        self._write(Ping())
                        continue
                    self.handle(event)
        except _Closing:
            # The server is restarting: 1012 makes htmx reconnect (to the next process).
            try:
                self._write(CloseConnection(1012, "server restarting"))
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
        """Subscribe, start the writer, and read the page's requests until it goes."""
        self.sub = self.hub.subscribe(self.room, on_overflow=self._cut)
        writer = gevent.spawn(self.write_loop, current_app._get_current_object())
        # However the writer ends, end the connection too: the page reconnects
        # and resyncs instead of looking live while receiving nothing.
        writer.link(lambda _: self._cut())
        try:
            while not writer.dead:
                data = self.ws.receive(timeout=10)
                if data is None:
                    continue
                request = _parse_request(data)
                if request is not None:
                    self.sub.offer(request)
        except ConnectionClosed:
            pass
        finally:
            self.hub.unsubscribe(self.sub)
            writer.kill(block=True, timeout=1)


class _Closing(Exception):
    """The hub asked every socket to close (the process is shutting down)."""


def _parse_request(data):
    """``{"follow": id}`` from the page; anything else is ignored."""
    if not isinstance(data, str) or len(data) > 200:
        return None
    try:
        payload = json.loads(data)
    except ValueError:
        return None
    follow = payload.get("follow") if isinstance(payload, dict) else None
    # Exactly an int (not a bool) that fits a database id.
    if type(follow) is int and 0 < follow < 2**63:
        return ("follow", follow)
    return None
