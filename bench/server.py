"""The real server: gunicorn with one gevent worker on a loopback port."""
import http.client
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time

from bench import HOOK_DIR
from bench import ROOT
from bench.meters import proc_rss_kb
from bench.meters import proc_stat


def app_default(name):
    """A setting's default as app.py's create_app writes it (``NAME=value,``), as text."""
    try:
        with open(os.path.join(ROOT, "app.py")) as f:
            found = re.search(r"^\s*{}=([^,\n]+),".format(re.escape(name)), f.read(), re.M)
        return found.group(1).strip() if found else "?"
    except OSError:
        return "?"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """gunicorn, one gevent worker, on a loopback port; its SQL write log."""

    def __init__(self, workdir, name, llm_url, env=None):
        self.name = name
        self.port = free_port()
        self.url = "http://127.0.0.1:{}".format(self.port)
        self.db_path = os.path.join(workdir, name + ".db")
        self.trace_path = os.path.join(workdir, name + ".sql.jsonl")
        self.log_path = os.path.join(workdir, name + ".gunicorn.log")
        self.env = dict(os.environ)
        self.env.update({
            "DATABASE_URL": "sqlite:///" + self.db_path,
            "SECRET_KEY": "bench-" + secrets.token_hex(8),
            "SEED_DEMO": "0",
            "PYTHONUNBUFFERED": "1",
            "OPENAI_API_KEY": "bench-key",
            "OPENAI_BASE_URL": llm_url,
            "OPENAI_MODEL": "fake-model",
            "POSTS_PER_MINUTE": "1000000",
            "ASKS_PER_MINUTE": "1000000",
            "MAX_CONCURRENT_REPLIES": "1000000",
            "REPLIES_PER_SESSION": "1000000",
            "BENCH_SQL_TRACE": self.trace_path,
        })
        self.env.update(env or {})
        path = self.env.get("PYTHONPATH")
        self.env["PYTHONPATH"] = HOOK_DIR + (os.pathsep + path if path else "")
        self.proc = None
        self.worker = None
        self._log = None

    def start(self):
        cmd = [sys.executable, "-m", "gunicorn", "--worker-class", "gevent", "--workers", "1",
               "--bind", "127.0.0.1:{}".format(self.port), "--no-control-socket",
               "--graceful-timeout", "5", "app:create_app()"]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/")
                ok = conn.getresponse().status == 200
                conn.close()
                if ok:
                    self.worker = self._find_worker()
                    return self
            except (OSError, http.client.HTTPException):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("gunicorn did not start:\n" + self.logs()[-3000:])

    def _find_worker(self):
        for _ in range(50):
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        if proc_stat(int(entry))[0] == self.proc.pid:
                            return int(entry)
                    except (OSError, IndexError, ValueError):
                        continue
            time.sleep(0.1)
        raise RuntimeError("no gunicorn worker process found")

    def cpu(self):
        return proc_stat(self.worker)[1]

    def rss_kb(self):
        return proc_rss_kb(self.worker)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._log:
            self._log.close()
            self._log = None

    def logs(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_problems(self):
        """Lines of the server log that report errors (tracebacks, ERROR, WARNING)."""
        lines = self.logs().splitlines()
        return [line for line in lines if re.search(r"Traceback|\[ERROR\]|ERROR|WARNING|Error:", line)]
