"""People can change their names, at a limited rate: ``name_change`` records
when each browser session did."""
from datetime import datetime
from datetime import timezone

from peewee import CharField
from peewee import DateTimeField
from peewee import Model


def _utcnow():
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _model(db):
    class NameChange(Model):
        session_key = CharField(max_length=32)
        created_at = DateTimeField(default=_utcnow)

        class Meta:
            database = db
            table_name = "name_change"
            indexes = ((("session_key", "created_at"), False),)

    return NameChange


def up(migrator, db):
    db.create_tables([_model(db)], safe=True)


def down(migrator, db):
    db.drop_tables([_model(db)], safe=True)
