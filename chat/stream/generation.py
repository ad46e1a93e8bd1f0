"""Generating a reply: one greenlet per reply, decoupled from any request.

The greenlet reads tokens from the provider, hands each one at once to the
author's stream (if still listening), feeds the chunker, commits every ready
chunk in its own short transaction and then publishes it on the hub. When the
model is done, the full body is written and the chunks compacted in one
transaction, and the final article is published once.
"""
import logging
import time

import gevent
from gevent.queue import Empty
from gevent.queue import Queue
from peewee import IntegrityError
from peewee import InterfaceError
from peewee import OperationalError

from chat.fanout.hub import FINAL
from chat.fanout.hub import Event
from chat.llm.context import build_context
from chat.llm.context import fit_context
from chat.llm.tokens import MAX_TOKENS
from chat.render.blocks import blocks_of
from chat.render.blocks import remember
from chat.render.rendering import grow_fragment
from chat.render.rendering import render_message
from chat.render.rendering import upsert
from chat.stream import workers
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
from models import db
from models import utcnow

log = logging.getLogger(__name__)

FANOUT_MODES = ("append", "whole-per-chunk", "whole-per-token")

_STOP = object()  # the asker pressed Stop
_INTERRUPT = object()  # the process is shutting down

NO_TEXT = "The model returned no text. Try again, or ask in other words."


class Generation:
    """The in-memory side of one reply in flight: who is listening to it."""

    def __init__(self, reply_id, room, page=None):
        self.reply_id = reply_id
        self.room = room
        self.page = page  # the author's page while its stream is attached
        self.listeners = []
        self.finished = False
        self.greenlet = None
        self.tokens = Queue()  # provider tokens, or a _STOP / _INTERRUPT request
        self.drawn = None  # the blocks of the committed text, as observers have it

    def listen(self):
        """A queue of ("tok", text) items ending with ("final", html, flip, body):
        the whole final article, and (when ``body`` is the text the stream
        carried) the article with its body left in place."""
        queue = Queue()
        self.listeners.append(queue)
        return queue

    def emit(self, item):
        for queue in self.listeners:
            queue.put(item)


def reply_context(reply, limit):
    """The model's messages for ``reply``: the system prompt and the ``limit``
    messages before it. Bounded in the query, so that messages posted after the
    question (a busy room) never push the question out of the window."""
    return build_context(Message.recent(reply.room, limit, before=reply.id))


