"""Rooms: their URLs and names, the list of active rooms, each room's own
messages, socket channel and model context, and older messages on demand."""
import json
import re

import pytest

from chat import rooms
from chat.web.limits import Refused
from conftest import csrf_from
from models import Message
from models import Room
from support.app_client import STREAM
from support.app_client import sse_events
from support.app_client import wait_until as wait_in_app
from support.live import Browser
from support.live import parse_upsert

HTMX = {"HX-Request": "true"}


def open_room(client, path):
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    html = response.get_data(as_text=True)
    return html, csrf_from(html)


def post(client, token, body, room, headers=None):
    data = {"body": body, "page": "ab12", "csrf_token": token}
    if room is not None:
        data["room"] = room
    return client.post("/messages", data=data, headers=headers or {})


# -- names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed, name",
    [
        ("book-club", "book-club"),
        ("  Book Club ", "book-club"),
        ("#book_club", "book-club"),
        ("Q4.plans", "q4-plans"),
        ("a", "a"),
        ("x" * 32, "x" * 32),
    ],
)
def test_typed_names_fold_to_one_spelling(typed, name):
    assert rooms.clean(typed) == name


@pytest.mark.parametrize(
    "typed, says",
    [
        ("", "Give the room a name"),
        ("  #  ", "Give the room a name"),
        ("x" * 33, "too long"),
        ("-start", "cannot be a room name"),
        ("end-", "cannot be a room name"),
        ("caf\u00e9", "cannot be a room name"),
        ("a/b", "cannot be a room name"),
        ("<script>", "cannot be a room name"),
    ],
)
def test_bad_names_are_refused_with_the_rules(typed, says):
    with pytest.raises(Refused) as refused:
        rooms.clean(typed)
    assert says in refused.value.text
    assert "1 to 32 characters" in refused.value.text


# -- pages ----------------------------------------------------------------------


def test_a_room_has_its_own_page_socket_and_composer(client):
    html, _ = open_room(client, "/r/book-club")
    assert "<h1>#book-club</h1>" in html
    assert '<input type="hidden" name="room" value="book-club">' in html
    assert re.search(r'hx-ws:connect="/ws\?page=[0-9a-f]+&(?:amp;)?after=0&(?:amp;)?room=book-club"', html)
    assert "No messages in #book-club yet" in html
    lobby, _ = open_room(client, "/")
    assert '<input type="hidden" name="room" value="lobby">' in lobby


def test_other_spellings_redirect_to_the_rooms_url(client):
    response = client.get("/r/Book_Club")
    assert response.status_code == 301 and response.headers["Location"].endswith("/r/book-club")
    response = client.get("/r/lobby")
    assert response.status_code == 302 and response.headers["Location"].endswith("/")
    response = client.get("/r/lobby?before=7")
    assert response.headers["Location"].endswith("/?before=7")


@pytest.mark.parametrize("path", ["/r/-x", "/r/" + "y" * 40, "/r/a/b/c", "/r/%3Cb%3E"])
def test_a_url_that_cannot_be_a_room_explains_and_offers_the_form(client, path):
    response = client.get(path)
    assert response.status_code == 404
    html = response.get_data(as_text=True)
    assert "1 to 32 characters" in html
    assert 'id="room-name"' in html and 'aria-invalid="true"' in html
    assert "<b>" not in html  # what was typed is shown escaped


def test_the_join_form_goes_to_the_room_or_says_what_is_wrong(client):
    response = client.get("/rooms", query_string={"name": "  Book Club"})
    assert response.status_code == 303 and response.headers["Location"].endswith("/r/book-club")
    response = client.get("/rooms", query_string={"name": "lobby"})
    assert response.headers["Location"].endswith("/")
    response = client.get("/rooms", query_string={"name": "<i>no</i>"})
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "cannot be a room name" in html
    assert 'value="&lt;i&gt;no&lt;/i&gt;"' in html  # the typed text stays, escaped
    assert "<i>no</i>" not in html


