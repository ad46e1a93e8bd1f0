"""gunicorn settings read from the working directory: finish or settle the
replies in flight when a worker is told to stop (deploys, daily restarts)."""
import time

import gevent


def post_worker_init(worker):
    """Note when the worker starts shutting down, to budget the graceful timeout."""

    def watch():
        while worker.alive:
            gevent.sleep(0.2)
        worker.shutdown_started = time.monotonic()

    gevent.spawn(watch)


def worker_exit(server, worker):
    """Give running replies what is left of the graceful timeout to finish,
    then mark the rest interrupted (the master kills us when it runs out)."""
    app = getattr(worker, "wsgi", None)
    chat = getattr(app, "extensions", {}).get("chat")
    if chat is None:
        return
    started = getattr(worker, "shutdown_started", time.monotonic())
    left = worker.cfg.graceful_timeout - (time.monotonic() - started) - 3
    chat["generator"].shutdown(left)
