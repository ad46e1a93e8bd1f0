"""Which processes that generate replies are alive, so that a crashed one's
replies are settled in seconds, and a live one's never.

Each process that runs a watchdog keeps a ``worker`` row: its id (the one it
claims replies with), what process it is (``identity``: the machine's boot,
its pid namespace, its pid and that pid's start time) and when it last beat
(``seen_at``, seconds by the database's clock, so the clocks of several hosts
never disagree). A process is gone when

- it runs on this machine (same boot and pid namespace) and its pid is not
  running, or runs another program now (a different start time), or is a
  zombie: known at once, as after a ``kill -9`` and a restart;
- on SQLite, it ran anywhere else: only one machine serves a SQLite file, so
  a worker of another boot or container is a process that is gone;
- it has not beaten for ``stale_after`` seconds (another host, on PostgreSQL).

A process that leaves cleanly deletes its row (its replies are settled by
then); rows of processes gone long ago are pruned.
"""
import functools
import os
import socket

from peewee import SQL
from peewee import PostgresqlDatabase

from models import Worker
from models import db

_PROC = "/proc"


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


@functools.cache
def scope():
    """This machine boot and pid namespace: where a pid means the same process
    (fixed for the life of a process: read once)."""
    boot = _read(_PROC + "/sys/kernel/random/boot_id") or socket.gethostname()[:60]
    try:
        namespace = os.stat(_PROC + "/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return "{}/{}".format(boot, namespace)


def started(pid):
    """The start time (clock ticks after boot) of running process ``pid``, or
    None when there is none (or only its zombie). Without /proc: "?" if a
    process with that pid exists."""
    stat = _read("{}/{}/stat".format(_PROC, pid))
    if stat is None:
        if os.path.isdir(_PROC + "/self"):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    state, start = fields[0], fields[19]
    return None if state in ("Z", "X") else start


def identity(pid=None):
    """What this process (or ``pid``) is, as a worker row records it."""
    pid = os.getpid() if pid is None else pid
    return "{} {} {}".format(scope(), pid, started(pid))


def clock():
    """The database's clock, in seconds since the epoch, as a SQL expression."""
    if isinstance(db.obj, PostgresqlDatabase):
        return SQL("extract(epoch from clock_timestamp())::double precision")
    return SQL("((julianday('now') - 2440587.5) * 86400.0)")


def now():
    """The database's clock, in seconds since the epoch."""
    return float(db.execute_sql("SELECT " + clock().sql).fetchone()[0])


def beat(worker_id):
    """Say that this process is alive (and what it is)."""
    me = identity()
    (
        Worker.insert(id=worker_id, identity=me, seen_at=clock())
        .on_conflict(conflict_target=[Worker.id], update={Worker.seen_at: clock(), Worker.identity: me})
        .execute()
    )


def leave(worker_id):
    """This process is going away cleanly."""
    Worker.delete().where(Worker.id == worker_id).execute()


def gone(worker, at, stale_after, sqlite=None):
    """True when ``worker`` (a row) is a process that no longer runs."""
    sqlite = not isinstance(db.obj, PostgresqlDatabase) if sqlite is None else sqlite
    if at - worker.seen_at > stale_after:
        return True
    where, pid, start = (worker.identity.rsplit(" ", 2) + ["", ""])[:3]
    if where != scope():
        return sqlite
    try:
        return started(int(pid)) != start
    except ValueError:
        return False


def owners(ids):
    """The worker rows of the processes that claimed replies: {id: row}."""
    ids = [i for i in set(ids) if i]
    return {w.id: w for w in Worker.select().where(Worker.id.in_(ids))} if ids else {}


def prune(older_than):
    """Forget workers that have not beaten for ``older_than`` seconds."""
    return Worker.delete().where(Worker.seen_at < clock() - older_than).execute()
