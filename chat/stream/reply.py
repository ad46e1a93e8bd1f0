"""One reply, from the question to its end, in the reply's own greenlet.

``generate`` reads the model's tokens, hands each one at once to the
author's stream (if still listening), feeds the chunker, commits every ready
chunk in its own short transaction (``write``: retried through a database
blip) and then publishes it on the hub; a Stop or a shutdown closes the
model's request. ``finish`` writes the whole body once, drops the chunks and
publishes the final article. The ``generator`` passed in holds the settings,
the hub, the relay and the model (generation.py).
"""
import logging
import time

import gevent
from gevent.queue import Empty
from peewee import IntegrityError
from peewee import InterfaceError
from peewee import OperationalError

from chat.fanout.hub import FINAL
from chat.fanout.hub import Event
from chat.llm.context import build_context
from chat.llm.context import fit_context
from chat.llm.context import room_prompt
from chat.render.blocks import blocks_of
from chat.render.blocks import remember
from chat.render.rendering import grow_fragment
from chat.render.rendering import render_message
from chat.render.rendering import upsert
from chat.stream.chunking import Chunker
from chat.stream.upstream import DONE
from chat.stream.upstream import Upstream
from chat.stream.upstream import describe_error
from chat.stream.upstream import left_out_note
from models import COMPLETE
from models import FAILED
from models import INTERRUPTED
from models import STOPPED
from models import STREAMING
from models import Chunk
from models import Message
from models import Room
from models import db
from models import utcnow

log = logging.getLogger(__name__)

STOP = object()  # the asker pressed Stop
INTERRUPT = object()  # the process is shutting down

NO_TEXT = "The model returned no text. Try again, or ask in other words."


def reply_context(reply, limit, instructions=None):
    """The model's messages for ``reply``: the system prompt (with the room's
    ``instructions``) and the ``limit`` messages before it. Bounded in the
    query, so that messages posted after the question (a busy room) never push
    the question out of the window."""
    return build_context(Message.recent(reply.room, limit, before=reply.id), room_prompt(instructions))


def generate(generator, generation, reply):
    """Run ``reply`` to its end: read the model, feed the asker's stream, commit
    and publish each chunk, then finish it (complete, stopped, interrupted or
    failed). In the reply's own greenlet, inside the app's context."""
    # Each write checks a connection out of the pool and returns it: none is
    # held while the model is thinking.
    with db.connection_context():
        room = Room.get_or_none(Room.name == reply.room)
        history = reply_context(reply, generator.context_messages, room.instructions if room else None)
    messages, dropped = fit_context(history, generator.prompt_budget())
    # The room's own model, if it chose one (checked against the server's list
    # when it was chosen; a model the server dropped since fails the reply in words).
    default = getattr(generator.provider, "model", None)
    model = room.model if room is not None and room.model else default
    reply.model = model
    reply.note = left_out_note(dropped)
    chunker = Chunker(generator.size_cap, generator.time_cap)
    parts = []
    committed = []  # the text of every chunk committed so far
    generation.drawn = blocks_of("")
    seq = 0
    started = time.monotonic()
    ttft = None
    upstream = Upstream(generator.provider, messages, model)
    last_write = time.monotonic()
    whole = generator.fanout != "append"

    def publish_whole(n):
        """Baselines: every viewer gets the whole message again."""
        html = upsert(render_message(reply, "".join(parts)))
        generator.hub.publish(Event("article", reply.room, reply.id, n, html, generation.page))
        return html

    def commit(text):
        nonlocal seq, last_write
        if not text or generator.fanout == "whole-per-token":
            return
        seq += 1

        def insert():
            Chunk.add(reply.id, seq, text)
            # Other processes hear of it on commit, in commit order.
            generator.relay.announce("article" if whole else "append", reply.id, seq, generation.page)

        write(generator, insert)
        before = "".join(committed)
        committed.append(text)
        last_write = time.monotonic()
        if whole:
            publish_whole(seq)
        else:
            html, generation.drawn = grow_fragment(reply.id, generation.drawn, before, before + text)
            generator.hub.publish(Event("append", reply.room, reply.id, seq, html, generation.page))
        # Let the page sockets send it before the next chunk: with tokens
        # queued up (drawing a long block takes longer than they arrive) this
        # loop would otherwise never yield, and a socket queue that fills
        # drops the viewer as if it had stopped reading.
        gevent.sleep(0)

    try:
        # The request itself runs in the reader too, so a stop is heard
        # even before the model has answered.
        reader = gevent.spawn(upstream.read_into, generation.tokens)
        while True:
            silent_for = time.monotonic() - last_write
            if silent_for >= generator.heartbeat:
                # The model is slow and nothing is committed: show we are alive.
                write(generator, Message.update(active_at=utcnow()).where(Message.id == reply.id).execute)
                last_write = time.monotonic()
                silent_for = 0
            wait = generator.heartbeat - silent_for
            pending = chunker.seconds_left()
            try:
                item = generation.tokens.get(timeout=wait if pending is None else min(wait, pending))
            except Empty:
                commit(chunker.flush_due())
                continue
            if item is DONE:
                break
            if item is STOP or item is INTERRUPT:
                # Closing the upstream response is what makes the model stop.
                reader.kill(block=False)
                upstream.close()
                commit(chunker.flush())
                status = STOPPED if item is STOP else INTERRUPTED
                finish(generator, generation, reply, status, "".join(parts), ttft, upstream.usage, committed)
                return
            if isinstance(item, BaseException):
                raise item
            if not parts:
                # Small models often open with blank lines: a reply starts
                # at its first visible character, for every viewer alike.
                item = item.lstrip()
                if not item:
                    continue
            now = time.monotonic()
            if ttft is None:
                ttft = int((now - started) * 1000)
            # First token to this one, kept on the reply for _finish: the pace it shows.
            reply.generation_ms = int((now - started) * 1000) - ttft
            parts.append(item)
            if generator.fanout == "whole-per-token":
                # Baseline (a): the whole body rewritten and re-sent per token,
                # to the asker too.
                def rewrite():
                    Message.update(body="".join(parts)).where(Message.id == reply.id).execute()
                    generator.relay.announce("article", reply.id, len(parts), generation.page)

                write(generator, rewrite)
                generation.emit(("whole", publish_whole(len(parts))))
            else:
                generation.emit(("tok", item))
            for chunk in chunker.feed(item):
                commit(chunk)
        reader.join()
        commit(chunker.flush())
        if not parts:
            # Finished without one visible character: say so, offer Retry.
            finish(generator, generation, reply, FAILED, "", ttft, upstream.usage, committed, error=NO_TEXT)
            return
        finish(generator, generation, reply, COMPLETE, "".join(parts), ttft, upstream.usage, committed)
    except Exception as exc:
        log.warning("reply %s failed: %r", reply.id, exc)
        upstream.close()
        commit(chunker.flush())
        finish(generator,
            generation, reply, FAILED, "".join(parts), ttft, {}, committed, error=describe_error(exc)
        )


