"""The application factory: configuration, database, routes, sockets."""
import os
import re
import secrets
import socket

import click
import gevent
from flask import Flask
from flask import request
from flask.sessions import SecureCookieSessionInterface
from flask_sock import Sock
from werkzeug.middleware.proxy_fix import ProxyFix

from chat.fanout.frames import decline_compression
from chat.fanout.hub import Hub
from chat.fanout.presence import Presence
from chat.fanout.reading import NoReaderThread
from chat.fanout.relay import Relay
from chat.llm.providers import make_provider
from chat.llm.providers import offered_models
from chat.render.rendering import name_hue
from chat.render.rendering import render_markdown
from chat.rooms import room_url
from chat.stream import watchdog
from chat.stream.generation import Generator
from chat.web import assistant
from chat.web import editing  # noqa: F401  (its routes register on the blueprint)
from chat.web import errors
from chat.web import export  # noqa: F401
from chat.web import messages  # noqa: F401  (its routes register on the blueprint)
from chat.web import naming  # noqa: F401
from chat.web import pages
from chat.web.blueprint import bp
from chat.web.security import add_security_headers
from chat.web.security import check_csrf
from chat.web.security import csrf_token
from chat.web.security import require_utf8_form
from models import applied_migrations
from models import db
from models import init_db
from models import migrate

# Settings read from the environment, with how to parse each.
ENV_SETTINGS = {
    "SECRET_KEY": str,
    "DATABASE_URL": str,
    "OPENAI_API_KEY": str,
    "OPENAI_BASE_URL": str,
    "OPENAI_MODEL": str,
    "LLM": str,
    "LLM_PORT": int,
    "LLM_LOCAL_MODEL": str,
    "LLM_CONTEXT_TOKENS": int,
    "LLM_RETRY_SECONDS": float,
    "SEED_DEMO": lambda v: v.lower() not in ("0", "false", "no", "off", ""),
    "MAX_MESSAGE_LENGTH": int,
    "MAX_TOKENS": int,
    "LLM_TIMEOUT": float,
    "LLM_CONNECT_TIMEOUT": float,
    "DEMO_TOKEN_DELAY": float,
    "DEMO_FIRST_TOKEN_DELAY": float,
    "CHUNK_SIZE_CAP": int,
    "CHUNK_TIME_CAP": float,
    "SSE_KEEPALIVE": float,
    "STREAM_FRAME_TIME": float,
    "STREAM_FRAME_TEXT": int,
    "POSTS_PER_MINUTE": int,
    "ASKS_PER_MINUTE": int,
    "REPLIES_PER_SESSION": int,
    "NAME_CHANGES_PER_HOUR": int,
    "ASSISTANT_CHANGES_PER_HOUR": int,
    "MAX_CONCURRENT_REPLIES": int,
    "HEARTBEAT_INTERVAL": float,
    "SOCKET_QUEUE_SIZE": int,
    "SOCKET_PING_INTERVAL": float,
    "FANOUT_MODE": str,
    "WATCHDOG_INTERVAL": float,
    "INTERRUPT_AFTER": float,
    "DATABASE_POOL_SIZE": int,
    "REMOTE_STOP_WAIT": float,
    "DB_RETRY_FOR": float,
}