class Generator:
    """Starts reply greenlets and keeps track of the ones running here."""

    def __init__(self, app, hub, provider, worker_id, relay=None):
        self.app = app
        self.hub = hub
        self.relay = relay  # announces commits to other processes (PostgreSQL)
        self.provider = provider
        self.worker_id = worker_id
        self.running = {}
        config = app.config
        self.size_cap = config["CHUNK_SIZE_CAP"]
        self.time_cap = config["CHUNK_TIME_CAP"]
        self.context_messages = config["CONTEXT_MESSAGES"]
        self.max_tokens = config.get("MAX_TOKENS") or MAX_TOKENS
        self.heartbeat = config["HEARTBEAT_INTERVAL"]
        self.retry_for = config["DB_RETRY_FOR"]
        # "append" is this design; the other two emulate the designs it improves
        # on and exist only so the benchmark can measure them through this server.
        self.fanout = config["FANOUT_MODE"]
        if self.fanout not in FANOUT_MODES:
            raise ValueError("FANOUT_MODE must be one of {}".format(", ".join(FANOUT_MODES)))

    def start(self, reply, page=None, claimed=False):
        """Begin generating ``reply``; returns its ``Generation`` or None if
        another process already claimed it."""
        if not claimed and not Message.claim(reply.id, self.worker_id):
            return None
        generation = Generation(reply.id, reply.room, page)
        self.running[reply.id] = generation
        generation.greenlet = gevent.spawn(self._run, generation, reply)
        return generation

    def detach(self, generation, queue):
        """The author's stream ended; if the reply goes on, tell that page to
        follow it over its socket instead."""
        if queue in generation.listeners:
            generation.listeners.remove(queue)
        if generation.finished or generation.page is None:
            return
        page, generation.page = generation.page, None
        with db.connection_context(), db.atomic():
            Message.update(stream_page=None).where(Message.id == generation.reply_id).execute()
            self.relay.announce("detach", generation.reply_id, page=page)
        self.hub.publish(Event("detach", generation.room, generation.reply_id, page=page))

    def stop(self, reply_id):
        """Stop a reply generated here; False if it does not run in this process."""
        generation = self.running.get(reply_id)
        if generation is None:
            return False
        generation.tokens.put(_STOP)
        return True

    def shutdown(self, grace):
        """Let replies finish for up to ``grace`` seconds, then mark the rest
        interrupted (their committed text kept). Used when the worker exits."""
        greenlets = [g.greenlet for g in list(self.running.values())]
        gevent.joinall(greenlets, timeout=max(0.0, grace))
        for generation in list(self.running.values()):
            generation.tokens.put(_INTERRUPT)
        gevent.joinall([g.greenlet for g in list(self.running.values())], timeout=2)

    def leave(self):
        """Drop this process's worker row as it exits cleanly (its replies are
        settled by then), so nobody waits for its beat."""
        try:
            with db.connection_context():
                workers.leave(self.worker_id)
        except Exception:  # the database may be gone too; the row then goes stale
            log.exception("could not remove worker %s", self.worker_id)

    def _run(self, generation, reply):
        try:
            with self.app.app_context():
                self._generate(generation, reply)
        except Exception:  # the greenlet must never die silently
            log.exception("reply %s crashed", reply.id)
            # End the author's stream; its page then follows the reply over its
            # socket, and the watchdog settles the stored reply.
            generation.emit(("final", "", None, None))
        finally:
            generation.finished = True
            self.running.pop(reply.id, None)
            if not db.is_closed():  # a connection opened by a stray query goes back to the pool
                db.close()

    def prompt_budget(self):
        """Tokens the prompt may take in the model's context window, the rest
        being left for the reply (0: no limit)."""
        window = getattr(self.provider, "context_tokens", 0) or 0
        if window <= 0:
            return 0
        reply = getattr(self.provider, "max_tokens", None) or self.max_tokens
        return window - min(reply, window // 2)

    def _generate(self, generation, reply):
        # Each write checks a connection out of the pool and returns it: none is
        # held while the model is thinking.
        with db.connection_context():
            history = reply_context(reply, self.context_messages)
        messages, dropped = fit_context(history, self.prompt_budget())
        reply.model = getattr(self.provider, "model", None)
        reply.note = left_out_note(dropped)
        chunker = Chunker(self.size_cap, self.time_cap)
        parts = []
        committed = []  # the text of every chunk committed so far
        generation.drawn = blocks_of("")
        seq = 0
        started = time.monotonic()
        ttft = None
        upstream = Upstream(self.provider, messages)
        last_write = time.monotonic()
        whole = self.fanout != "append"

        def publish_whole(n):
            """Baselines: every viewer gets the whole message again."""
            html = upsert(render_message(reply, "".join(parts)))
            self.hub.publish(Event("article", reply.room, reply.id, n, html, generation.page))
            return html

        def commit(text):
            nonlocal seq, last_write
            if not text or self.fanout == "whole-per-token":
                return
            seq += 1

            def insert():
                Chunk.add(reply.id, seq, text)
                # Other processes hear of it on commit, in commit order.
                self.relay.announce("article" if whole else "append", reply.id, seq, generation.page)

            self._write(insert)
            before = "".join(committed)
            committed.append(text)
            last_write = time.monotonic()
            if whole:
                publish_whole(seq)
            else:
                html, generation.drawn = grow_fragment(reply.id, generation.drawn, before, before + text)
                self.hub.publish(Event("append", reply.room, reply.id, seq, html, generation.page))
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
                if silent_for >= self.heartbeat:
                    # The model is slow and nothing is committed: show we are alive.
                    self._write(Message.update(active_at=utcnow()).where(Message.id == reply.id).execute)
                    last_write = time.monotonic()
                    silent_for = 0
                wait = self.heartbeat - silent_for
                pending = chunker.seconds_left()
                try:
                    item = generation.tokens.get(timeout=wait if pending is None else min(wait, pending))
                except Empty:
                    commit(chunker.flush_due())
                    continue
                if item is DONE:
                    break
                if item is _STOP or item is _INTERRUPT:
                    # Closing the upstream response is what makes the model stop.
                    reader.kill(block=False)
                    upstream.close()
                    commit(chunker.flush())
                    status = STOPPED if item is _STOP else INTERRUPTED
                    self._finish(generation, reply, status, "".join(parts), ttft, upstream.usage, committed)
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
                if self.fanout == "whole-per-token":
                    # Baseline (a): the whole body rewritten and re-sent per token,
                    # to the asker too.
                    def rewrite():
                        Message.update(body="".join(parts)).where(Message.id == reply.id).execute()
                        self.relay.announce("article", reply.id, len(parts), generation.page)

                    self._write(rewrite)
                    generation.emit(("whole", publish_whole(len(parts))))
                else:
                    generation.emit(("tok", item))
                for chunk in chunker.feed(item):
                    commit(chunk)
            reader.join()
            commit(chunker.flush())
            if not parts:
                # Finished without one visible character: say so, offer Retry.
                self._finish(generation, reply, FAILED, "", ttft, upstream.usage, committed, error=NO_TEXT)
                return
            self._finish(generation, reply, COMPLETE, "".join(parts), ttft, upstream.usage, committed)
        except Exception as exc:
            log.warning("reply %s failed: %r", reply.id, exc)
            upstream.close()
            commit(chunker.flush())
            self._finish(
                generation, reply, FAILED, "".join(parts), ttft, {}, committed, error=describe_error(exc)
            )

    def _write(self, work):
        """``work()`` in its own short transaction on a pooled connection,
        retried while the database is unreachable (a restart, a failover) for
        up to ``DB_RETRY_FOR`` seconds, so a reply outlives a database blip."""
        deadline = time.monotonic() + self.retry_for
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

    def _finish(self, generation, reply, status, body, ttft, usage, committed, error=None):
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
        flips = self.fanout == "append" and "".join(committed) == body

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
                (Message.id == reply.id) & (Message.status == STREAMING) & (Message.claimed_by == self.worker_id)
            ).execute()
            if settled:
                Chunk.delete().where(Chunk.message == reply.id).execute()
                if flips:
                    self.relay.announce("settle", reply.id, len(committed), generation.page)
                else:
                    self.relay.announce("article", reply.id, FINAL, generation.page)
            else:
                # Settled elsewhere (a Stop from another process, or the watchdog
                # that took this process for dead): show that, and drop chunks
                # committed since (unless the reply was retried meanwhile).
                reply = Message.get_by_id(reply.id)
                if not reply.is_streaming:
                    Chunk.delete().where(Chunk.message == reply.id).execute()
            return settled

        settled = self._write(settle)
        if flips and generation.drawn is not None:
            remember(generation.drawn)  # the final article's body, drawn already
        html = upsert(render_message(reply))
        flip = upsert(render_message(reply, keep_body=True)) if settled else None
        generation.finished = True
        generation.emit(("final", html, flip, reply.body))
        if not settled:
            return
        if flips:
            self.hub.publish(Event("settle", reply.room, reply.id, len(committed), flip, generation.page))
        else:
            self.hub.publish(Event("article", reply.room, reply.id, FINAL, html, generation.page))
