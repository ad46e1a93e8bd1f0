"""The first schema: messages, the chunks of replies in flight, one-time flags.

A frozen copy of the models as they were, independent of today's ``models``.
``safe=True``: a database created before migrations existed already has these
tables and is only recorded as migrated.
"""
from datetime import datetime
from datetime import timezone

from peewee import CharField
from peewee import DateTimeField
from peewee import ForeignKeyField
from peewee import IntegerField
from peewee import Model
from peewee import TextField


def _utcnow():
    return datetime.now(timezone.utc).replace(tzinfo=None)


def up(migrator, db):
    class Message(Model):
        room = CharField(max_length=64, index=True)
        author = CharField(max_length=120)
        role = CharField(max_length=16)
        session_key = CharField(max_length=32, null=True, index=True)
        status = CharField(max_length=16, default="complete")
        body = TextField(default="")
        created_at = DateTimeField(default=_utcnow)
        completed_at = DateTimeField(null=True)
        active_at = DateTimeField(null=True)
        reply_to = ForeignKeyField("self", null=True, backref="replies", on_delete="SET NULL")
        stream_page = CharField(max_length=64, null=True)
        claimed_by = CharField(max_length=64, null=True)
        model = CharField(max_length=120, null=True)
        prompt_tokens = IntegerField(null=True)
        completion_tokens = IntegerField(null=True)
        ttft_ms = IntegerField(null=True)
        error = TextField(null=True)

        class Meta:
            database = db
            table_name = "message"
            indexes = ((("room", "id"), False),)

    class Chunk(Model):
        message = ForeignKeyField(Message, backref="chunks", on_delete="CASCADE")
        seq = IntegerField()
        text = TextField()
        created_at = DateTimeField(default=_utcnow)

        class Meta:
            database = db
            table_name = "chunk"
            indexes = ((("message", "seq"), True),)

    class Flag(Model):
        name = CharField(max_length=64, unique=True)
        created_at = DateTimeField(default=_utcnow)

        class Meta:
            database = db
            table_name = "flag"

    db.create_tables([Message, Chunk, Flag], safe=True)
