"""Each Retry and Regenerate, so the per-minute limit on questions to the
model counts them as it counts new questions: ``reply_restart``. Also an
index on ``message.status``: the reply caps and the watchdog look up the few
streaming replies, which was a scan of every message."""
from datetime import datetime
from datetime import timezone

from peewee import CharField
from peewee import DateTimeField
from peewee import Model


def _utcnow():
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _model(db):
    class ReplyRestart(Model):
        session_key = CharField(max_length=32)
        created_at = DateTimeField(default=_utcnow)

        class Meta:
            database = db
            table_name = "reply_restart"
            indexes = ((("session_key", "created_at"), False),)

    return ReplyRestart


def up(migrator, db):
    db.create_tables([_model(db)], safe=True)
    migrator.migrate(migrator.add_index("message", ("status",), False))


def down(migrator, db):
    migrator.migrate(migrator.drop_index("message", "message_status"))
    db.drop_tables([_model(db)], safe=True)