def test_posts_stay_in_their_room_and_the_list_shows_activity(app, client):
    _, token = open_room(client, "/r/alpha")
    assert post(client, token, "first in alpha", "alpha", HTMX).status_code == 200
    assert post(client, token, "hello beta", "beta", HTMX).status_code == 200
    assert post(client, token, "second in alpha", "alpha", HTMX).status_code == 200
    alpha, _ = open_room(client, "/r/alpha")
    beta, _ = open_room(client, "/r/beta")
    lobby, _ = open_room(client, "/")
    assert "first in alpha" in alpha and "second in alpha" in alpha and "hello beta" not in alpha
    assert "hello beta" in beta and "first in alpha" not in beta
    assert "alpha" not in lobby.split('<main class="chat">')[1]
    with app.app_context():
        listed = [(r.name, r.messages) for r in Room.active()]
    assert listed == [("alpha", 2), ("beta", 1)]  # most recently active first
    nav = alpha.split('<nav class="rooms"')[1].split("</nav>")[0]
    assert nav.index("#alpha") < nav.index("#beta")
    assert 'href="/r/alpha" aria-current="page"' in nav and "2 messages" in nav and "1 message " in nav
    rooms_page = client.get("/rooms").get_data(as_text=True)
    assert "#alpha" in rooms_page and "#beta" in rooms_page


def test_posting_to_a_room_that_cannot_exist_is_refused_and_stores_nothing(app, client):
    _, token = open_room(client, "/")
    response = post(client, token, "hi", "No Such!", HTMX)
    assert response.status_code == 400
    assert response.headers["HX-Retarget"] == "#composer-error"
    assert "There is no room" in response.get_data(as_text=True)
    response = post(client, token, "kept draft", "a/b")  # without JavaScript: the page, the draft kept
    assert response.status_code == 400 and "kept draft</textarea>" in response.get_data(as_text=True)
    with app.app_context():
        assert Message.select().count() == 0 and Room.select().count() == 0


def test_a_form_without_a_room_posts_to_the_lobby(app, client):
    _, token = open_room(client, "/")
    assert post(client, token, "from an old page", None, HTMX).status_code == 200
    with app.app_context():
        assert [m.room for m in Message.select()] == ["lobby"]


def test_without_javascript_a_post_returns_to_its_room(client):
    _, token = open_room(client, "/r/alpha")
    response = post(client, token, "plain form", "alpha")
    assert response.status_code == 303
    assert re.search(r"/r/alpha#message-\d+$", response.headers["Location"])


def test_each_room_is_its_own_model_context(app, client, provider):
    _, token = open_room(client, "/r/alpha")
    post(client, token, "the secret word in alpha is heron", "alpha", HTMX)
    post(client, token, "beta talks about sparrows", "beta", HTMX)
    response = post(client, token, "@gpt what is the secret word?", "alpha", STREAM)
    sse_events(response)  # read the stream to its end
    with app.app_context():
        assert wait_in_app(lambda: Message.select().where(Message.status == "streaming").count() == 0)
    sent = "\n".join(m["content"] for m in provider.requests[-1])
    assert "heron" in sent and "sparrows" not in sent
    with app.app_context():
        reply = Message.get(Message.role == "assistant")
        assert reply.room == "alpha"
        assert Room.get(Room.name == "alpha").messages == 3  # the question, its reply and the one before


# -- older messages -------------------------------------------------------------


def fill(app, room, n):
    with app.app_context():
        ids = [Message.create(room=room, author="Ann", role="user", body="message {}".format(i)).id for i in range(n)]
        Message.create(room="elsewhere", author="Bo", role="user", body="not in {}".format(room))
        Room.touch(room, n)
    return ids


def shown_ids(html):
    return [int(i) for i in re.findall(r'<article class="message" id="message-(\d+)"', html)]