def _safe_url(url):
    """A database URL without its password, for messages."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def _secret_key(instance_path):
    """A key kept in the instance folder, so sessions survive restarts and every
    worker of one machine agrees (deployments set SECRET_KEY instead)."""
    path = os.path.join(instance_path, "secret_key")
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        key = secrets.token_hex(32)
        with open(path, "w") as f:
            f.write(key)
        return key


class SessionInterface(SecureCookieSessionInterface):
    """The session cookie is ``Secure`` whenever the page is served over HTTPS."""

    def get_cookie_secure(self, app):
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def create_app(test_config=None):
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.from_mapping(
        DATABASE_URL="sqlite:///" + os.path.join(app.instance_path, "chat.db"),
        OPENAI_API_KEY=None,
        OPENAI_BASE_URL=None,
        OPENAI_MODEL="gpt-4o-mini",
        LLM=None,  # "local": the Procfile's llm process (llama.cpp) instead of OpenAI
        LLM_PORT=8001,
        LLM_LOCAL_MODEL=None,  # with LLM=local: "smollm2" (None: the default) or "gemma3"
        LLM_CONTEXT_TOKENS=None,  # the model's window; None: 4096 with LLM=local, else unlimited
        LLM_RETRY_SECONDS=None,  # how long to retry a server that is starting; None: 20 s local, else 0
        SEED_DEMO=True,
        PAGE_MESSAGES=50,  # per page load, and per load of older ones
        ROOM_LIST_SIZE=20,
        CONTEXT_MESSAGES=20,
        MAX_MESSAGE_LENGTH=4000,
        MAX_TOKENS=None,  # a reply's length cap; None: 1024, or 256 with LLM=local
        LLM_TIMEOUT=60.0,
        LLM_CONNECT_TIMEOUT=10.0,
        DEMO_TOKEN_DELAY=0.03,
        DEMO_FIRST_TOKEN_DELAY=0.4,
        CHUNK_SIZE_CAP=300,
        CHUNK_TIME_CAP=1.0,
        SSE_KEEPALIVE=15.0,
        # A burst of tokens is held up to STREAM_FRAME_TIME seconds, until an
        # event carries STREAM_FRAME_TEXT characters of text (docs/benchmarks.md has
        # the bytes each choice costs against the latency it adds).
        STREAM_FRAME_TIME=0.024,
        STREAM_FRAME_TEXT=10,
        POSTS_PER_MINUTE=20,
        ASKS_PER_MINUTE=6,
        REPLIES_PER_SESSION=1,
        NAME_CHANGES_PER_HOUR=10,
        ASSISTANT_CHANGES_PER_HOUR=10,
        MAX_CONCURRENT_REPLIES=100,
        HEARTBEAT_INTERVAL=15.0,
        SOCKET_QUEUE_SIZE=1024,
        FANOUT_MODE="append",
        WATCHDOG_INTERVAL=5.0,
        INTERRUPT_AFTER=45.0,
        DATABASE_POOL_SIZE=20,
        REMOTE_STOP_WAIT=3.0,
        DB_RETRY_FOR=15.0,
        RELAY_LISTEN=True,
        MAX_CONTENT_LENGTH=64 * 1024,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SOCKET_PING_INTERVAL=25,
    )
    for key, parse in ENV_SETTINGS.items():
        if os.environ.get(key):
            app.config[key] = parse(os.environ[key])
    if test_config:
        app.config.update(test_config)
    # Incoming frames stay small. simple-websocket starts no reader greenlet:
    # a page socket reads its frames from an event-loop callback, and every
    # frame it sends, pings and pongs included, goes through its one writer
    # (sockets.py); two senders on one socket could interleave a frame into
    # one being written.
    app.config["SOCK_SERVER_OPTIONS"] = {"max_message_size": 4096, "thread_class": NoReaderThread}
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _secret_key(app.instance_path)

    init_db(app.config["DATABASE_URL"], app.config["DATABASE_POOL_SIZE"])
    migrate()

    hub = Hub(queue_size=app.config["SOCKET_QUEUE_SIZE"])
    worker_id = "{}:{}:{}".format(socket.gethostname()[:40], os.getpid(), secrets.token_hex(3))
    relay = Relay(app, hub, None, app.config["DATABASE_URL"])
    generator = Generator(app, hub, make_provider(app.config), worker_id, relay)
    relay.generator = generator
    presence = relay.presence = Presence(app, hub, worker_id, relay)
    relay.on_room = assistant.refresh
    app.extensions["chat"] = {"hub": hub, "generator": generator, "relay": relay, "presence": presence}
    if app.config["RELAY_LISTEN"]:
        relay.start()  # only listens on PostgreSQL
    # A room's menu lists the models the server offers: read them once now,
    # so that no page waits for them.
    gevent.spawn(offered_models, generator.provider)

    if app.config["WATCHDOG_INTERVAL"]:
        gevent.spawn(watchdog.run, app, app.config["WATCHDOG_INTERVAL"], app.config["INTERRUPT_AFTER"])

    app.register_blueprint(bp)
    errors.register(app)  # every refusal, whichever layer makes it, in words
    sock = Sock(app)
    sock.route("/ws", endpoint="socket")(pages.socket_route)
    app.before_request(decline_compression)

    # Queries connect lazily, so a long-lived socket holds no connection.
    app.before_request(require_utf8_form)  # before anything reads the form
    app.before_request(check_csrf)

    @app.teardown_request
    def teardown_request(exc):
        if not db.is_closed():
            db.close()

    app.after_request(add_security_headers)
    app.session_interface = SessionInterface()
    # Behind the platform's router: trust its X-Forwarded-Proto (one hop).
    app.wsgi_app = ProxyFix(app.wsgi_app, x_proto=1)

    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["room_url"] = room_url
    app.jinja_env.filters["markdown"] = render_markdown
    app.jinja_env.filters["hue"] = lambda name: name_hue(name) % 12

    def report_schema():
        migrate()  # the factory has applied them already, unless another process raced it
        click.echo("Schema up to date: {}.".format(", ".join(applied_migrations())))
        click.echo("Database ready: {}".format(_safe_url(app.config["DATABASE_URL"])))

    # Both apply pending migrations (the app also does at every start).
    app.cli.command("init-db", help="Create the database schema, or bring it up to date.")(report_schema)
    app.cli.command("migrate", help="Apply pending schema migrations.")(report_schema)

    return app
