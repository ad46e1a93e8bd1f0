"""The watchdog: no reply stays "streaming" after its process is gone.

Each process beats every few seconds (workers.py) and sweeps. A reply whose
process has a worker row is settled as soon as that process is gone: at once
when it ran on this machine (``kill -9``, then a restart), or once it has not
beaten for ``HEARTBEAT_INTERVAL`` seconds (another host, on PostgreSQL); a
live process's replies are never touched, however long their model is silent.
A reply whose process left no row (its watchdog was off, its row pruned), or
that this process claimed but does not run, is settled once it shows no
activity (a committed chunk, or the heartbeat its generation writes while the
model is silent) for ``INTERRUPT_AFTER`` seconds. Settling keeps the committed
text, marks the reply ``interrupted`` (``stopped`` after a Stop nobody could
deliver) and tells every page. Replies running in this process are never
touched here: they have their own timeouts.
"""
import logging
from datetime import timedelta

import gevent

from chat.fanout.hub import FINAL
from chat.fanout.hub import Event
from chat.render.rendering import render_message
from chat.render.rendering import upsert
from chat.stream import workers
from models import INTERRUPTED
from models import STOPPED
from models import STREAMING
from models import Chunk
from models import Message
from models import db
from models import utcnow

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


def sweep(generator, hub, relay, stale_after, gone_after=15.0):
    """Settle every streaming reply whose process is gone; their ids."""
    streaming = [m for m in Message.select().where(Message.status == STREAMING) if m.id not in generator.running]
    if not streaming:
        return []
    cutoff = utcnow() - timedelta(seconds=stale_after)
    owners = workers.owners(m.claimed_by for m in streaming if m.claimed_by != generator.worker_id)
    at = workers.now() if owners else None
    interrupted = []
    for message in streaming:
        owner = owners.get(message.claimed_by)
        if owner is not None:
            if not workers.gone(owner, at, gone_after):
                continue  # alive: its replies are its own
            why = "its process ({}) is gone".format(owner.id)
        elif last_activity(message) >= cutoff:
            continue
        else:
            why = "no activity since before {}".format(cutoff)
        # After a Stop nobody could deliver, it is stopped.
        status = STOPPED if message.stop_requested else INTERRUPTED
        if settle(message, status, hub, relay):
            log.warning("reply %s %s: %s", message.id, status, why)
            interrupted.append(message.id)
    return interrupted


def tick(interval, heartbeat):
    """Seconds between sweeps: a third of ``heartbeat`` at most, so that this
    process beats three times in the time after which others call it gone."""
    return min(interval, heartbeat / 3.0)


def run(app, interval, stale_after):
    """Beat and sweep every few seconds, forever (a greenlet per process)."""
    chat = app.extensions["chat"]
    generator = chat["generator"]
    heartbeat = app.config["HEARTBEAT_INTERVAL"]
    while True:
        try:
            with app.app_context(), db.connection_context():
                workers.beat(generator.worker_id)
                sweep(generator, chat["hub"], chat["relay"], stale_after, heartbeat)
                chat["presence"].sweep()  # the people of a process that is gone leave
                workers.prune(max(600.0, 10 * heartbeat))
        except Exception:
            log.exception("watchdog sweep failed")
        gevent.sleep(tick(interval, heartbeat))
