"""The watchdog: no reply stays "streaming" forever.

A reply is alive while the process generating it shows activity: a committed
chunk, or a heartbeat written while the model is silent. One whose last
activity is older than ``stale_after`` seconds (its process died: ``kill -9``,
an out-of-memory kill, a lost host) is marked ``interrupted``, its committed
text kept, and every page is told. Replies running in this process are never
touched: they have their own timeouts. With several processes (PostgreSQL),
each one sweeps; a live process's replies show activity at least every
``HEARTBEAT_INTERVAL`` seconds, well inside ``stale_after``, so no process
settles another live one's reply.
"""
import logging
from datetime import timedelta

import gevent

from hub import FINAL
from hub import Event
from models import INTERRUPTED
from models import STOPPED
from models import STREAMING
from models import Chunk
from models import Message
from models import db
from models import utcnow
from rendering import render_message
from rendering import upsert

log = logging.getLogger(__name__)


def last_activity(message):
    """When the process generating ``message`` last showed it was alive."""
    latest = (
        Chunk.select(Chunk.created_at).where(Chunk.message == message.id).order_by(Chunk.seq.desc()).first()
    )
    times = (message.created_at, message.active_at, latest.created_at if latest else None)
    return max(t for t in times if t is not None)


def settle(message, status, hub, relay):
    """Settle a reply nobody generates any more, keeping what was committed."""
    with db.atomic():
        text, seq = message.committed()
        settled = (
            Message.update(status=status, body=text, completed_at=utcnow(), stream_page=None)
            .where((Message.id == message.id) & (Message.status == STREAMING))
            .execute()
        )
        if settled:
            Chunk.delete().where(Chunk.message == message.id).execute()
            if seq or not text:
                relay.announce("settle", message.id, seq)
            else:
                relay.announce("article", message.id, FINAL)
    if settled:
        message = Message.get_by_id(message.id)
        if seq or not text:
            # Pages that have every chunk keep their body; the others get it all.
            flip = upsert(render_message(message, keep_body=True))
            hub.publish(Event("settle", message.room, message.id, seq, flip))
        else:  # a body written without chunks (the per-token baseline)
            hub.publish(Event("article", message.room, message.id, FINAL, upsert(render_message(message))))
    return bool(settled)


def sweep(generator, hub, relay, stale_after):
    """Interrupt every streaming reply that shows no sign of life; their ids."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    interrupted = []
    for message in Message.select().where(Message.status == STREAMING):
        if message.id in generator.running:
            continue
        if last_activity(message) >= cutoff:
            continue
        # Its process died: after a Stop nobody could deliver, it is stopped.
        status = STOPPED if message.stop_requested else INTERRUPTED
        if settle(message, status, hub, relay):
            log.warning("reply %s %s: no activity since before %s", message.id, status, cutoff)
            interrupted.append(message.id)
    return interrupted


def run(app, interval, stale_after):
    """Sweep every ``interval`` seconds, forever (a greenlet per process)."""
    chat = app.extensions["chat"]
    while True:
        try:
            with app.app_context(), db.connection_context():
                sweep(chat["generator"], chat["hub"], chat["relay"], stale_after)
        except Exception:
            log.exception("watchdog sweep failed")
        gevent.sleep(interval)
