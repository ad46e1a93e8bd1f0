"""A row per live process that generates replies (``worker``): what process
it is and when it last beat, so a crashed process's replies are settled in
seconds instead of after INTERRUPT_AFTER without activity (workers.py)."""
from datetime import datetime
from datetime import timezone

from peewee import CharField
from peewee import DateTimeField
from peewee import DoubleField
from peewee import Model


def _utcnow():
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _model(db):
    class Worker(Model):
        id = CharField(max_length=64, primary_key=True)
        identity = CharField(max_length=200)
        seen_at = DoubleField()
        started_at = DateTimeField(default=_utcnow)

        class Meta:
            database = db
            table_name = "worker"

    return Worker


def up(migrator, db):
    db.create_tables([_model(db)], safe=True)


def down(migrator, db):
    db.drop_tables([_model(db)], safe=True)
