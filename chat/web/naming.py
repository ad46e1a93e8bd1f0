"""Changing one's name from the top bar: over htmx the name area is swapped
in place; without JavaScript the form posts and redirects back, a refusal
carried through the redirect."""

from flask import current_app
from flask import flash
from flask import get_flashed_messages
from flask import redirect
from flask import render_template
from flask import request
from flask import session

from chat.names import clean_name
from chat.rooms import DEFAULT_ROOM
from chat.rooms import room_url
from chat.web.blueprint import bp
from chat.web.blueprint import chat
from chat.web.limits import Refused
from chat.web.limits import check_name_change
from chat.web.limits import record_name_change
from chat.web.visitor import current_name
from chat.web.visitor import session_key

# Flash categories that carry a refused name change through the redirect.
NAME_ERROR = "name-error"


NAME_DRAFT = "name-draft"


def local_path(value):
    """``value`` if it is a path on this site (the page a form came from), else the chat page."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value and value.isprintable():
        return value
    return room_url(DEFAULT_ROOM)


@bp.app_template_global()
def flashed_name_form():
    """(error, draft) of a name change refused without JavaScript, once; else (None, "")."""
    errors = get_flashed_messages(category_filter=[NAME_ERROR])
    drafts = get_flashed_messages(category_filter=[NAME_DRAFT])
    return (errors[0], drafts[0] if drafts else "") if errors else (None, "")


def name_fragment(status=200, **context):
    """The top bar's name area (``_name.html``) alone, for htmx to swap in."""
    return render_template("_name.html", me=current_name(), **context), status


@bp.post("/name")
def change_name():
    """Change this session's name. Messages already posted keep the name they
    were posted with (each stores its author); new ones carry the new name.
    Other pages are not told: the name shows when this person next posts."""
    is_htmx = request.headers.get("HX-Request") == "true"
    raw = request.form.get("name")
    next_path = local_path(request.form.get("next"))
    try:
        if raw is None:
            raise Refused("The form is missing its name field.", 400)
        name = clean_name(raw)
        if name != current_name():
            check_name_change(session_key(), current_app.config)
            record_name_change(session_key())
            session["name"] = name
            chat()["presence"].rename(session_key(), name)
    except Refused as exc:
        draft = (raw or "")[:200]  # what was typed, bounded: it may travel in the cookie
        if is_htmx:
            return name_fragment(exc.status, name_error=exc.text, name_draft=draft, next_path=next_path)
        flash(exc.text, NAME_ERROR)
        flash(draft, NAME_DRAFT)
        return redirect(next_path, 303)
    if is_htmx:
        return name_fragment(changed=True, next_path=next_path)
    return redirect(next_path, 303)
