"""What a person sees when a request is refused, whichever layer refuses it:
Flask's cap on a request's size (413), the UTF-8 check (400), the CSRF check
(403), a route's own ``abort`` (404, 409, a rate limit's 429), or an exception
nobody expected (500). Over htmx the reason goes where the form shows errors
(under the composer, or inside the name form) and what was typed stays in its
field; a refused CSRF token comes back with a fresh one, so pressing Send again
works. Without JavaScript the composer's post gets the chat page again with the
error and the draft in the composer, and anything else a short page that says
what happened and links back. A page that cannot be drawn (the database is
down) still shows the draft, in a form that sends it again."""
from urllib.parse import unquote

from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import RequestEntityTooLarge

from chat import rooms
from chat.rooms import DEFAULT_ROOM
from chat.rooms import room_url
from chat.web.messages import composer_error
from chat.web.naming import NAME_DRAFT
from chat.web.naming import NAME_ERROR
from chat.web.naming import local_path
from chat.web.naming import name_fragment
from chat.web.pages import render_page
from chat.web.security import CSRF_HEADER
from chat.web.security import CsrfRefused
from chat.web.security import csrf_token

SERVER_ERROR = "Something went wrong on the server (error {}). If your message does not appear, send it again."
EXPIRED_POST = "This page had expired, so your message was not sent. It is still here: press Send again."
# Without JavaScript the post may also be another site's form (htmx's headers
# cannot come from one): say so, since the draft shown is what that form sent.
FOREIGN_POST = (
    "This form had expired or did not come from this site, so nothing was sent. "
    "Check the message below and press Send again if it is yours."
)
EXPIRED_CONTROL = "This page had expired, so that was not done. Press it again."
EXPIRED_NAME = "This form had expired, so your name was not changed. Press Save again."
FOREIGN_NAME = (
    "This form had expired or did not come from this site, so your name was not changed. "
    "Press Save again if this is the name you want."
)


def register(app):
    """Answer every HTTP error (Flask turns an unhandled exception into a 500)
    here, and mark what the app refuses: a page's script words a refusal that
    lacks the mark (a proxy's 502) itself instead of showing that page."""
    app.register_error_handler(HTTPException, handle)
    app.after_request(mark_refusal)


def mark_refusal(response):
    if response.status_code >= 400:
        response.headers["X-Refusal"] = "worded"
    return response


def size(n):
    """A request's size for people: "200 KB", "1.5 MB"."""
    if n >= 1024 * 1024:
        return "{:.1f} MB".format(n / (1024 * 1024))
    return "{:,} KB".format(max(1, round(n / 1024)))


def describe(exc):
    """The sentence that tells the person what happened."""
    if isinstance(exc, RequestEntityTooLarge):
        sent = request.content_length
        what = "That message is too large to send" if request.endpoint == "chat.post_message" else "That is too large"
        return "{}{}; a message can be up to {:,} characters.".format(
            what, " ({})".format(size(sent)) if sent else "", current_app.config["MAX_MESSAGE_LENGTH"]
        )
    if isinstance(exc, CsrfRefused):
        htmx = request.headers.get("HX-Request") == "true"
        if request.endpoint == "chat.change_name":
            return EXPIRED_NAME if htmx else FOREIGN_NAME
        if request.endpoint == "chat.post_message":
            return EXPIRED_POST if htmx else FOREIGN_POST
        return EXPIRED_CONTROL if htmx else exc.description
    if exc.code >= 500 and exc.description == type(exc).description:
        # An exception nobody expected (or a 5xx without words of its own):
        # never its internals. A 503 a route words itself ("@gpt is busy")
        # keeps its words.
        return SERVER_ERROR.format(exc.code)
    return exc.description


def form_value(name, default=""):
    """A field of the posted form, or ``default`` when the form cannot be read
    (a body over the size cap raises again each time it is asked for)."""
    try:
        value = request.form.get(name)
    except HTTPException:
        return default
    return default if value is None else value


def handle(exc):
    """The response to ``exc``: where the person sees the words, and what they typed."""
    text = describe(exc)
    status = exc.code
    htmx = request.headers.get("HX-Request") == "true"
    if request.method != "POST":
        if htmx:  # a fragment the page asked for (older messages): it says it failed
            return render_template("_composer_error.html", error=text), status
        return render_template("error.html", error=text, status=status, back=room_url(DEFAULT_ROOM)), status
    if request.endpoint == "chat.change_name":
        response = name_refused(text, status, htmx)
    elif htmx:
        response = composer_error(text, status)
    elif request.endpoint == "chat.post_message":
        response = composer_page(exc, text, status)
    else:
        response = render_template("error.html", error=text, status=status, back=back_path()), status
    if isinstance(exc, CsrfRefused):
        response = current_app.make_response(response)
        response.headers[CSRF_HEADER] = csrf_token()  # the page's forms take it (static/js/composer.js)
    return response


def name_refused(text, status, htmx):
    next_path = local_path(form_value("next"))
    draft = form_value("name")[:200]
    if htmx:
        return name_fragment(status, name_error=text, name_draft=draft, next_path=next_path)
    flash(text, NAME_ERROR)
    flash(draft, NAME_DRAFT)
    return redirect(next_path, 303)


def composer_page(exc, text, status):
    """The room's page again, the refusal under the composer and the message in it."""
    room = form_value("room", None) or referred_room()
    room = room if rooms.is_valid(room) else DEFAULT_ROOM
    draft = form_value("body")
    if isinstance(exc, RequestEntityTooLarge):
        text += " It was too large to keep here: shorten it and paste it again."
    if status >= 500:
        try:
            return render_page(room, draft=draft, error=text, status=status)
        except Exception:  # noqa: BLE001 - the page needs the database; the draft does not
            current_app.logger.exception("could not draw the page for a failed post")
            page = render_template("error.html", error=text, status=status, back=room_url(room), room=room, draft=draft)
            return page, status
    return render_page(room, draft=draft, error=text, status=status)


def referrer_path():
    """The path of the page of this site the request came from, or None."""
    referrer = request.referrer or ""
    host = request.host_url
    return local_path("/" + referrer[len(host):]) if referrer.startswith(host) else None


def referred_room():
    """The room whose page posted a form that cannot be read (too large)."""
    path = (referrer_path() or "").split("?")[0].split("#")[0]
    return unquote(path[len("/r/"):]) if path.startswith("/r/") else DEFAULT_ROOM


def back_path():
    """Where a refused control's page links back to: the page it came from."""
    return referrer_path() or room_url(DEFAULT_ROOM)
