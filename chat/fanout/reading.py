"""Reading a page's frames without a reader greenlet: a callback of the event
loop reads whatever the socket has when it is readable, feeds wsproto, and
queues what the frames ask for (a ``follow``, a pong, the closing handshake)
to the socket's one writer (sockets.py)."""
import json
import logging
import os

import gevent
from gevent.queue import Full
from simple_websocket import ConnectionClosed
from wsproto.events import BytesMessage
from wsproto.events import CloseConnection
from wsproto.events import Message as WsMessage
from wsproto.events import Ping

log = logging.getLogger(__name__)


class NoReaderThread:
    """simple-websocket's ``thread_class`` for page sockets: start no reader.

    simple-websocket reads each connection in a thread of its own (a parked
    greenlet here, with its own stack and frames) and hands messages over to
    a second one blocked in ``receive``. A page socket reads its frames from
    an event-loop callback instead (``PageSocket.serve``)."""

    name = "page socket"

    def __init__(self, target=None, **kwargs):
        pass

    def start(self):
        pass


class Pong:
    """The answer to a ping from the page, for the writer to send."""

    __slots__ = ("event",)

    def __init__(self, event):
        self.event = event


# Queued to wake the writer when the page went away.
GONE = object()


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


class FrameReader:
    """What reads a page socket's frames (mixed into ``PageSocket``, which has
    ``ws``, ``sub``, ``page`` and the writer's ``_ended`` and ``_last``)."""

    def _start_reading(self):
        """Start reading the page's frames; returns what stops it."""
        if not isinstance(getattr(self.ws, "thread", None), NoReaderThread):
            # A stand-in socket in tests, or a socket whose library reads it
            # itself: take its messages from ``receive``.
            reader = gevent.spawn(self._receive_loop)
            return lambda: reader.kill(block=False)
        # Past the handshake, the frame protocol is all the socket needs; the
        # handshake's HTTP parser and the request it read go (a few KB a socket).
        if self.ws.ws.connection is not None:
            self.ws.ws = self.ws.ws.connection
        self._incoming = []
        self._incoming_size = 0
        watcher = gevent.get_hub().loop.io(self.ws.sock.fileno(), 1)  # 1: readable
        watcher.start(self._on_readable, watcher)
        return watcher.close

    def _receive_loop(self):
        try:
            while True:
                data = self.ws.receive(timeout=10)
                if data is not None:
                    self._on_message(data)
        except ConnectionClosed:
            self._ended = True
            self._wake(GONE)

    def _on_readable(self, watcher):
        """Read what the page sent (called by the event loop: never blocks)."""
        try:
            data = os.read(self.ws.sock.fileno(), self.ws.receive_bytes)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        try:
            if not data:
                self._gone(watcher)
                return
            connection = self.ws.ws
            connection.receive_data(data)
            for event in connection.events():
                if isinstance(event, WsMessage):  # text or bytes, maybe in pieces
                    self._incoming_size += len(event.data)
                    if self.ws.max_message_size and self._incoming_size > self.ws.max_message_size:
                        self._gone(watcher, CloseConnection(1009, "Message is too big"))
                        return
                    self._incoming.append(event.data)
                    if event.message_finished:
                        if isinstance(event, BytesMessage):
                            self._on_message(b"".join(self._incoming))
                        else:
                            self._on_message("".join(self._incoming))
                        self._incoming = []
                        self._incoming_size = 0
                elif isinstance(event, Ping):
                    self._wake(Pong(event.response()))
                elif isinstance(event, CloseConnection):
                    self.ws.close_reason = event.code
                    self.ws.close_message = event.reason
                    self._gone(watcher, event.response())
                    return
        except Exception:
            log.exception("reading the socket of page %s failed", self.page)
            self._gone(watcher)

    def _on_message(self, data):
        request = _parse_request(data)
        if request is not None:
            self.sub.offer(request)

    def _gone(self, watcher, last=None):
        """The page closed, or must be closed: stop reading, and have the
        writer stop, before anything else it has queued, after it sends
        ``last`` (the answer to the page's Close, or ours)."""
        watcher.stop()
        self._ended = True
        self._last = last
        self._wake(GONE)

    def _wake(self, item):
        """Queue ``item`` to the writer, past the viewer's limit: a full queue
        means the socket was already cut, and the writer ends at its next send."""
        try:
            self.sub.queue.put_nowait(item)
        except Full:
            pass
