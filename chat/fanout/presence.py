"""Who is in a room now: the people with a page of it open, from the sockets
that are open anyway.

Each process counts its own sockets per room and person (a person with two
tabs open is there once) and writes what it counts to ``presence``, a row
per person, room and process. The room's people are the union of those rows.
After a change the process publishes the room's new list on its hub and, on
PostgreSQL, announces it (relay.py), so every other process re-reads it for
its own pages. A page that goes is kept for ``grace`` seconds first, so a
reload, which closes a socket and opens another, is not seen as leaving.

Pages get a list only when it changes (and one when their socket opens): an
idle room costs its sockets nothing beyond their pings. A process that stops
cleanly removes its rows; the rows of one that died are removed by the
watchdog of a process that sees it gone (workers.py), which tells the room.
"""
import logging
import time

import gevent
from flask import render_template

from chat.fanout.hub import Event
from chat.stream import workers
from models import Presence as Row
from models import db

log = logging.getLogger(__name__)

# A page that reconnects within this many seconds never shows as gone.
GRACE = 3.0
# Joins within this many seconds are written (and shown) together: when a
# server restarts, its pages reconnect at once, and each change goes to every
# page of the room.
JOIN_DELAY = 0.5
# At most this many names are listed; the count covers everyone.
LISTED = 50


class Presence:
    """This process's count of who has which room open, and the room lists."""

    def __init__(self, app, hub, worker_id, relay=None, grace=GRACE):
        self.app = app
        self.hub = hub
        self.worker_id = worker_id
        self.relay = relay
        self.grace = grace
        self._here = {}  # room -> {session key: [name, pages, left at or None]}
        self._due = {}  # room -> when its next write is due (monotonic)
        self._shown = {}  # room -> the fragment its pages were last sent

    # -- this process's sockets ------------------------------------------------

    def join(self, room, key, name):
        """A page of ``room`` opened its socket."""
        people = self._here.setdefault(room, {})
        entry = people.get(key)
        if entry is None:
            people[key] = [name, 1, None]
        else:
            entry[0], entry[1], entry[2] = name, entry[1] + 1, None
        self._later(room, JOIN_DELAY)

    def leave(self, room, key):
        """A page of ``room`` closed its socket (it may be back in a moment)."""
        entry = self._here.get(room, {}).get(key)
        if entry is None:
            return
        entry[1] = max(0, entry[1] - 1)
        if entry[1] == 0:
            entry[2] = time.monotonic()
        self._later(room, self.grace)

    def rename(self, key, name):
        """A person took a new name: every room they are in shows it."""
        for room, people in self._here.items():
            if key in people:
                people[key][0] = name
        with db.connection_context(), db.atomic():
            rooms = [r.room for r in Row.select(Row.room).where(Row.session_key == key).distinct()]
            Row.update(name=name).where(Row.session_key == key).execute()
            for room in rooms:
                self._announce(room)
        for room in rooms:
            self.refresh(room)

    def _later(self, room, delay):
        """Write ``room`` in ``delay`` seconds, unless a write is due sooner."""
        due = time.monotonic() + delay
        if self._due.get(room, due + 1) <= due:
            return
        self._due[room] = due
        gevent.spawn_later(delay, self._write_if_due, room, due)

    def _write_if_due(self, room, due):
        if self._due.get(room) != due:
            return  # a sooner write took it over
        del self._due[room]
        try:
            self.write(room)
        except Exception:
            log.exception("presence: could not write room %s", room)
            self._later(room, 1.0)

    def write(self, room):
        """Store who this process has in ``room`` now, and show the room's list."""
        now = time.monotonic()
        people = self._here.get(room, {})
        here = {k: e for k, e in people.items() if e[1] or now - e[2] < self.grace}
        for key in [k for k in people if k not in here]:
            del people[key]
        if not people:
            self._here.pop(room, None)
        waiting = [e[2] + self.grace - now for e in here.values() if not e[1]]
        if waiting:
            self._later(room, max(0.05, min(waiting)))
        with self.app.app_context(), db.connection_context(), db.atomic():
            mine = Row.select().where((Row.worker == self.worker_id) & (Row.room == room))
            stored = {row.session_key: row for row in mine}
            gone = [k for k in stored if k not in here]
            if gone:
                Row.delete().where(
                    (Row.worker == self.worker_id) & (Row.room == room) & Row.session_key.in_(gone)
                ).execute()
            for key, (name, pages, _) in here.items():
                pages = max(pages, 1)  # leaving, within the grace
                row = stored.get(key)
                if row is None:
                    Row.insert(worker=self.worker_id, room=room, session_key=key, name=name, pages=pages).execute()
                elif row.pages != pages:
                    Row.update(pages=pages).where(Row.id == row.id).execute()
            changed = bool(gone) or any(k not in stored for k in here)
            if changed:
                self._announce(room)
        if changed:
            self.refresh(room)

    def close(self):
        """This process is stopping: its people leave every room at once."""
        try:
            with self.app.app_context(), db.connection_context(), db.atomic():
                rooms = [r.room for r in Row.select(Row.room).where(Row.worker == self.worker_id).distinct()]
                Row.delete().where(Row.worker == self.worker_id).execute()
                for room in rooms:
                    self._announce(room)
        except Exception:  # the database may be gone too; the watchdog of another process cleans up
            log.exception("presence: could not remove this process's rows")
        self._here.clear()

    # -- every process's rows --------------------------------------------------

    def _announce(self, room):
        if self.relay is not None:
            self.relay.announce("presence", 0, page=room)

    def members(self, room):
        """[(session key, name)] of everyone with ``room`` open, by name: every
        process's rows, and whom this process has not written yet."""
        rows = Row.select(Row.session_key, Row.name).where(Row.room == room).order_by(Row.id)
        people = {}
        for row in rows:
            people[row.session_key] = row.name  # the latest row's name wins
        for key, (name, pages, _) in self._here.get(room, {}).items():
            if pages:
                people[key] = name
        return sorted(people.items(), key=lambda item: (item[1].casefold(), item[0]))

    def fragment(self, room):
        """The top bar's count and list of ``room``, as its pages swap them in."""
        with self.app.app_context(), db.connection_context():
            people = self.members(room)
            return render_template("_presence.html", people=people[:LISTED], count=len(people), swap=True)

    def shown(self, room):
        """The list this process last sent ``room``'s pages (drawn now if none
        was): what a socket that opens is sent, without a query per socket
        when a restarted server's pages all reconnect at once."""
        html = self._shown.get(room)
        return html if html is not None else self.fragment(room)

    def refresh(self, room):
        """Send ``room``'s pages in this process its list, if it changed."""
        if not self.hub.count(room):
            self._shown.pop(room, None)
            return
        html = self.fragment(room)
        if self._shown.get(room) == html:
            return
        self._shown[room] = html
        self.hub.publish(Event("presence", room, 0, html=html))

    def sweep(self):
        """Drop the rows of processes that are gone, and tell their rooms."""
        others = [r.worker for r in Row.select(Row.worker).where(Row.worker != self.worker_id).distinct()]
        if not others:
            return []
        known = workers.owners(others)
        at, after = workers.now(), self.app.config["HEARTBEAT_INTERVAL"]
        dead = [w for w in others if w not in known or workers.gone(known[w], at, after)]
        if not dead:
            return []
        with db.atomic():
            rooms = [r.room for r in Row.select(Row.room).where(Row.worker.in_(dead)).distinct()]
            Row.delete().where(Row.worker.in_(dead)).execute()
            for room in rooms:
                self._announce(room)
        for room in rooms:
            self.refresh(room)
        return dead
