"""Fan-out between processes, through PostgreSQL's LISTEN/NOTIFY.

Every process publishes its own events straight to its local hub. On
PostgreSQL it also *announces* each one with ``NOTIFY`` inside the transaction
that commits it: the payload carries ids only, and PostgreSQL delivers it on
commit, in commit order. Each process keeps one dedicated ``LISTEN``
connection in its own greenlet; for an announcement from another process it
re-reads the committed rows, renders the fragment and publishes it on its own
hub, which feeds that process's sockets. The author's token stream never
crosses processes; only commits do.

When the listening connection drops (a database restart, a network cut), the
listener reconnects with backoff and then makes every socket of its process
catch up from the database, so a page misses nothing. A Stop posted to one
process reaches the process that runs the reply the same way (and, should that
announcement be missed, through ``message.stop_requested`` on reconnect).

On SQLite there is only one process (gunicorn refuses more workers), so the
relay does nothing.
"""
import logging
import secrets
import time

import gevent

from chat.fanout.hub import FINAL
from chat.fanout.hub import RESYNC
from chat.fanout.hub import Event
from chat.render.rendering import chunk_fragment
from chat.render.rendering import render_message
from chat.render.rendering import upsert
from models import STREAMING
from models import Chunk
from models import Message
from models import db
from models import is_postgres

log = logging.getLogger(__name__)

CHANNEL = "chat_events"
KINDS = ("article", "append", "settle", "detach", "stop", "presence", "room")


