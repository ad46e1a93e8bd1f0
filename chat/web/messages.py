"""Posting: a message, and a question to the model (its reply streamed back
to the asker by ``author_stream``, post-redirect-get without JavaScript); and
the asker's controls on a reply: Stop, Retry, Regenerate."""
import re
import unicodedata

from flask import Response
from flask import abort
from flask import current_app
from flask import redirect
from flask import render_template
from flask import request
from markupsafe import Markup

from chat import rooms
from chat.fanout.hub import Event
from chat.fanout.relay import wait_settled
from chat.render.rendering import render_message
from chat.render.rendering import upsert
from chat.rooms import DEFAULT_ROOM
from chat.rooms import room_url
from chat.stream.watchdog import settle
from chat.web.assistant import model_for
from chat.web.author_stream import stream_reply
from chat.web.blueprint import bp
from chat.web.blueprint import chat
from chat.web.limits import Refused
from chat.web.limits import check_ask_rate
from chat.web.limits import check_post
from chat.web.limits import check_reply_capacity
from chat.web.limits import record_restart
from chat.web.pages import render_page
from chat.web.visitor import current_name
from chat.web.visitor import page_id
from chat.web.visitor import session_key
from models import COMPLETE
from models import RETRYABLE
from models import STOPPED
from models import STREAMING
from models import Message
from models import Room
from models import db

_MENTION = re.compile(r"(?<![\w@])@gpt\b", re.IGNORECASE)


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


def asks_model(text):
    return _MENTION.search(text) is not None


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
                model=model_for(room),
                page=own_page if streams else None,
                claimed_by=state["generator"].worker_id,
            )
            relay.announce("article", reply.id, page=reply.stream_page)
        Room.touch(room, 2 if reply else 1)
    return respond(user_message, reply, own_page, streams)


def respond(user_message, reply, own_page, streams):
    """What a post (or an edit) that stored ``user_message`` answers, once
    its reply, if any, is stored empty and claimed: both shown on every
    page, the reply generated, and over htmx with an event stream the reply
    streamed to this page token by token (``own_page`` skips the socket's
    copy); without JavaScript, a redirect to it."""
    is_htmx = request.headers.get("HX-Request") == "true"
    state = chat()
    room = user_message.room
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
    config = current_app.config
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


def composer_error(text, status):
    """An error shown under the composer; the typed text stays where it is."""
    response = Response(render_template("_composer_error.html", error=text), status=status)
    response.headers["HX-Retarget"] = "#composer-error"
    response.headers["HX-Reswap"] = "innerHTML"
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