def test_a_long_room_opens_with_its_last_page_and_loads_older_ones_on_demand(app, client):
    app.config["PAGE_MESSAGES"] = 10
    ids = fill(app, "long", 25)
    html, _ = open_room(client, "/r/long")
    assert shown_ids(html) == ids[-10:]
    link = re.search(r'<a id="older"[^>]*href="([^"]+)"[^>]*hx-get="([^"]+)" hx-trigger="revealed', html)
    assert link, "a link to older messages that htmx follows when it is revealed"
    assert link.group(1) == "/r/long?before={}".format(ids[-10])
    older = client.get(link.group(2).replace("&amp;", "&"), headers=HTMX)
    assert older.status_code == 200
    fragment = older.get_data(as_text=True)
    assert [a["id"] for a in parse_upsert(fragment[fragment.index("<hx-upsert"):])] == ids[5:15]
    second = re.search(r'hx-get="([^"]+)"', fragment)
    last = client.get(second.group(1).replace("&amp;", "&"), headers=HTMX).get_data(as_text=True)
    assert shown_ids(last) == ids[:5]
    assert 'id="older"' not in last and "This is the start of #long." in last  # nothing older to load
    assert "not in long" not in fragment + last


def test_without_javascript_older_messages_are_a_page_of_their_own(app, client):
    app.config["PAGE_MESSAGES"] = 10
    ids = fill(app, "long", 15)
    html, _ = open_room(client, "/r/long?before={}".format(ids[-10]))
    assert shown_ids(html) == ids[:5]
    assert "Back to the latest" in html
    assert 'id="composer"' not in html and "hx-ws:connect" not in html


def test_older_messages_need_a_valid_room_and_position(client):
    assert client.get("/r/long/older").status_code == 400
    assert client.get("/r/Not-Valid!/older?before=3").status_code == 404
    # Digits only in ASCII: "²" is a digit to str.isdigit() but not to int().
    assert client.get("/r/long/older?before=\u00b2").status_code == 400
    assert client.get("/?before=\u00b2").status_code == 200
    assert client.get("/r/long?before=1\u00b2").status_code == 200


# -- over a real server: one socket channel per room ------------------------------


def test_a_rooms_socket_hears_only_its_room(live_server, ws_open):
    ann, bo = Browser(live_server), Browser(live_server)
    ann.load("/r/alpha")
    bo.load("/r/beta")
    ann.say("alpha opens")
    bo.say("beta opens")
    # Observers' sockets (other pages); each room's snapshot proves it subscribed.
    in_alpha = ws_open(live_server, "a1a1", room="alpha")
    in_beta = ws_open(live_server, "b2b2", room="beta")
    in_lobby = ws_open(live_server, "c3c3")
    for sock, text in [(in_alpha, "alpha opens"), (in_beta, "beta opens")]:
        sock.wait_frames(lambda frames: any(text in f for f in frames), what=text)
    bo_id = bo.say("only for beta")
    ann_id = ann.say("only for alpha")
    in_beta.wait_frames(lambda frames: any('id="message-{}"'.format(bo_id) in f for f in frames), what="beta's")
    in_alpha.wait_frames(lambda frames: any('id="message-{}"'.format(ann_id) in f for f in frames), what="alpha's")
    assert not any("beta" in f for f in in_alpha.frames)
    assert not any("alpha" in f for f in in_beta.frames)
    assert in_lobby.frames == []
    # Asking to follow another room's message gets nothing from it.
    in_alpha.ws.send(json.dumps({"follow": bo_id}))
    in_alpha.ws.send(json.dumps({"follow": ann_id}))  # ...while its own room's is sent again
    in_alpha.wait_frames(
        lambda frames: sum('id="message-{}"'.format(ann_id) in f for f in frames) >= 2, what="the followed article"
    )
    assert not any("beta" in f for f in in_alpha.frames)
    bad = ws_open(live_server, "d4d4", room="Not Valid")
    assert bad.closed.wait(5) and bad.close_code == 1008