class Relay:
    """Announces this process's commits and replays other processes' ones."""

    def __init__(self, app, hub, generator, url):
        self.app = app
        self.hub = hub
        self.generator = generator
        self.url = url
        self.enabled = is_postgres(url)
        self.origin = secrets.token_hex(6)  # tells our own announcements apart
        self.connected = False
        self.connections = 0  # how many times the listener (re)connected
        self.received = 0
        self.greenlet = None
        self.presence = None  # set by the app factory
        self.on_room = None  # called with a room whose assistant another process changed
        self._conn = None
        self._texts = {}  # reply id -> (last chunk relayed, text up to it)

    # -- announcing (any greenlet, inside the committing transaction) --------

    def announce(self, kind, message_id, seq=0, page=None):
        """NOTIFY the other processes of a commit; a no-op on SQLite."""
        if not self.enabled:
            return
        payload = "{} {} {} {} {}".format(self.origin, kind, int(message_id), int(seq), page or "-")
        db.execute_sql("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    # -- listening (one greenlet per process) ---------------------------------

    def start(self):
        if self.enabled and self.greenlet is None:
            self.greenlet = gevent.spawn(self.listen_forever)
        return self

    def stop(self):
        if self.greenlet is not None:
            self.greenlet.kill(block=False)
            self.greenlet = None
        self._close()

    def listen_forever(self, max_backoff=10.0):
        import psycopg

        backoff = 0.25
        while True:
            try:
                self._conn = psycopg.connect(
                    self.url, autocommit=True, connect_timeout=10,
                    application_name="chat-listener", keepalives=1, keepalives_idle=30,
                )
                self._conn.execute("LISTEN {}".format(CHANNEL))
                self.connected = True
                self.connections += 1
                if self.connections > 1:
                    log.warning("relay listener reconnected; pages catch up")
                    # Pooled connections may have died with the server: open new ones.
                    if hasattr(db.obj, "close_idle"):
                        db.obj.close_idle()
                    self.catch_up()
                backoff = 0.25
                while True:
                    for notify in self._conn.notifies(timeout=15):
                        self.dispatch(notify.payload)
                    # Quiet for a while: make sure the connection is still there.
                    self._conn.execute("SELECT 1")
            except gevent.GreenletExit:
                raise
            except Exception as exc:
                self.connected = False
                self._close()
                log.warning("relay listener lost its connection (%s); retrying in %.2fs", exc, backoff)
                gevent.sleep(backoff)
                backoff = min(backoff * 2, max_backoff)

    def _close(self):
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def catch_up(self):
        """After a gap: every socket re-reads what changed, and replies this
        process runs stop if a Stop was asked of them meanwhile."""
        self.hub.broadcast(RESYNC)  # pages re-read who is in their room too
        running = list(self.generator.running)
        if not running:
            return
        with self.app.app_context(), db.connection_context():
            asked = Message.select(Message.id).where(
                Message.id.in_(running) & Message.stop_requested & (Message.status == STREAMING)
            )
            for message in asked:
                self.generator.stop(message.id)

    def dispatch(self, payload):
        """Replay one announcement from another process on the local hub."""
        try:
            origin, kind, message_id, seq, page = payload.split(" ", 4)
            message_id, seq = int(message_id), int(seq)
        except ValueError:
            log.warning("relay: ignoring a malformed announcement %r", payload[:200])
            return
        if origin == self.origin or kind not in KINDS:
            return
        self.received += 1
        page = None if page == "-" else page
        if kind == "stop":
            self.generator.stop(message_id)
            return
        if kind == "room":  # a room's assistant changed (its name where a page goes)
            if self.on_room is not None and page:
                try:
                    with self.app.app_context():
                        self.on_room(page)
                except Exception:
                    log.exception("relay: could not show the new assistant of %s", page)
            return
        if kind == "presence":  # who is in a room changed (its name where a page goes)
            if self.presence is not None and page:
                try:
                    self.presence.refresh(page)
                except Exception:
                    log.exception("relay: could not refresh who is in %s", page)
            return
        try:
            with self.app.app_context(), db.connection_context():
                event = self._event(kind, message_id, seq, page)
        except Exception:
            log.exception("relay: could not replay %r", payload)
            return
        if event is not None:
            self.hub.publish(event)

    def _append(self, message, seq, page):
        """The fragment for chunk ``seq``: it depends on the text before it, which
        is remembered from the previous chunk or read again."""
        known_seq, known_text = self._texts.get(message.id, (0, ""))
        first = known_seq + 1 if known_seq < seq else 1
        texts = _chunks_text(message.id, first, seq)
        if seq not in texts or any(n not in texts for n in range(first, seq)):
            return None  # the reply settled meanwhile: its settle or final article follows
        before = (known_text if first > 1 else "") + "".join(texts[n] for n in range(first, seq))
        self._texts[message.id] = (seq, before + texts[seq])
        if len(self._texts) > 1000:  # replies that never settled here
            self._texts.pop(next(iter(self._texts)))
        html = chunk_fragment(message.id, before, texts[seq])
        return Event("append", message.room, message.id, seq, html, page)

    def _event(self, kind, message_id, seq, page):
        """The hub event for a commit, rebuilt from the database."""
        message = Message.get_or_none(Message.id == message_id)
        if message is None:
            return None
        if kind == "detach":
            return Event("detach", message.room, message_id, page=page)
        if kind == "append":
            return self._append(message, seq, page)
        self._texts.pop(message_id, None)
        if kind == "settle":
            if message.is_streaming:  # retried meanwhile: its new article follows
                return None
            # Pages with every chunk keep their body; the others get it all.
            flip = upsert(render_message(message, keep_body=True))
            return Event("settle", message.room, message_id, seq, flip, page)
        text, committed = message.committed()
        shown = committed if message.is_streaming else FINAL
        return Event("article", message.room, message_id, shown, upsert(render_message(message, text)), page)


def _chunks_text(message_id, first, last):
    """The text of chunks ``first``..``last`` of a reply (those still stored)."""
    rows = Chunk.select(Chunk.seq, Chunk.text).where(
        (Chunk.message == message_id) & (Chunk.seq >= first) & (Chunk.seq <= last)
    ).order_by(Chunk.seq)
    return {row.seq: row.text for row in rows}


def wait_settled(message_id, timeout, poll=0.05):
    """The message once it is no longer streaming, or None after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        message = Message.get_or_none(Message.id == message_id)
        if message is None or not message.is_streaming:
            return message
        if time.monotonic() >= deadline:
            return None
        gevent.sleep(poll)
