"""The real server, as the Procfile runs it: gunicorn with the gevent worker
serving ``app:create_app()`` on a loopback port, its output in a log file.
The tests' ``LiveServer`` (conftest) and the benchmark's ``Server`` both are
one of these, with their own settings."""
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GunicornServer:
    """gunicorn on ``port`` (a free one by default) with the app's settings
    ``env`` on top of this process's environment; ``prefix`` runs it under
    another command (``unshare``: its own pid namespace)."""

    def __init__(self, log_path, env, workers=1, graceful=5, port=None, prefix=(), stop_wait=10):
        self.port = port or free_port()
        self.url = "http://127.0.0.1:{}".format(self.port)
        self.log_path = log_path
        self.env = dict(os.environ, SEED_DEMO="0", PYTHONUNBUFFERED="1")  # an empty room; logs as they come
        self.env.update(env)
        self.workers = workers
        self.graceful = graceful
        self.prefix = list(prefix)
        self.stop_wait = stop_wait
        self.proc = None
        self.log = None

    def start(self):
        cmd = self.prefix + [
            sys.executable, "-m", "gunicorn",
            "--worker-class", "gevent",
            "--workers", str(self.workers),
            "--bind", "127.0.0.1:{}".format(self.port),
            "--no-control-socket",
            "--graceful-timeout", str(self.graceful),
            "app:create_app()",
        ]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        # The master listens before its worker has loaded the app (and run
        # its migrations): wait until a worker answers, so that nothing races
        # a slow boot on a busy machine.
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/static/favicon.svg", timeout=5) as response:
                    if response.status == 200:
                        self.started()
                        return self
            except (OSError, http.client.HTTPException):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("gunicorn did not start:\n" + self.logs()[-3000:])

    def started(self):
        """Called once a worker answers (for what a subclass wants to know then)."""

    def stop(self):
        """SIGTERM the whole process group (master and workers), SIGKILL if it lingers."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(self.stop_wait)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.log:
            self.log.close()
            self.log = None

    def logs(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""
