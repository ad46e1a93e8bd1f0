"""Rooms people have posted in, for the list of rooms with recent activity:
``room`` (name, when it was created, when it was last active, how many
messages it has). Filled from the messages already stored."""
from datetime import datetime
from datetime import timezone

from peewee import CharField
from peewee import DateTimeField
from peewee import IntegerField
from peewee import Model


def _utcnow():
    return datetime.now(timezone.utc).replace(tzinfo=None)


def up(migrator, db):
    class Room(Model):
        name = CharField(max_length=64, unique=True)
        created_at = DateTimeField(default=_utcnow)
        active_at = DateTimeField(default=_utcnow, index=True)
        messages = IntegerField(default=0)

        class Meta:
            database = db
            table_name = "room"

    db.create_tables([Room])
    db.execute_sql(
        "INSERT INTO room (name, created_at, active_at, messages)"
        " SELECT room, MIN(created_at), MAX(created_at), COUNT(*) FROM message GROUP BY room"
    )


def down(migrator, db):
    db.execute_sql("DROP TABLE room")
