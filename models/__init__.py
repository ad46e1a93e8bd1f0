"""Database models: messages and the append-only chunks of replies in flight.

One deferred database (``db``) is bound to a real connection by ``init_db`` from
the app factory, so models can be imported before configuration is known.
"""
import os
from datetime import datetime
from datetime import timezone

from peewee import BooleanField
from peewee import CharField
from peewee import DatabaseProxy
from peewee import DateTimeField
from peewee import DoubleField
from peewee import ForeignKeyField
from peewee import IntegerField
from peewee import IntegrityError
from peewee import Model
from peewee import PostgresqlDatabase
from peewee import SqliteDatabase
from peewee import TextField
from peewee import fn
from playhouse.db_url import connect as connect_url
from playhouse.db_url import parse as parse_url
from playhouse.migrations import Runner
from playhouse.pool import PooledPostgresqlDatabase
from playhouse.pool import PooledSqliteDatabase

db = DatabaseProxy()

# Statuses a message can have; "streaming" is the only one that still changes.
STREAMING = "streaming"
COMPLETE = "complete"
FAILED = "failed"
STOPPED = "stopped"
INTERRUPTED = "interrupted"
FINAL_STATUSES = (COMPLETE, FAILED, STOPPED, INTERRUPTED)
RETRYABLE = (FAILED, STOPPED, INTERRUPTED)

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "busy_timeout": 5000,
    "cache_size": -16000,
    "synchronous": "normal",
}


def utcnow():
    """Timezone-naive UTC now, the form every timestamp is stored in."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class BaseModel(Model):
    class Meta:
        database = db


class Message(BaseModel):
    """A chat message; assistant replies are built from chunks while streaming."""

    room = CharField(max_length=64, index=True)
    author = CharField(max_length=120)
    role = CharField(max_length=16)  # "user" or "assistant"
    # Which browser session posted it, or asked for it (a digest of the
    # session id, safe to show: pages use it to mark their own messages).
    session_key = CharField(max_length=32, null=True, index=True)
    status = CharField(max_length=16, default=COMPLETE, index=True)
    body = TextField(default="")
    created_at = DateTimeField(default=utcnow)
    completed_at = DateTimeField(null=True)
    # Written while the model is silent, so the watchdog knows we are alive.
    active_at = DateTimeField(null=True)
    reply_to = ForeignKeyField("self", null=True, backref="replies", on_delete="SET NULL")
    # The page whose form post streams this reply token by token; its sockets
    # skip the reply's pushes so nothing shows twice.
    stream_page = CharField(max_length=64, null=True)
    # Set atomically by the one process that generates the reply.
    claimed_by = CharField(max_length=64, null=True)
    model = CharField(max_length=120, null=True)
    prompt_tokens = IntegerField(null=True)
    completion_tokens = IntegerField(null=True)
    ttft_ms = IntegerField(null=True)
    # From the first token to the last: the pace of the reply (tokens/s).
    generation_ms = IntegerField(null=True)
    error = TextField(null=True)
    # A Stop posted to a process that does not run this reply: the process that
    # does stops it (it is told at once on PostgreSQL, and checks on reconnect).
    stop_requested = BooleanField(default=False)
    # A remark shown under a finished reply (e.g. history left out to fit
    # the model's context window).
    note = TextField(null=True)
    # When its author last edited it (and resent it to the model).
    edited_at = DateTimeField(null=True)

    class Meta:
        indexes = ((("room", "id"), False),)

    @property
    def is_streaming(self):
        return self.status == STREAMING

    @classmethod
    def recent(cls, room, limit=100, before=None):
        """The last ``limit`` messages of a room (those older than id ``before``), oldest first."""
        query = cls.select().where(cls.room == room)
        if before is not None:
            query = query.where(cls.id < before)
        rows = list(query.order_by(cls.id.desc()).limit(limit))
        rows.reverse()
        return rows

    @classmethod
    def new_reply(cls, question, model=None, page=None, claimed_by=None):
        """The empty, streaming assistant reply to ``question``."""
        return cls.create(
            room=question.room,
            author="gpt",
            role="assistant",
            status=STREAMING,
            reply_to=question.id,
            session_key=question.session_key,
            stream_page=page,
            claimed_by=claimed_by,
            model=model,
        )

    @classmethod
    def claim(cls, message_id, owner):
        """Atomically take the right to generate a reply; True for exactly one caller."""
        query = cls.update(claimed_by=owner).where(
            (cls.id == message_id) & (cls.claimed_by.is_null()) & (cls.status == STREAMING)
        )
        return query.execute() == 1

    @property
    def tokens_per_second(self):
        """Completion tokens per second of generation, or None when unknown."""
        if not self.completion_tokens or not self.generation_ms:
            return None
        return self.completion_tokens * 1000.0 / self.generation_ms

    def restart(self, owner, statuses=RETRYABLE, newest=False, page=None):
        """Atomically turn a reply whose status is one of ``statuses`` back into
        an empty streaming one claimed by ``owner``; True for exactly one caller.

        With ``newest``, only while no later message is in its room (a
        Regenerate replaces the answer the conversation ends with). ``page``:
        the page that streams it again itself (an edited question's asker).
        """
        query = Message.update(
            status=STREAMING, body="", error=None, completed_at=None, active_at=utcnow(),
            prompt_tokens=None, completion_tokens=None, ttft_ms=None, generation_ms=None,
            stream_page=page, claimed_by=owner, note=None,
        ).where((Message.id == self.id) & (Message.status.in_(statuses)))
        if newest:
            query = query.where(~fn.EXISTS(self.later()))
        return query.execute() == 1

    def later(self):
        """The messages of this one's room posted after it."""
        Later = Message.alias()
        return Later.select(Later.id).where((Later.room == self.room) & (Later.id > self.id))

    def committed(self):
        """(text, last_seq): what is stored of this message right now.

        A finished message has its whole body; a streaming one is the
        concatenation of its chunks.
        """
        if not self.is_streaming:
            return self.body, 0
        chunks = list(
            Chunk.select(Chunk.seq, Chunk.text).where(Chunk.message == self.id).order_by(Chunk.seq)
        )
        if not chunks:  # nothing committed yet (or the per-token baseline's body)
            return self.body, 0
        return "".join(c.text for c in chunks), chunks[-1].seq


class Chunk(BaseModel):
    """An append-only, sentence-sized piece of a reply that is still streaming."""

    message = ForeignKeyField(Message, backref="chunks", on_delete="CASCADE")
    seq = IntegerField()
    text = TextField()
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("message", "seq"), True),)

    _insert = {}  # database -> the INSERT statement, built once

    @classmethod
    def add(cls, message_id, seq, text):
        """Insert one chunk. A reply commits one per sentence, so the statement
        is built once per database instead of once per chunk (building it
        costs peewee more than SQLite takes to run it)."""
        database = db.obj
        sql = cls._insert.get(database)
        if sql is None:
            sql = cls._insert[database] = cls.insert(message=0, seq=0, text="", created_at=utcnow()).sql()[0]
        database.execute_sql(sql, (message_id, seq, text, cls.created_at.db_value(utcnow())))


