"""The pages: a room (the lobby at ``/``), the list of rooms, older messages
for the top of a room's page, and the socket every page opens (``/ws``)."""
import re
import secrets

from flask import abort
from flask import current_app
from flask import redirect
from flask import render_template
from flask import request
from flask import session

from chat import rooms
from chat.fanout.presence import LISTED
from chat.fanout.sockets import PageSocket
from chat.fanout.sockets import parse_ids
from chat.rooms import DEFAULT_ROOM
from chat.rooms import room_url
from chat.web.assistant import context as assistant_context
from chat.web.assistant import settings_of
from chat.web.blueprint import bp
from chat.web.blueprint import chat
from chat.web.limits import Refused
from chat.web.security import same_origin
from chat.web.seeding import seed_if_empty
from chat.web.visitor import current_name
from chat.web.visitor import page_id
from chat.web.visitor import session_key
from models import Message
from models import Room

ID = re.compile(r"[0-9]{1,18}")  # a message id in a URL (ASCII digits: isdigit() also takes "²")


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


def people_in(room):
    """Who is in ``room`` now, this page's person among them (their socket is
    about to open, and says so to everyone else)."""
    people = dict(chat()["presence"].members(room))
    people[session_key()] = current_name()
    return sorted(people.items(), key=lambda item: (item[1].casefold(), item[0]))


def editable_in(messages, key):
    """The id of this person's message that they may edit (the conversation
    ends with it and its reply), among a room's newest ``messages``, or None."""
    last = messages[-1] if messages else None
    if last is not None and last.role == "assistant" and len(messages) > 1 and last.reply_to_id == messages[-2].id:
        last = messages[-2]
    return last.id if last is not None and last.role == "user" and last.session_key == key else None


def render_page(room, draft="", error=None, status=200, before=None):
    messages, more = page_of(room, before)
    assistant = assistant_context(room, *settings_of(room))
    del assistant["room"]
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
        model_name=assistant["model"],
        session_key=session_key(),
        draft=draft,
        error=error,
        max_length=current_app.config["MAX_MESSAGE_LENGTH"],
        people=people_in(room),
        **assistant,
        editable=None if before is not None else editable_in(messages, session_key()),
        listed=LISTED,
    )
    return html, status


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
    # The socket's handshake carries the session cookie, which it cannot
    # change: a browser without one is someone nameless here.
    who = (session_key(), session.get("name") or "Someone")
    PageSocket(
        ws,
        chat()["hub"],
        room,
        page,
        after=after,
        streaming=parse_ids(args.get("streaming")),
        follow=parse_ids(args.get("follow")),
        ping_interval=current_app.config["SOCKET_PING_INTERVAL"],
        presence=chat()["presence"],
        who=who,
    ).serve()
