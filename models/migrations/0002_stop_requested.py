"""A Stop can be asked of the process that runs a reply, whichever process
receives it: ``message.stop_requested``."""
from peewee import BooleanField


def up(migrator, db):
    migrator.migrate(migrator.add_column("message", "stop_requested", BooleanField(default=False)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("message", "stop_requested"))