class Flag(BaseModel):
    """A named one-time event (e.g. "seeded"); the unique key makes it race-free."""

    name = CharField(max_length=64, unique=True)
    created_at = DateTimeField(default=utcnow)

    @classmethod
    def set_once(cls, name):
        """True if this call set the flag, False if it was already set."""
        try:
            with db.atomic():
                cls.create(name=name)
            return True
        except IntegrityError:
            return False


class Room(BaseModel):
    """A room someone has posted in: the list of rooms shows the recently active ones.

    A room exists as soon as its page is opened (its URL is its name); it gets
    a row with its first message.
    """

    name = CharField(max_length=64, unique=True)
    created_at = DateTimeField(default=utcnow)
    active_at = DateTimeField(default=utcnow, index=True)
    messages = IntegerField(default=0)
    # The room's own assistant (chat/web/assistant.py): what it is told to be,
    # and which of the server's models answers (None: the server's default).
    instructions = TextField(null=True)
    model = CharField(max_length=120, null=True)

    @classmethod
    def touch(cls, name, added=1):
        """Record ``added`` new messages in room ``name`` now (one statement)."""
        now = utcnow()
        cls.insert(name=name, created_at=now, active_at=now, messages=added).on_conflict(
            conflict_target=[cls.name],
            update={cls.active_at: now, cls.messages: cls.messages + added},
        ).execute()

    @classmethod
    def active(cls, limit=20):
        """The ``limit`` most recently active rooms, most recent first."""
        return list(cls.select().order_by(cls.active_at.desc(), cls.id.desc()).limit(limit))


