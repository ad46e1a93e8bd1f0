"""A remark shown under a finished reply (e.g. that older messages were left
out to fit the model's context window): ``message.note``."""
from peewee import TextField


def up(migrator, db):
    migrator.migrate(migrator.add_column("message", "note", TextField(null=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("message", "note"))
