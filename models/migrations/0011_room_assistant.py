"""A room's own assistant: ``room.instructions`` (what it is told to be) and
``room.model`` (which of the server's models answers there), and
``assistant_change``, which the per-session limit on changing them counts."""
from datetime import datetime
from datetime import timezone

from peewee import CharField
from peewee import DateTimeField
from peewee import Model
from peewee import TextField


def _utcnow():
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _model(db):
    class AssistantChange(Model):
        session_key = CharField(max_length=32)
        room = CharField(max_length=64)
        created_at = DateTimeField(default=_utcnow)

        class Meta:
            database = db
            table_name = "assistant_change"
            indexes = ((("session_key", "created_at"), False),)

    return AssistantChange


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("room", "instructions", TextField(null=True)),
        migrator.add_column("room", "model", CharField(max_length=120, null=True)),
    )
    db.create_tables([_model(db)], safe=True)


def down(migrator, db):
    db.drop_tables([_model(db)], safe=True)
    migrator.migrate(migrator.drop_column("room", "model"), migrator.drop_column("room", "instructions"))