class NameChange(BaseModel):
    """A browser session changed its name (``limits.check_name_change`` counts them)."""

    session_key = CharField(max_length=32)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "name_change"
        indexes = ((("session_key", "created_at"), False),)


class ReplyRestart(BaseModel):
    """A Retry or Regenerate by a browser session: the per-minute limit on
    questions to the model counts these with the replies asked for."""

    session_key = CharField(max_length=32)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "reply_restart"
        indexes = ((("session_key", "created_at"), False),)


class AssistantChange(BaseModel):
    """A browser session changed a room's assistant (``limits`` counts them)."""

    session_key = CharField(max_length=32)
    room = CharField(max_length=64)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "assistant_change"
        indexes = ((("session_key", "created_at"), False),)


class Worker(BaseModel):
    """A process that generates replies, while it runs (workers.py)."""

    id = CharField(max_length=64, primary_key=True)  # what it claims replies with
    identity = CharField(max_length=200)  # "<boot>/<pid namespace> <pid> <start time>"
    seen_at = DoubleField()  # its last beat, in seconds by the database's clock
    started_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "worker"


class Presence(BaseModel):
    """A person with a page of a room open, per process holding its sockets
    (chat/fanout/presence.py); rows of a process that is gone are dropped."""

    worker = CharField(max_length=64)
    room = CharField(max_length=64)
    session_key = CharField(max_length=32)
    name = CharField(max_length=120)
    pages = IntegerField(default=1)

    class Meta:
        table_name = "presence"
        indexes = ((("worker", "room", "session_key"), True), (("room",), False))


MODELS = [Message, Chunk, Flag, Room, NameChange, ReplyRestart, Worker, Presence, AssistantChange]


def is_postgres(url):
    """True for the URLs hosting platforms hand out for PostgreSQL."""
    return url.split(":", 1)[0] in ("postgres", "postgresql")


def make_database(url, pool_size=20):
    """A peewee database for a ``DATABASE_URL``.

    SQLite (a file) and PostgreSQL (``postgres://`` or ``postgresql://``, through
    psycopg 3) get a connection pool: a connection is checked out for a request
    or one short write and returned, never held across a model's reply.
    Anything else is handed to peewee's ``playhouse.db_url`` as it is.
    """
    pool = {"max_connections": pool_size, "stale_timeout": 300, "timeout": 10}
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not path or path == ":memory:":  # every connection would be its own database
            return SqliteDatabase(":memory:", pragmas=SQLITE_PRAGMAS)
        return PooledSqliteDatabase(path, pragmas=SQLITE_PRAGMAS, **pool)
    if is_postgres(url):
        params = parse_url(url, unquote_password=True, unquote_user=True)
        return PooledPostgresqlDatabase(params.pop("database"), prefer_psycopg3=True, **pool, **params)
    return connect_url(url)


def init_db(url, pool_size=20):
    """Bind the deferred database to ``url`` (closing a previous binding's pool)."""
    if db.obj is not None and hasattr(db.obj, "close_all"):
        db.obj.close_all()
    db.initialize(make_database(url, pool_size))
    return db


MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
MIGRATION_TABLE = "schema_migration"
# Held while migrating, so that workers starting together migrate once.
_MIGRATION_LOCK = 0x63686174


def migration_runner():
    return Runner(db.obj, directory=MIGRATIONS, table_name=MIGRATION_TABLE)


def migrate():
    """Apply the numbered migrations in ``models/migrations`` that this
    database lacks (recorded in ``schema_migration``); their names."""
    with db.connection_context():
        postgres = isinstance(db.obj, PostgresqlDatabase)
        if postgres:
            db.execute_sql("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            return migration_runner().up()
        finally:
            if postgres:
                db.execute_sql("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))


def applied_migrations():
    """Names of the migrations this database has had, oldest first."""
    with db.connection_context():
        return [m.name for m in migration_runner().status() if m.applied]


def pending_migrations():
    """Names of the migrations this database has not had yet."""
    with db.connection_context():
        return [m.name for m in migration_runner().status() if not m.applied and m.path]



__all__ = [
    "AssistantChange",
    "Chunk",
    "Flag",
    "Message",
    "ReplyRestart",
    "NameChange",
    "Presence",
    "Room",
    "Worker",
    "db",
    "init_db",
    "applied_migrations",
    "migrate",
    "pending_migrations",
    "utcnow",
]
