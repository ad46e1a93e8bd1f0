"""HTTP routes: the chat page, the composer's post (an event stream for htmx,
post-redirect-get without JavaScript) and the socket every page opens."""
import hashlib
import re
import secrets
import time
import unicodedata
from urllib.parse import parse_qsl

from faker import Faker
from flask import Blueprint
from flask import Response
from flask import abort
from flask import current_app
from flask import flash
from flask import get_flashed_messages
from flask import redirect
from flask import render_template
from flask import request
from flask import session
from gevent.queue import Empty
from markupsafe import Markup

from chat import rooms
from chat.fanout.hub import Event
from chat.fanout.relay import wait_settled
from chat.fanout.sockets import PageSocket
from chat.fanout.sockets import parse_ids
from chat.names import clean_name
from chat.render.rendering import AuthorBody
from chat.render.rendering import render_message
from chat.render.rendering import sse_event
from chat.render.rendering import upsert
from chat.rooms import DEFAULT_ROOM
from chat.rooms import room_url
from chat.stream.watchdog import settle
from chat.web.limits import Refused
from chat.web.limits import check_ask_rate
from chat.web.limits import check_name_change
from chat.web.limits import check_post
from chat.web.limits import check_reply_capacity
from chat.web.limits import record_name_change
from chat.web.limits import record_restart
from chat.web.security import same_origin
from chat.web.seeding import seed_if_empty
from models import COMPLETE
from models import RETRYABLE
from models import STOPPED
from models import STREAMING
from models import Message
from models import Room
from models import db

bp = Blueprint("chat", __name__)

_MENTION = re.compile(r"(?<![\w@])@gpt\b", re.IGNORECASE)
PAGE_ID = re.compile(r"[0-9a-f]{1,32}")
ID = re.compile(r"[0-9]{1,18}")  # a message id in a URL (ASCII digits: isdigit() also takes "²")
_faker = None


def chat():
    """The app's shared state: hub, generator."""
    return current_app.extensions["chat"]


def current_name():
    """This browser session's generated name, made on first visit."""
    global _faker
    name = session.get("name")
    if not name:
        if _faker is None:
            _faker = Faker()
        name = session["name"] = _faker.name()
    return name


def session_key():
    """A digest of this browser session's random id: marks its own messages."""
    sid = session.get("sid")
    if sid is None:
        sid = session["sid"] = secrets.token_hex(16)
    return hashlib.sha256(sid.encode()).hexdigest()[:24]


def page_id(value):
    """A page's id as pages send it (hex, as ``render_page`` makes it), or None."""
    return value if value and PAGE_ID.fullmatch(value) else None


def clean_body(raw, max_length):
    """Normalise a posted message or raise ``Refused``."""
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(
        ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co")
    ).strip()
    if not text:
        raise Refused("Write something first: empty messages are not sent.", 400)
    if len(text) > max_length:
        raise Refused(
            "That message is {:,} characters long; the limit is {:,}.".format(len(text), max_length), 413
        )
    return text


