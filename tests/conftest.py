"""Shared fixtures: an app on a temporary SQLite file with a scripted model,
a fake OpenAI-compatible server, and a real gunicorn+gevent server on loopback."""
import os
import re
import sys

import gevent
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


from app import create_app  # noqa: E402
from chat.llm.tokens import TokenStream  # noqa: E402
from support.fake_openai import FakeOpenAI  # noqa: E402
from support.pg import PostgresServer  # noqa: E402
from support.server import GunicornServer  # noqa: E402
from support.server import free_port  # noqa: E402


class ScriptedProvider:
    """A model for unit tests: replies with the token lists given to ``enqueue``."""

    model = "scripted"

    def __init__(self):
        self.replies = []
        self.requests = []

    def enqueue(self, tokens):
        self.replies.append(list(tokens))

    def stream(self, messages):
        self.requests.append(messages)
        tokens = self.replies.pop(0) if self.replies else ["Hello", " there", "."]
        stream = TokenStream(iter(tokens))
        stream.usage = {"prompt_tokens": 3, "completion_tokens": len(tokens)}
        return stream


# Which database the suite runs on: "sqlite" (the default) or "postgres"
# (scripts/test.sh runs the suite once on each).
BACKEND = os.environ.get("TEST_DATABASE", "sqlite")
_postgres = None
_databases = {}


def postgres_server():
    """The suite's PostgreSQL server, started on first use."""
    global _postgres
    if _postgres is None:
        _postgres = PostgresServer().start()
    return _postgres


def pytest_sessionfinish(session, exitstatus):
    if _postgres is not None:
        _postgres.destroy()


def database_url(tmp_path, backend=None):
    """The test's database (one per test; servers of one test share it)."""
    backend = backend or BACKEND
    key = (str(tmp_path), backend)
    if key not in _databases:
        if backend == "postgres":
            _databases[key] = postgres_server().create_database()
        else:
            _databases[key] = "sqlite:///{}".format(tmp_path / "test.db")
    return _databases[key]


@pytest.fixture
def app(tmp_path):
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test",
            "DATABASE_URL": database_url(tmp_path),
            "SEED_DEMO": False,
            "DEMO_TOKEN_DELAY": 0.001,
            "DEMO_FIRST_TOKEN_DELAY": 0.0,
            "WATCHDOG_INTERVAL": 0,
            "RELAY_LISTEN": False,
        }
    )
    app.extensions["chat"]["generator"].provider = ScriptedProvider()
    yield app
    # Replies still running belong to this app's database: settle them now.
    with app.app_context():
        app.extensions["chat"]["generator"].shutdown(0)
    close_pool()


def close_pool():
    """Close every pooled connection of the app's database (it is re-bound per test)."""
    from models import db

    if hasattr(db.obj, "close_all"):
        db.obj.close_all()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def provider(app):
    return app.extensions["chat"]["generator"].provider


def csrf_from(html):
    """The CSRF token a page carries."""
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


@pytest.fixture
def fake_llm():
    with FakeOpenAI() as server:
        yield server


class LiveServer(GunicornServer):
    """The app on a loopback port, on this test's database (``backend``:
    "sqlite" or "postgres", the suite's by default)."""

    def __init__(self, tmp_path, env=None, workers=1, graceful=5, port=None, backend=None, prefix=()):
        self.database_url = database_url(tmp_path, backend)
        settings = {
            "DATABASE_URL": self.database_url,
            "SECRET_KEY": "live-test",
        }
        settings.update(env or {})
        port = port or free_port()
        log_path = str(tmp_path / "gunicorn-{}.log".format(port))
        super().__init__(log_path, settings, workers=workers, graceful=graceful, port=port, prefix=prefix)


def fake_model_server(tmp_path, fake_llm, **env):
    """A started server whose model is ``fake_llm`` (``server.llm``), with more settings."""
    settings = {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": fake_llm.base_url, "OPENAI_MODEL": "fake-model"}
    settings.update(env)
    server = LiveServer(tmp_path, settings).start()
    server.llm = fake_llm
    return server


@pytest.fixture
def live_server(tmp_path, fake_llm):
    """A running server whose model is the fake OpenAI-compatible server."""
    server = fake_model_server(tmp_path, fake_llm)
    yield server
    server.stop()


@pytest.fixture
def demo_server(tmp_path):
    """A running server on the built-in demo model (as the README runs it)."""
    server = LiveServer(tmp_path, {"DEMO_TOKEN_DELAY": "0.02", "DEMO_FIRST_TOKEN_DELAY": "0.2"}).start()
    yield server
    server.stop()


@pytest.fixture
def ws_open():
    """Open page sockets on any server; all are closed before servers stop
    (request this fixture after the server's)."""
    from support.live import Socket

    opened = []

    def open_socket(server, page, **kwargs):
        sock = Socket(server, page, **kwargs)
        opened.append(sock)
        return sock

    yield open_socket
    for sock in opened:
        sock.close()


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole run (each person gets a fresh context)."""
    browsing = pytest.importorskip("support.browser")
    with browsing.playwright_sync.sync_playwright() as p:
        b = browsing.launch(p)
        yield b
        b.close()


@pytest.fixture
def people(browser):
    """A factory of people (``people(server, **context_options)``: viewport,
    time zone, locale, JavaScript...); at teardown their contexts close."""
    from support.browser import Person

    made = []

    def make(server, **context_options):
        person = Person(browser, server, **context_options)
        made.append(person)
        return person

    yield make
    for person in made:
        person.close()


class PacedProvider(ScriptedProvider):
    """Scripted replies whose tokens come ``delay`` seconds apart; ``usage``
    (None: the server reports none) as a real server would send it at the end."""

    model = "paced"

    def __init__(self, delay=0.02, usage=True):
        super().__init__()
        self.delay = delay
        self.usage = usage

    def stream(self, messages):
        self.requests.append(messages)
        tokens = self.replies.pop(0) if self.replies else ["Hello", " there", "."]
        stream = TokenStream(None)

        def generate():
            for i, token in enumerate(tokens):
                if i:
                    gevent.sleep(self.delay)
                yield token
            if self.usage:
                stream.usage = {"prompt_tokens": 11, "completion_tokens": len(tokens)}

        stream._tokens = generate()
        return stream
