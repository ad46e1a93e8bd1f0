"""A room's whole conversation as a download: Markdown (``/r/<name>.md``) to
read or paste elsewhere, JSON (``/r/<name>.json``) for programs.

Both stream: rows are read a batch at a time by id (keyset, never OFFSET),
each batch on a connection of its own that is given back before the batch is
sent, so a room of any size exports in constant memory, and a slow download
holds no database connection while it waits on the network. A reply still
being written is exported as committed so far, and says so.
"""
import json
import re
from datetime import datetime

from flask import Response
from flask import abort

from chat import rooms
from chat.render.markdown import MD
from chat.web.blueprint import bp
from models import Message
from models import db
from models import utcnow

BATCH = 500
# What a message's export says of a reply that did not end normally.
STATUS_WORDS = {
    "streaming": "still being written",
    "failed": "failed",
    "stopped": "stopped",
    "interrupted": "interrupted",
}


def batches(room, size=BATCH):
    """Every message of ``room``, oldest first, as lists of up to ``size``
    (each message's committed text in ``.text``)."""
    after = 0
    while True:
        with db.connection_context():
            rows = list(
                Message.select()
                .where((Message.room == room) & (Message.id > after))
                .order_by(Message.id)
                .limit(size)
            )
            for message in rows:
                message.text = message.committed()[0] if message.is_streaming else message.body
        if not rows:
            return
        yield rows
        if len(rows) < size:
            return
        after = rows[-1].id


def stamp(value):
    """A stored (UTC, naive) time as ISO 8601 with its zone."""
    return value.replace(microsecond=0).isoformat() + "Z" if isinstance(value, datetime) else None


def _room_or_404(name):
    if not rooms.is_valid(name):
        abort(404, description="There is no room “{}” to export. {}".format(name[:40], rooms.RULES))
    return name


def _download(body, mimetype, filename):
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = 'attachment; filename="{}"'.format(filename)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"
    return response


# -- Markdown ---------------------------------------------------------------------


_PUNCTUATION = re.compile(r"([\\`*_\[\]<>~|#])")


def escape(text):
    """Text that Markdown shows as it is (a name with ``*`` or ``_`` in it),
    where it never starts a line (a heading's text, an emphasis)."""
    return _PUNCTUATION.sub(r"\\\1", text)


_PROBE = "end-of-reply-probe"


def closed(markdown):
    """``markdown`` with a code block it leaves open closed (a reply stopped
    mid-block would otherwise swallow the rest of the export)."""
    probe = markdown + "\n\n" + _PROBE
    tokens = [t for t in MD.parse(probe) if t.level == 0 and t.nesting >= 0]
    last = tokens[-1] if tokens else None
    if last is not None and last.type == "fence" and last.content.rstrip("\n").endswith(_PROBE):
        return markdown + "\n" + last.markup
    return markdown


def markdown_message(message):
    """One message as a Markdown section: who and when, then what they wrote
    (a person's text as they typed it, quoted so that their ``#`` or ``---``
    cannot become the export's own headings; a reply's Markdown as is)."""
    who = escape(message.author)
    if message.role == "assistant" and message.model:
        who += " ({})".format(escape(message.model))
    head = "### {} · {} UTC".format(who, message.created_at.strftime("%Y-%m-%d %H:%M"))
    state = STATUS_WORDS.get(message.status)
    if state:
        head += " · *{}*".format(state)
    if message.edited_at:
        head += " · *edited*"
    text = message.text.rstrip()
    if message.role == "user":
        text = "\n".join("> " + line if line else ">" for line in text.split("\n"))
    else:
        text = closed(text)
    parts = [head, text] if text else [head]
    if message.error and message.status != "complete":
        parts.append("*{}*".format(escape(message.error)))
    if message.note:
        parts.append("*{}*".format(escape(message.note)))
    return "\n\n".join(parts) + "\n\n"


def markdown_export(room):
    yield "# #{}\n\nExported {} UTC.\n\n".format(room, utcnow().strftime("%Y-%m-%d %H:%M"))
    for rows in batches(room):
        yield "".join(markdown_message(m) for m in rows)


@bp.get("/r/<name>.md")
def export_markdown(name):
    room = _room_or_404(name)
    return _download(markdown_export(room), "text/markdown", "{}.md".format(room))


# -- JSON -------------------------------------------------------------------------

FIELDS = ("id", "author", "role", "status", "model", "reply_to", "error", "note")


def json_message(message):
    row = {field: getattr(message, field + "_id" if field == "reply_to" else field) for field in FIELDS}
    row["body"] = message.text
    row["created_at"] = stamp(message.created_at)
    row["completed_at"] = stamp(message.completed_at)
    row["edited_at"] = stamp(message.edited_at)
    if message.role == "assistant" and message.status == "complete":
        row["usage"] = {
            "prompt_tokens": message.prompt_tokens,
            "completion_tokens": message.completion_tokens,
            "first_token_ms": message.ttft_ms,
            "generation_ms": message.generation_ms,
        }
    return json.dumps(row, ensure_ascii=False)


def json_export(room):
    """``{"room", "exported_at", "messages": [...]}``, written a batch at a time."""
    yield '{{"room": {}, "exported_at": {}, "messages": ['.format(json.dumps(room), json.dumps(stamp(utcnow())))
    first = True
    for rows in batches(room):
        lead = "\n" if first else ",\n"
        first = False
        yield lead + ",\n".join(json_message(m) for m in rows)
    yield "\n]}\n"


@bp.get("/r/<name>.json")
def export_json(name):
    room = _room_or_404(name)
    return _download(json_export(room), "application/json", "{}.json".format(room))


# -- one message ------------------------------------------------------------------


@bp.get("/messages/<int:message_id>.md")
def message_source(message_id):
    """What a message's author wrote, as they wrote it (a reply's Markdown, as
    committed so far while it streams): what its Copy button copies."""
    message = Message.get_or_none(Message.id == message_id)
    if message is None:
        abort(404, description="There is no such message.")
    text = message.committed()[0] if message.is_streaming else message.body
    response = Response(text, mimetype="text/markdown")
    response.headers["Cache-Control"] = "no-store"
    return response