@bp.before_app_request
def require_utf8_form():
    """Refuse a form body that is not UTF-8 (Werkzeug would quietly re-quote or
    drop the bad bytes, storing something the person never typed). Runs before
    anything reads the form."""
    if request.method != "POST" or request.mimetype != "application/x-www-form-urlencoded":
        return None
    raw = request.get_data(cache=True)  # the form is then parsed from this copy
    try:
        parse_qsl(raw.decode("ascii"), encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        abort(400, description="The message could not be read: it is not valid UTF-8 text.")
    return None


def asks_model(text):
    return _MENTION.search(text) is not None


def before_id():
    """The ``before`` query argument (older messages than this id), or None."""
    value = request.args.get("before", "")
    return int(value) if ID.fullmatch(value) else None


@bp.get("/")
def index():
    seed_if_empty(current_app)
    return render_page(DEFAULT_ROOM, before=before_id())


@bp.get("/r/<path:name>", endpoint="room")
def show_room(name):
    """A room's page. Other spellings of a valid name redirect to the one its
    URL uses; a name that cannot be a room gets the rules and a way on."""
    try:
        canonical = rooms.clean(name)
    except Refused as exc:
        return render_rooms(error=exc.text, typed=name, status=404)
    if canonical != name or canonical == DEFAULT_ROOM:
        args = {"before": request.args["before"]} if before_id() else {}
        return redirect(room_url(canonical, **args), 301 if canonical != DEFAULT_ROOM else 302)
    return render_page(canonical, before=before_id())


@bp.get("/rooms")
def rooms_page():
    """The list of rooms with recent activity, and the form to join or create
    one (``?name=``: go there, or say what is wrong with the name)."""
    typed = request.args.get("name")
    if typed is None:
        return render_rooms()
    try:
        name = rooms.clean(typed)
    except Refused as exc:
        return render_rooms(error=exc.text, typed=typed[:200], status=exc.status)
    return redirect(room_url(name), 303)


def render_rooms(error=None, typed="", status=200):
    html = render_template(
        "rooms.html",
        rooms=Room.active(current_app.config["ROOM_LIST_SIZE"]),
        room_error=error,
        room_typed=typed,
        me=current_name(),
    )
    return html, status


@bp.get("/r/<name>/older")
def older(name):
    """Messages of room ``name`` older than ``?before=``, for the top of its page
    (htmx loads them when the reader scrolls up to them)."""
    if not rooms.is_valid(name):
        abort(404, description=rooms.RULES)
    before = before_id()
    if before is None:
        abort(400, description="Say which message to load older messages before (?before=ID).")
    messages, more = page_of(name, before)
    html = render_template("_older.html", room=name, messages=messages, bodies=bodies_of(messages), more=more)
    return html


def page_of(room, before=None):
    """The messages a page of ``room`` shows (those before id ``before``), and
    whether older ones exist."""
    size = current_app.config["PAGE_MESSAGES"]
    messages = Message.recent(room, size + 1, before=before)
    more = len(messages) > size
    return messages[-size:] if more else messages, more


def bodies_of(messages):
    """The committed text of each reply still streaming (its body is empty until it ends)."""
    return {m.id: m.committed()[0] for m in messages if m.is_streaming}


def render_page(room, draft="", error=None, status=200, before=None):
    messages, more = page_of(room, before)
    me = current_name()
    html = render_template(
        "chat.html",
        room=room,
        rooms=Room.active(current_app.config["ROOM_LIST_SIZE"]),
        messages=messages,
        more=more,
        history=before is not None,
        bodies=bodies_of(messages),
        me=me,
        page_id=secrets.token_hex(8),
        last_id=messages[-1].id if messages else 0,
        model_name=getattr(chat()["generator"].provider, "model", "demo"),
        session_key=session_key(),
        draft=draft,
        error=error,
        max_length=current_app.config["MAX_MESSAGE_LENGTH"],
    )
    return html, status


@bp.post("/messages")
def post_message():
    config = current_app.config
    is_htmx = request.headers.get("HX-Request") == "true"
    # Pages from before rooms existed post without a room: theirs was the lobby.
    room = request.form.get("room", DEFAULT_ROOM)
    try:
        if not rooms.is_valid(room):
            raise Refused("There is no room “{}”. {}".format(room[:40], rooms.RULES), 400)
        raw = request.form.get("body")
        if raw is None:
            raise Refused("The form is missing its message field.", 400)
        text = clean_body(raw, config["MAX_MESSAGE_LENGTH"])
        check_post(session_key(), asks_model(text), config)
    except Refused as exc:
        if is_htmx:
            return composer_error(exc.text, exc.status)
        room = room if rooms.is_valid(room) else DEFAULT_ROOM
        # The whole draft: the form is under MAX_CONTENT_LENGTH, and a cut one loses text.
        return render_page(room, draft=request.form.get("body", ""), error=exc.text, status=exc.status)

    page = page_id(request.form.get("page"))
    streams = is_htmx and "text/event-stream" in request.headers.get("Accept", "")
    # Only a page that reads the response itself skips the socket's copy.
    own_page = page if is_htmx else None
    me = current_name()
    state = chat()
    reply = None
    relay = state["relay"]
    with db.atomic():  # a question that asks is never stored without its reply
        user_message = Message.create(room=room, author=me, role="user", body=text, session_key=session_key())
        relay.announce("article", user_message.id, page=own_page)
        if asks_model(text):
            reply = Message.new_reply(
                user_message,
                model=getattr(state["generator"].provider, "model", None),
                page=own_page if streams else None,
                claimed_by=state["generator"].worker_id,
            )
            relay.announce("article", reply.id, page=reply.stream_page)
        Room.touch(room, 2 if reply else 1)
    user_html = render_message(user_message)
    reply_html = render_message(reply, "") if reply else Markup("")
    hub = state["hub"]
    hub.publish(Event("article", room, user_message.id, 0, upsert(user_html), own_page))
    if reply is None:
        if is_htmx:
            return str(upsert(user_html))
        return redirect(room_url(room, _anchor="message-{}".format(user_message.id)), 303)

    generation_page = own_page if streams else None
    hub.publish(Event("article", room, reply.id, 0, upsert(reply_html), generation_page))
    generation = state["generator"].start(reply, page=generation_page, claimed=True)
    if not streams:
        if is_htmx:
            return str(upsert(user_html, reply_html))
        return redirect(room_url(room, _anchor="message-{}".format(reply.id)), 303)
    queue = generation.listen()
    first = upsert(user_html, reply_html)
    body = stream_reply(
        first,
        state["generator"],
        generation,
        queue,
        config["SSE_KEEPALIVE"],
        config["STREAM_FRAME_TIME"],
        config["STREAM_FRAME_TEXT"],
    )
    response = Response(body, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    response.headers["HX-Retarget"] = "#message-{}-body".format(reply.id)
    response.headers["HX-Reswap"] = "beforeend"
    response.headers["X-Reply-Id"] = str(reply.id)
    return response


def own_reply(message_id):
    """The assistant reply ``message_id``, if this session asked for it (else 404/403)."""
    reply = Message.get_or_none((Message.id == message_id) & (Message.role == "assistant"))
    if reply is None:
        abort(404, description="There is no such reply.")
    if reply.session_key != session_key():
        abort(403, description="Only the person who asked can do that.")
    return reply


def done(reply):
    """What a control answers: nothing for htmx (the change arrives on every
    page), a redirect back to the reply without JavaScript."""
    if request.headers.get("HX-Request") == "true":
        return "", 204
    return redirect(room_url(reply.room, _anchor="message-{}".format(reply.id)), 303)


@bp.post("/messages/<int:message_id>/stop")
def stop_reply(message_id):
    """Stop generating a reply: the upstream request is closed, the text so far kept."""
    reply = own_reply(message_id)
    state = chat()
    if reply.status != STREAMING or state["generator"].stop(reply.id):
        return done(reply)
    relay = state["relay"]
    if relay.enabled:
        # Another process may run it: ask that one, and give it a moment.
        with db.atomic():
            asked = (
                Message.update(stop_requested=True)
                .where((Message.id == reply.id) & (Message.status == STREAMING))
                .execute()
            )
            if asked:
                relay.announce("stop", reply.id)
        if not asked or wait_settled(reply.id, current_app.config["REMOTE_STOP_WAIT"]) is not None:
            return done(reply)
    # Nobody generates it any more (its process died): settle it as stopped.
    settle(Message.get_by_id(reply.id), STOPPED, state["hub"], relay)
    return done(reply)


@bp.post("/messages/<int:message_id>/retry")
def retry_reply(message_id):
    """Ask the model again for a reply that failed, was stopped or interrupted."""
    reply = own_reply(message_id)
    state = chat()
    try:
        if reply.status not in RETRYABLE:
            raise Refused("Only a failed, stopped or interrupted reply can be retried.", 409)
        check_ask_rate(reply.session_key, current_app.config)
        check_reply_capacity(reply.session_key, current_app.config)
    except Refused as exc:
        abort(exc.status, description=exc.text)
    with db.atomic():
        if not reply.restart(state["generator"].worker_id):
            abort(409, description="That reply is already being retried.")
        record_restart(reply.session_key)
        state["relay"].announce("article", reply.id)
    return restarted(reply, state)


@bp.post("/messages/<int:message_id>/regenerate")
def regenerate_reply(message_id):
    """Replace the room's newest reply with a new answer to the same question:
    the same article, its old text discarded, streamed again to every page."""
    reply = own_reply(message_id)
    state = chat()
    try:
        if reply.status != COMPLETE:
            raise Refused(
                "Only a finished reply can be regenerated; wait for it to end, or use Retry if it failed.", 409
            )
        if reply.later().exists():
            raise Refused("Only the newest message can be regenerated: the conversation has moved on.", 409)
        check_ask_rate(reply.session_key, current_app.config)
        check_reply_capacity(reply.session_key, current_app.config)
        with db.atomic():
            if not reply.restart(state["generator"].worker_id, statuses=(COMPLETE,), newest=True):
                raise Refused("That reply changed meanwhile: a new message came, or it is already regenerating.", 409)
            record_restart(reply.session_key)
            state["relay"].announce("article", reply.id)
    except Refused as exc:
        return refused(exc)
    return restarted(reply, state)


def refused(exc):
    """A control that cannot do what was asked: the reason shows under the
    composer (htmx), or as the error page (without JavaScript)."""
    if request.headers.get("HX-Request") == "true":
        return composer_error(exc.text, exc.status)
    abort(exc.status, description=exc.text)


def restarted(reply, state):
    """A reply just reset to empty and streaming: show that on every page and
    generate it again (the asker follows it over the socket like everyone)."""
    reply = Message.get_by_id(reply.id)
    state["hub"].publish(Event("article", reply.room, reply.id, 0, upsert(render_message(reply, ""))))
    state["generator"].start(reply, claimed=True)
    return done(reply)


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


def composer_error(text, status):
    """An error shown under the composer; the typed text stays where it is."""
    response = Response(render_template("_composer_error.html", error=text), status=status)
    response.headers["HX-Retarget"] = "#composer-error"
    response.headers["HX-Reswap"] = "innerHTML"
    return response


def stream_reply(first, generator, generation, queue, keepalive, frame=0.0, frame_text=10):
    """The author's event stream: the two new articles at once, then the reply
    drawn as it grows, then the final article.

    A token after a pause (none in the ``frame`` seconds before it) goes at
    once. In a burst, a token waits up to ``frame`` for more, so that one event
    carries ``frame_text`` characters of text or more (each event costs about
    8 bytes of framing, "data:" and a blank line); tokens already queued always
    go together. When the page already shows the final body, the last event
    leaves it in place and only changes the article around it.

    Runs after the request context is gone: everything it needs is passed in.
    """
    finished = False
    body = AuthorBody(generation.reply_id)
    text = ""
    arrived = float("-inf")  # when the last token was taken from the queue
    try:
        yield sse_event(first)
        held = None
        while True:
            if held is not None:
                item, held = held, None
            else:
                try:
                    item = queue.get(timeout=keepalive)
                except Empty:
                    if generation.finished and queue.empty():
                        return  # the generation died without a last word
                    yield ": keep-alive\n\n"
                    continue
            kind = item[0]
            if kind == "final":
                finished = True
                _, html, flip, final_body = item
                if flip is not None and final_body is not None:
                    catch_up = body.advance(final_body, final=True)
                    if body.shows(final_body):
                        yield catch_up + sse_event(flip)
                        return
                yield sse_event(html)
                return
            if kind == "whole":  # the benchmark's per-token baseline
                yield sse_event(item[1])
                continue
            now = time.monotonic()
            burst = now - arrived < frame
            arrived = now
            deadline = now + frame if burst else now
            text += item[1]
            size = len(item[1])
            while True:  # what already arrived, or arrives while the burst is held
                wait = deadline - time.monotonic() if size < frame_text else 0
                try:
                    nxt = queue.get(timeout=wait) if wait > 0 else queue.get_nowait()
                except Empty:
                    break
                if nxt[0] != "tok":
                    held = nxt
                    break
                arrived = time.monotonic()
                text += nxt[1]
                size += len(nxt[1])
            events = body.advance(text)
            if events:
                yield events
    finally:
        if not finished:
            generator.detach(generation, queue)


def socket_route(ws):
    """``/ws``: the page's socket (flask-sock calls this with the open socket)."""
    if not same_origin():
        ws.close(1008, "origin not allowed")
        return
    args = request.args
    room = args.get("room", DEFAULT_ROOM)
    if not rooms.is_valid(room):
        ws.close(1008, "no such room")
        return
    page = page_id(args.get("page"))
    after = int(args["after"]) if ID.fullmatch(args.get("after", "")) else 0
    PageSocket(
        ws,
        chat()["hub"],
        room,
        page,
        after=after,
        streaming=parse_ids(args.get("streaming")),
        follow=parse_ids(args.get("follow")),
        ping_interval=current_app.config["SOCKET_PING_INTERVAL"],
    ).serve()
