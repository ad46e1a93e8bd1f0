"""A throwaway PostgreSQL server on loopback for the tests (and the benchmark).

Uses the Debian packages' binaries (``scripts/test.sh`` installs them). As root
the server runs as the ``postgres`` user, since PostgreSQL refuses to run as
root. Each test gets its own database, created from an empty template.
"""
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time

from support.server import free_port


def find_bin(name):
    """The newest installed PostgreSQL's ``name`` binary, or None."""
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]), reverse=True):
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return shutil.which(name)


class PostgresServer:
    """``start()`` a private cluster; ``create_database()`` for each test."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="chat-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.user = "chat"
        self.password = "chat"
        self._names = itertools.count(1)
        self._run_as = None
        if os.geteuid() == 0:
            self._run_as = pwd.getpwnam("postgres")
            os.chown(self.dir, self._run_as.pw_uid, self._run_as.pw_gid)

    def _cmd(self, *args):
        if self._run_as is None:
            return list(args)
        return ["runuser", "-u", "postgres", "--", *args]

    def _run(self, *args, timeout=60):
        return subprocess.run(self._cmd(*args), check=True, capture_output=True, text=True, timeout=timeout)

    def start(self):
        initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise RuntimeError(
                "PostgreSQL is not installed (no initdb/pg_ctl): scripts/test.sh installs it "
                "(apt-get install postgresql)."
            )
        if not os.path.exists(self.data):
            pwfile = os.path.join(self.dir, "pw")
            with open(pwfile, "w") as f:
                f.write(self.password)
            if self._run_as is not None:
                os.chown(pwfile, self._run_as.pw_uid, self._run_as.pw_gid)
            self._run(
                initdb, "-D", self.data, "-U", self.user, "--pwfile", pwfile, "-A", "scram-sha-256",
                "-E", "UTF8", "--locale", "C", "--no-sync",
            )
        options = (
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        ).format(self.port, self.dir)
        self._run(pg_ctl, "-D", self.data, "-l", self.log, "-o", options, "-w", "-t", "60", "start")
        return self

    def stop(self, mode="fast"):
        self._run(find_bin("pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop")

    def restart(self):
        """Stop (dropping every connection) and start again on the same port."""
        self.stop()
        self.start()

    def destroy(self):
        try:
            self.stop("immediate")
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database="postgres"):
        return "postgresql://{}:{}@127.0.0.1:{}/{}".format(self.user, self.password, self.port, database)

    def connect(self, database="postgres"):
        import psycopg

        return psycopg.connect(self.url(database), autocommit=True)

    def create_database(self, prefix="t"):
        """A new empty database; its URL."""
        name = "{}_{}_{}".format(prefix, os.getpid(), next(self._names))
        with self.connect() as conn:
            conn.execute('CREATE DATABASE "{}" TEMPLATE template0'.format(name))
        return self.url(name)

    def terminate(self, database_url, application_name=None):
        """Kill server-side connections to a database (all, or one application's)."""
        name = database_url.rsplit("/", 1)[1]
        sql = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
        args = [name]
        if application_name is not None:
            sql += " AND application_name = %s"
            args.append(application_name)
        with self.connect() as conn:
            return len(conn.execute(sql, args).fetchall())

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.connect():
                    return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
