"""A room's own assistant: what it is told to be (instructions: a persona, a
language, a focus) and, where the server offers several, which model answers
there (from the server's ``/models``, the server's default first). Set from
the room's menu, stored on the room, shown on its pages (the model by the
hint in the top bar, the instructions in the menu), and sent with every
question asked there. Checked and rate limited like names; every page of the
room hears of a change at once, over its socket.
"""
import unicodedata

from flask import abort
from flask import current_app
from flask import redirect
from flask import render_template
from flask import request

from chat import rooms
from chat.fanout.hub import Event
from chat.llm.providers import offered_models
from chat.rooms import room_url
from chat.web.blueprint import bp
from chat.web.blueprint import chat
from chat.web.limits import Refused
from chat.web.limits import check_assistant_change
from chat.web.limits import record_assistant_change
from chat.web.visitor import session_key
from models import Room
from models import db
from models import utcnow

MAX_INSTRUCTIONS = 2000


def settings_of(room):
    """(instructions or None, model or None) of ``room``'s assistant."""
    row = Room.get_or_none(Room.name == room)
    return (row.instructions, row.model) if row is not None else (None, None)


def model_for(room):
    """The model that answers in ``room``: its own, or the server's default."""
    return settings_of(room)[1] or getattr(chat()["generator"].provider, "model", None)


def clean_instructions(raw):
    """Instructions as stored (None: the default assistant), or ``Refused``."""
    text = (raw or "").replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co"))
    text = text.strip()
    if len(text) > MAX_INSTRUCTIONS:
        raise Refused(
            "Those instructions are {:,} characters long; the limit is {:,}.".format(len(text), MAX_INSTRUCTIONS), 413
        )
    return text or None


def clean_model(raw, offered, current):
    """The chosen model as stored (None: the server's default), or ``Refused``."""
    name = (raw or "").strip()
    if not name or name == (offered[0] if offered else None):
        return None
    if name in offered or name == current:  # the room's own, even if the list cannot be read now
        return name
    raise Refused(
        "“{}” is not a model this server offers. Choose one of: {}.".format(name[:80], ", ".join(offered[:20])), 400
    )


def context(room, instructions=None, model=None, error=None, draft=None, saved=False):
    """What ``_assistant.html`` draws for ``room`` (never waiting on the
    model's server for its list of models)."""
    provider = chat()["generator"].provider
    offered = offered_models(provider, wait=False)
    default = getattr(provider, "model", None) or "the default model"
    return dict(
        room=room, instructions=instructions, model=model or default, chosen=model, default=default,
        offered=offered, assistant_error=error, assistant_draft=instructions if draft is None else draft,
        saved=saved, max_instructions=MAX_INSTRUCTIONS,
    )


def announce(room, instructions, model):
    """Every page of ``room`` shows its new assistant (this process's pages
    at once, the others' through the relay)."""
    state = chat()
    html = render_template("_assistant.html", swap=True, **context(room, instructions, model))
    state["hub"].publish(Event("room", room, 0, html=html))


def room_or_404(name):
    if not rooms.is_valid(name):
        abort(404, description="There is no room “{}”. {}".format(name[:40], rooms.RULES))
    return name


@bp.get("/r/<name>/assistant")
def assistant_page(name):
    """The room's assistant on a page of its own (the menu's form without JavaScript)."""
    room = room_or_404(name)
    return render_template("assistant.html", **context(room, *settings_of(room)))


@bp.post("/r/<name>/assistant")
def set_assistant(name):
    """Store the room's assistant, and tell the room's pages."""
    room = room_or_404(name)
    is_htmx = request.headers.get("HX-Request") == "true"
    raw = request.form.get("instructions")
    current = settings_of(room)
    try:
        if raw is None or "model" not in request.form:
            raise Refused("The form is missing its instructions or model field.", 400)
        instructions = clean_instructions(raw)
        model = clean_model(request.form["model"], offered_models(chat()["generator"].provider), current[1])
        if (instructions, model) != current:
            check_assistant_change(session_key(), current_app.config)
            now = utcnow()
            with db.atomic():
                Room.insert(
                    name=room, created_at=now, active_at=now, messages=0, instructions=instructions, model=model
                ).on_conflict(
                    conflict_target=[Room.name], update={Room.instructions: instructions, Room.model: model}
                ).execute()
                record_assistant_change(session_key(), room)
                chat()["relay"].announce("room", 0, page=room)
            announce(room, instructions, model)
    except Refused as exc:
        shown = context(room, *current, error=exc.text, draft=raw or "")
        template = "_assistant.html" if is_htmx else "assistant.html"
        return render_template(template, **shown), exc.status
    if is_htmx:
        return render_template("_assistant.html", **context(room, instructions, model, saved=True))
    return redirect(room_url(room), 303)


def refresh(room):
    """Another process changed ``room``'s assistant: show it on this process's pages."""
    with db.connection_context():
        announce(room, *settings_of(room))
