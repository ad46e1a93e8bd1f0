"""In-process publish/subscribe of room events to the sockets of that room.

Publishers render a fragment once and publish one ``Event``; every subscriber
gets the same object. Each subscription has a bounded queue drained by its
socket's single writer greenlet, so a slow viewer only ever fills its own
queue: when it overflows, the subscription is dropped (its socket is cut and
the page reconnects and resyncs) and nobody else waits.
"""
from collections import defaultdict
from dataclasses import dataclass
from dataclasses import field

from gevent.queue import Full
from gevent.queue import Queue

# The seq of an article that will not change any more.
FINAL = 1 << 60

# Queued to every socket when the process shuts down: close, the page reconnects.
CLOSING = object()

# Queued to every socket when events from other processes may have been missed
# (the cross-process listener reconnected): re-read and send what changed.
RESYNC = object()


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


@dataclass(eq=False)
class Subscription:
    """One socket's place in a room."""

    room: str
    queue: Queue
    on_overflow: object = None
    dropped: bool = False
    meta: dict = field(default_factory=dict)

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

    def subscribe(self, room, on_overflow=None):
        sub = Subscription(room=room, queue=Queue(maxsize=self.queue_size), on_overflow=on_overflow)
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
        """Queue ``marker`` (``CLOSING`` or ``RESYNC``) to every socket of every room."""
        for subs in list(self._rooms.values()):
            for sub in list(subs):
                sub.offer(marker)

    def close_all(self):
        """Ask every socket to close (with a code that makes pages reconnect)."""
        self.broadcast(CLOSING)

    def count(self, room=None):
        """Number of live subscriptions (in one room, or overall)."""
        if room is not None:
            return len(self._rooms.get(room, ()))
        return sum(len(s) for s in self._rooms.values())
