"""gunicorn settings read from the working directory: finish or settle the
replies in flight when a worker is told to stop (deploys, daily restarts)."""
import os
import time

import gevent


def _chat(worker):
    app = getattr(worker, "wsgi", None)
    return getattr(app, "extensions", {}).get("chat")


def _grace_left(worker):
    """Seconds left before the master kills this worker, less a margin."""
    started = getattr(worker, "shutdown_started", time.monotonic())
    return worker.cfg.graceful_timeout - (time.monotonic() - started) - 3


def post_worker_init(worker):
    """When the worker starts stopping, close the page sockets at once (open
    sockets would keep it busy until the master kills it, and pages reconnect
    to the next process), then let replies finish within the grace period."""

    def watch():
        while worker.alive:
            gevent.sleep(0.2)
        worker.shutdown_started = time.monotonic()
        chat = _chat(worker)
        if chat is not None:
            chat["hub"].close_all()
            chat["relay"].stop()  # its pages are gone; free its database connection
            chat["generator"].shutdown(_grace_left(worker))

    gevent.spawn(watch)


def worker_exit(server, worker):
    """No connection is left, but replies may still run (their askers left):
    give them the rest of the grace period, then mark them interrupted."""
    chat = _chat(worker)
    if chat is not None:
        chat["generator"].shutdown(_grace_left(worker))
        chat["presence"].close()  # its pages' people leave their rooms
        chat["generator"].leave()  # its replies are settled: others need not wait for it


def on_starting(server):
    """Refuse several workers on SQLite: each worker fans out only to its own
    sockets, so pages on one worker would miss replies generated on another."""
    url = os.environ.get("DATABASE_URL", "sqlite:///")
    if server.cfg.workers > 1 and url.startswith("sqlite:"):
        raise SystemExit(
            "Refusing to start {} workers on SQLite: live replies reach only the pages of the "
            "worker that generates them. Run one worker (WEB_CONCURRENCY=1), or use PostgreSQL "
            "for several.".format(server.cfg.workers)
        )
