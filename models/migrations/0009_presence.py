"""Who has a page of each room open (``presence``): a row per person, room
and process holding their sockets, so every process can list a room's people
and drop those of a process that is gone (chat/fanout/presence.py)."""
from peewee import CharField
from peewee import IntegerField
from peewee import Model


def _model(db):
    class Presence(Model):
        worker = CharField(max_length=64)
        room = CharField(max_length=64)
        session_key = CharField(max_length=32)
        name = CharField(max_length=120)
        pages = IntegerField(default=1)

        class Meta:
            database = db
            table_name = "presence"
            indexes = ((("worker", "room", "session_key"), True), (("room",), False))

    return Presence


def up(migrator, db):
    db.create_tables([_model(db)], safe=True)


def down(migrator, db):
    db.drop_tables([_model(db)], safe=True)
