"""The replies this process generates: one greenlet per reply, decoupled
from any request (a disconnect ends the response, never the reply).

``Generator`` claims a reply, starts its greenlet (reply.py runs it), and
keeps the ones running here: a Stop reaches them, the author's stream
detaches from them, a shutdown gives them a grace period and interrupts the
rest. ``Generation`` is the in-memory side of one: its token queue, and the
author's stream listening to it.
"""
import logging

import gevent
from gevent.queue import Queue

from chat.fanout.hub import Event
from chat.llm.tokens import MAX_TOKENS
from chat.stream import workers
from chat.stream.reply import INTERRUPT
from chat.stream.reply import STOP
from chat.stream.reply import generate
from models import Message
from models import db

log = logging.getLogger(__name__)

FANOUT_MODES = ("append", "whole-per-chunk", "whole-per-token")


class Generation:
    """The in-memory side of one reply in flight: who is listening to it."""

    def __init__(self, reply_id, room, page=None):
        self.reply_id = reply_id
        self.room = room
        self.page = page  # the author's page while its stream is attached
        self.listeners = []
        self.finished = False
        self.greenlet = None
        self.tokens = Queue()  # provider tokens, or a STOP / INTERRUPT request
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
        generation.tokens.put(STOP)
        return True

    def shutdown(self, grace):
        """Let replies finish for up to ``grace`` seconds, then mark the rest
        interrupted (their committed text kept). Used when the worker exits."""
        greenlets = [g.greenlet for g in list(self.running.values())]
        gevent.joinall(greenlets, timeout=max(0.0, grace))
        for generation in list(self.running.values()):
            generation.tokens.put(INTERRUPT)
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
                generate(self, generation, reply)
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
