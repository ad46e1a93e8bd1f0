"""How long a reply took from its first token to its last, so its footer can
show tokens per second: ``message.generation_ms``."""
from peewee import IntegerField


def up(migrator, db):
    migrator.migrate(migrator.add_column("message", "generation_ms", IntegerField(null=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("message", "generation_ms"))
