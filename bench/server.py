"""The real server: gunicorn with one gevent worker on a loopback port."""
import os
import re
import secrets
import sys
import time

from bench import HOOK_DIR
from bench import ROOT
from bench.meters import proc_rss_kb
from bench.meters import proc_stat

sys.path.insert(0, os.path.join(ROOT, "tests"))
from support.server import GunicornServer  # noqa: E402  (the tests' server, shared)


def app_default(name):
    """A setting's default as app.py's create_app writes it (``NAME=value,``), as text."""
    try:
        with open(os.path.join(ROOT, "app.py")) as f:
            found = re.search(r"^\s*{}=([^,\n]+),".format(re.escape(name)), f.read(), re.M)
        return found.group(1).strip() if found else "?"
    except OSError:
        return "?"


class Server(GunicornServer):
    """The app as the tests' ``LiveServer`` runs it (one gevent worker), with
    the benchmark's settings (no rate limits, the fake model), its SQL write
    log, and its worker process's CPU and memory."""

    def __init__(self, workdir, name, llm_url, env=None):
        self.name = name
        self.db_path = os.path.join(workdir, name + ".db")
        self.trace_path = os.path.join(workdir, name + ".sql.jsonl")
        settings = {
            "DATABASE_URL": "sqlite:///" + self.db_path,
            "SECRET_KEY": "bench-" + secrets.token_hex(8),
            "OPENAI_API_KEY": "bench-key",
            "OPENAI_BASE_URL": llm_url,
            "OPENAI_MODEL": "fake-model",
            "POSTS_PER_MINUTE": "1000000",
            "ASKS_PER_MINUTE": "1000000",
            "MAX_CONCURRENT_REPLIES": "1000000",
            "REPLIES_PER_SESSION": "1000000",
            "BENCH_SQL_TRACE": self.trace_path,
        }
        settings.update(env or {})
        path = settings.get("PYTHONPATH", os.environ.get("PYTHONPATH"))
        settings["PYTHONPATH"] = HOOK_DIR + (os.pathsep + path if path else "")
        super().__init__(os.path.join(workdir, name + ".gunicorn.log"), settings, stop_wait=15)
        self.worker = None

    def started(self):
        self.worker = self._find_worker()

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

    def log_problems(self):
        """Lines of the server log that report errors (tracebacks, ERROR, WARNING)."""
        lines = self.logs().splitlines()
        return [line for line in lines if re.search(r"Traceback|\[ERROR\]|ERROR|WARNING|Error:", line)]
