"""When a person last edited their message (and resent it): ``message.edited_at``,
shown as "edited" next to its time."""
from peewee import DateTimeField


def up(migrator, db):
    migrator.migrate(migrator.add_column("message", "edited_at", DateTimeField(null=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("message", "edited_at"))