def write(generator, work):
    """``work()`` in its own short transaction on a pooled connection,
    retried while the database is unreachable (a restart, a failover) for
    up to ``DB_RETRY_FOR`` seconds, so a reply outlives a database blip."""
    deadline = time.monotonic() + generator.retry_for
    delay = 0.05
    attempt = 0
    while True:
        try:
            with db.connection_context(), db.atomic():
                return work()
        except IntegrityError:
            if attempt == 0:
                raise
            return None  # the previous attempt did commit; only its answer was lost
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() >= deadline:
                raise
            attempt += 1
            log.warning("database write failed (%s); retrying in %.2fs", exc, delay)
            gevent.sleep(delay)
            delay = min(delay * 2, 1.0)


def finish(generator, generation, reply, status, body, ttft, usage, committed, error=None):
    """Write the whole body once, drop the chunks, publish the final article.

    Pages already show the body (drawn block by block from the chunks, or
    the tokens), so when it is exactly the committed text they only get the
    article's new status, controls and footer around the body they have.
    """
    reply.status = status
    reply.body = body
    reply.completed_at = utcnow()
    reply.ttft_ms = ttft
    reply.prompt_tokens = usage.get("prompt_tokens")
    reply.completion_tokens = usage.get("completion_tokens")
    reply.error = error

    # Pages that have every chunk keep the body they show.
    flips = generator.fanout == "append" and "".join(committed) == body

    def settle():
        nonlocal reply
        settled = Message.update(
            status=status,
            body=body,
            completed_at=reply.completed_at,
            model=reply.model,
            ttft_ms=ttft,
            generation_ms=reply.generation_ms,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            error=error,
            note=reply.note,
            stream_page=None,
        ).where(
            (Message.id == reply.id) & (Message.status == STREAMING) & (Message.claimed_by == generator.worker_id)
        ).execute()
        if settled:
            Chunk.delete().where(Chunk.message == reply.id).execute()
            if flips:
                generator.relay.announce("settle", reply.id, len(committed), generation.page)
            else:
                generator.relay.announce("article", reply.id, FINAL, generation.page)
        else:
            # Settled elsewhere (a Stop from another process, or the watchdog
            # that took this process for dead): show that, and drop chunks
            # committed since (unless the reply was retried meanwhile).
            reply = Message.get_by_id(reply.id)
            if not reply.is_streaming:
                Chunk.delete().where(Chunk.message == reply.id).execute()
        return settled

    settled = write(generator, settle)
    if flips and generation.drawn is not None:
        remember(generation.drawn)  # the final article's body, drawn already
    html = upsert(render_message(reply))
    flip = upsert(render_message(reply, keep_body=True)) if settled else None
    generation.finished = True
    generation.emit(("final", html, flip, reply.body))
    if not settled:
        return
    if flips:
        generator.hub.publish(Event("settle", reply.room, reply.id, len(committed), flip, generation.page))
    else:
        generator.hub.publish(Event("article", reply.room, reply.id, FINAL, html, generation.page))
