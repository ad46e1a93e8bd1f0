"""Edit and resend: a person changes their last message, and its reply is
answered again from the new text (the rules of Regenerate: the conversation
must end with that question and its finished reply).

The message is changed in place on every page, marked "edited"; its reply is
the same article, emptied and streamed again (to the asker token by token,
over the response to the edit, as a new question is). A message that had no
reply gets one if the new text mentions @gpt. On the page the composer edits
(the Edit button on your last message, or Up in an empty composer); without
JavaScript ``GET /messages/<id>/edit`` is a form that does the same.
"""
from datetime import timedelta

from flask import current_app
from flask import render_template
from flask import request
from peewee import fn

from chat.web.assistant import model_for
from chat.web.blueprint import bp
from chat.web.blueprint import chat
from chat.web.limits import Refused
from chat.web.limits import check_ask_rate
from chat.web.limits import check_reply_capacity
from chat.web.limits import record_restart
from chat.web.messages import asks_model
from chat.web.messages import clean_body
from chat.web.messages import composer_error
from chat.web.messages import respond
from chat.web.visitor import page_id
from chat.web.visitor import session_key
from models import FINAL_STATUSES
from models import Message
from models import Room
from models import db
from models import utcnow


def own_message(message_id):
    """The person's own message ``message_id`` (else ``Refused``, 404 or 403)."""
    message = Message.get_or_none((Message.id == message_id) & (Message.role == "user"))
    if message is None:
        raise Refused("There is no such message to edit.", 404)
    if message.session_key != session_key():
        raise Refused("Only the person who wrote a message can edit it.", 403)
    return message


def its_reply(message):
    """The reply to ``message`` that would be answered again, or None; refused
    unless nothing but that reply came after the message."""
    later = list(Message.select().where((Message.room == message.room) & (Message.id > message.id)).limit(2))
    reply = later[0] if later and later[0].reply_to_id == message.id and later[0].role == "assistant" else None
    if len(later) > (1 if reply else 0):
        raise Refused("Only your last message can be edited: the conversation has moved on since.", 409)
    if reply is not None and reply.is_streaming:
        raise Refused("Wait for the answer to finish (or stop it) before editing the question.", 409)
    return reply


def check_edit(message, text):
    """The reply to answer again, if any, once ``text`` may replace ``message``'s.
    Edits of one message are at most as frequent as posts may be."""
    reply = its_reply(message)
    asks = asks_model(text)
    if reply is not None and not asks:
        raise Refused(
            "Keep @gpt in the message: it has an answer, which is written again from the new text.", 400
        )
    pause = timedelta(seconds=60.0 / max(1, current_app.config["POSTS_PER_MINUTE"]))
    if message.edited_at is not None and utcnow() - message.edited_at < pause:
        raise Refused("You have just edited that message. Wait a few seconds and try again.", 429)
    if asks:
        check_ask_rate(message.session_key, current_app.config)
        check_reply_capacity(message.session_key, current_app.config)
    return reply


@bp.post("/messages/<int:message_id>/edit")
def edit_message(message_id):
    is_htmx = request.headers.get("HX-Request") == "true"
    streams = is_htmx and "text/event-stream" in request.headers.get("Accept", "")
    own_page = page_id(request.form.get("page")) if is_htmx else None
    raw = request.form.get("body")
    state = chat()
    try:
        message = own_message(message_id)
        if raw is None:
            raise Refused("The form is missing its message field.", 400)
        text = clean_body(raw, current_app.config["MAX_MESSAGE_LENGTH"])
        reply = check_edit(message, text)
        relay = state["relay"]
        with db.atomic():
            others = Message.select(Message.id).where(
                (Message.room == message.room) & (Message.id > message.id) & (Message.id != (reply.id if reply else 0))
            )
            changed = (
                Message.update(body=text, edited_at=utcnow())
                .where((Message.id == message.id) & ~fn.EXISTS(others))
                .execute()
            )
            if not changed:
                raise Refused("Only your last message can be edited: the conversation has moved on since.", 409)
            relay.announce("article", message.id, page=own_page)
            page = own_page if streams else None
            if reply is not None:
                if not reply.restart(state["generator"].worker_id, statuses=FINAL_STATUSES, newest=True, page=page):
                    raise Refused("That answer changed meanwhile: it is being written again already.", 409)
                reply = Message.get_by_id(reply.id)
            elif asks_model(text):
                reply = Message.new_reply(
                    message, model=model_for(message.room), page=page,
                    claimed_by=state["generator"].worker_id,
                )
                Room.touch(message.room)
            if reply is not None:
                record_restart(message.session_key)
                relay.announce("article", reply.id, page=reply.stream_page)
    except Refused as exc:
        if is_htmx:
            return composer_error(exc.text, exc.status)
        return edit_page(message_id, draft=raw, error=exc.text, status=exc.status)
    return respond(Message.get_by_id(message.id), reply, own_page, streams)


@bp.get("/messages/<int:message_id>/edit")
def edit_form(message_id):
    """The edit form without JavaScript."""
    return edit_page(message_id)


def edit_page(message_id, draft=None, error=None, status=200):
    """The form that edits a message (with the reason it cannot, if it cannot)."""
    try:
        message = own_message(message_id)
    except Refused as exc:
        return render_template("edit.html", message=None, draft=draft, error=exc.text), exc.status
    if error is None:
        try:
            its_reply(message)
        except Refused as exc:
            error, status = exc.text, 200
    html = render_template(
        "edit.html", message=message, draft=message.body if draft is None else draft, error=error,
        max_length=current_app.config["MAX_MESSAGE_LENGTH"],
    )
    return html, status
