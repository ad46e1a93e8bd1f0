"""In-process publish/subscribe of room events to the sockets of that room.

Publishers render a fragment once and publish one ``Event``; every subscriber
gets the same object. Each subscription has a bounded queue drained by its
socket's single writer greenlet, so a slow viewer only ever fills its own
queue: when it overflows, the subscription is dropped (its socket is cut and
the page reconnects and resyncs) and nobody else waits.
"""
from collections import defaultdict
from dataclasses import dataclass

import gevent
import gevent.event
from gevent.queue import Empty
from gevent.queue import Full

# The seq of an article that will not change any more.
FINAL = 1 << 60

# Queued to every socket when the process shuts down: close, the page reconnects.
CLOSING = object()

# Queued to every socket when events from other processes may have been missed
# (the cross-process listener reconnected): re-read and send what changed.
RESYNC = object()

# Queued to every socket every ping interval: ping the page.
PING = object()


@dataclass(frozen=True)
class Event:
    """Something every page of a room must apply.

    kind: "article" (insert or replace a whole message), "append" (apply one
    committed chunk to a reply's body), "settle" (the reply is finished and its
    body is exactly its committed chunks: ``html`` replaces the article around
    the body a page already shows) or "detach" (the author's stream of a reply
    ended early; that page must now follow the reply like an observer).
    seq: for "append", the chunk's number; for "article", how many chunks the
    rendered body includes (``FINAL`` once the message is settled); for
    "settle", how many chunks the final body is made of.
    page: the page that receives this message through its own response; its
    sockets skip the event.
    """

    kind: str
    room: str
    message_id: int
    seq: int = 0
    html: str = ""
    page: str | None = None


class Mailbox:
    """A subscription's bounded queue: many putters that never block, one
    reader (the socket's writer greenlet). The part of gevent's ``Queue`` the
    sockets use, at a tenth of its size (a ``Queue`` is 3.7 KB, kept for as
    long as the page stays open)."""

    __slots__ = ("maxsize", "_items", "_ready")

    def __init__(self, maxsize):
        self.maxsize = maxsize
        self._items = []
        self._ready = gevent.event.Event()  # set while there are items

    def put_nowait(self, item):
        if len(self._items) >= self.maxsize:
            raise Full
        self._items.append(item)
        self._ready.set()

    def get_nowait(self):
        if not self._items:
            raise Empty
        item = self._items.pop(0)
        if not self._items:
            self._ready.clear()
        return item

    def get(self, timeout=None):
        """The next item, waiting for up to ``timeout`` seconds (``Empty`` then)."""
        if not self._items and not self._ready.wait(timeout):
            raise Empty
        return self.get_nowait()

    def qsize(self):
        return len(self._items)

    def empty(self):
        return not self._items


class Subscription:
    """One socket's place in a room."""

    __slots__ = ("room", "queue", "on_overflow", "dropped")

    def __init__(self, room, queue, on_overflow=None):
        self.room = room
        self.queue = queue
        self.on_overflow = on_overflow
        self.dropped = False

    def offer(self, item):
        """Queue an item without blocking; drop the subscriber when it is full."""
        if self.dropped:
            return
        try:
            self.queue.put_nowait(item)
        except Full:
            self.dropped = True
            if self.on_overflow is not None:
                self.on_overflow()


class Hub:
    """Rooms to subscriptions; ``publish`` never blocks."""

    def __init__(self, queue_size=1024):
        self.queue_size = queue_size
        self._rooms = defaultdict(set)
        self.published = 0
        self._pinger = None

    def subscribe(self, room, on_overflow=None):
        sub = Subscription(room, Mailbox(self.queue_size), on_overflow)
        self._rooms[room].add(sub)
        return sub

    def unsubscribe(self, sub):
        subs = self._rooms.get(sub.room)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._rooms[sub.room]

    def publish(self, event):
        """Hand ``event`` to every subscriber of its room."""
        self.published += 1
        for sub in list(self._rooms.get(event.room, ())):
            sub.offer(event)

    def broadcast(self, marker):
        """Queue ``marker`` (``CLOSING``, ``RESYNC`` or ``PING``) to every socket of every room."""
        for subs in list(self._rooms.values()):
            for sub in list(subs):
                sub.offer(marker)

    def keep_alive(self, interval):
        """Have every socket ping its page every ``interval`` seconds: one timer
        for all of them, not one per waiting socket. Starts once."""
        if self._pinger is None and interval:
            self._pinger = gevent.spawn(self._ping_every, interval)

    def _ping_every(self, interval):
        while True:
            gevent.sleep(interval)
            self.broadcast(PING)

    def close_all(self):
        """Ask every socket to close (with a code that makes pages reconnect)."""
        self.broadcast(CLOSING)

    def count(self, room=None):
        """Number of live subscriptions (in one room, or overall)."""
        if room is not None:
            return len(self._rooms.get(room, ()))
        return sum(len(s) for s in self._rooms.values())
