"""Schema migrations: numbered files in models/migrations, recorded in a table,
applied on start and by the CLI, upgrading an existing database in place (on
SQLite, and on PostgreSQL in the TEST_DATABASE=postgres pass)."""
import os

from app import create_app
from conftest import close_pool
from conftest import database_url
from models import MIGRATIONS
from models import Message
from models import db
from models import init_db
from models import migration_runner
from models import pending_migrations

ALL = sorted(name[:-3] for name in os.listdir(MIGRATIONS) if name[0].isdigit() and name.endswith(".py"))


def config(url):
    return {"TESTING": True, "SECRET_KEY": "t", "DATABASE_URL": url, "SEED_DEMO": False,
            "WATCHDOG_INTERVAL": 0, "RELAY_LISTEN": False}


def test_the_migrations_are_numbered_in_order():
    assert ALL[:2] == ["0001_initial", "0002_stop_requested"]
    numbers = [int(name.split("_", 1)[0]) for name in ALL]
    assert numbers == list(range(1, len(ALL) + 1))


def test_a_database_from_before_migrations_upgrades_in_place(tmp_path):
    url = database_url(tmp_path)
    # The schema as the first release created it, with no migration history.
    init_db(url)
    runner = migration_runner()
    with db.connection_context():
        runner.up(target="0001_initial")
        runner.History.drop_table()
        db.execute_sql(
            "INSERT INTO message (room, author, role, status, body, created_at) "
            "VALUES ('main', 'Ann', 'user', 'complete', 'kept', '2026-01-01 00:00:00')"
        )
        assert "stop_requested" not in [c.name for c in db.get_columns("message")]
    close_pool()

    app = create_app(config(url))
    try:
        with app.app_context(), db.connection_context():
            assert "stop_requested" in [c.name for c in db.get_columns("message")]
            message = Message.get()
            assert (message.body, message.stop_requested) == ("kept", False)
            assert [m.name for m in migration_runner().status() if m.applied] == ALL
            assert pending_migrations() == []
        result = app.test_cli_runner().invoke(args=["migrate"])
        assert result.exit_code == 0, result.output
        assert "Schema up to date: {}.".format(", ".join(ALL)) in result.output
    finally:
        close_pool()


def test_migrating_again_changes_nothing(tmp_path):
    url = database_url(tmp_path)
    app = create_app(config(url))
    try:
        with app.app_context(), db.connection_context():
            Message.create(room="main", author="Bo", role="user", body="hello")
            before = {c.name for c in db.get_columns("message")}
            History = migration_runner().History
            history = list(History.select().order_by(History.name))
        again = create_app(config(url))
        with again.app_context(), db.connection_context():
            assert {c.name for c in db.get_columns("message")} == before
            runner = migration_runner()
            assert [(h.name, h.applied) for h in runner.History.select().order_by(runner.History.name)] == [
                (h.name, h.applied) for h in history
            ]
            assert Message.select().count() == 1
        # A pending migration is reported as such before it runs.
        with db.connection_context():
            runner.History.delete().where(runner.History.name == ALL[-1]).execute()
        assert pending_migrations() == [ALL[-1]]
    finally:
        close_pool()


def test_replies_from_before_generation_ms_upgrade_and_show_no_pace(tmp_path):
    """0006 adds ``message.generation_ms``: older replies have none, so their
    footer shows no tokens/s, and new replies store theirs."""
    url = database_url(tmp_path)
    init_db(url)
    with db.connection_context():
        migration_runner().up(target="0005_name_change")
        assert "generation_ms" not in [c.name for c in db.get_columns("message")]
        db.execute_sql(
            "INSERT INTO message (room, author, role, status, body, created_at, model, prompt_tokens,"
            " completion_tokens, ttft_ms, stop_requested) VALUES ('lobby', 'gpt', 'assistant', 'complete',"
            " 'old answer', '2026-01-01 00:00:00', 'm', 5, 40, 120, {})".format(db.param),
            (False,),
        )
    close_pool()

    app = create_app(config(url))
    try:
        with app.test_request_context(), db.connection_context():
            assert "generation_ms" in [c.name for c in db.get_columns("message")]
            assert "0006_generation_ms" in [m.name for m in migration_runner().status() if m.applied]
            old = Message.get()
            assert (old.body, old.generation_ms, old.tokens_per_second) == ("old answer", None, None)
            from chat.render.rendering import render_message

            html = render_message(old)
            assert "40 completion tokens" in html and "tokens/s" not in html and "None" not in html
            Message.update(generation_ms=2000).where(Message.id == old.id).execute()
            assert Message.get_by_id(old.id).tokens_per_second == 20.0
    finally:
        close_pool()
