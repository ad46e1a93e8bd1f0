"""Every refusal, whichever layer makes it, answers in words: over htmx under
the composer (X-Refusal marks it as the app's own), without JavaScript as the
chat page with the draft kept, or a short page that links back; a page that
cannot be drawn still gives the draft back in a form that sends it again.
(tests/test_browser_refusals.py shows the same in a real browser.)"""
import html
import re

import pytest

from conftest import csrf_from
from models import Message
from models import Room

HTMX = {"HX-Request": "true"}
ERROR = re.compile(r'<p id="composer-error"[^>]*>(.*?)</p>', re.S)
DRAFT = re.compile(r'<textarea id="composer-body"[^>]*>(.*?)</textarea>', re.S)


def open_page(client, path="/"):
    page = client.get(path).get_data(as_text=True)
    return csrf_from(page)


def post(client, token, body, headers=None, room="lobby"):
    """Post from the room's page (as a browser would: with the page as Referer)."""
    headers = {"Referer": "http://localhost/" + ("r/" + room if room != "lobby" else ""), **(headers or {})}
    return client.post("/messages", data={"csrf_token": token, "room": room, "body": body}, headers=headers)


def shown(response):
    """(the composer's error, its draft) on a page the response carries."""
    page = response.get_data(as_text=True)
    return html.unescape(ERROR.search(page).group(1)), html.unescape(DRAFT.search(page).group(1))


def stored(app):
    with app.app_context():
        return Message.select().count()


def test_a_body_over_the_request_cap_is_refused_in_words(client, app):
    """Flask's MAX_CONTENT_LENGTH refuses before any form is read: it used
    to answer with its bare 413, which htmx swapped nowhere."""
    token = open_page(client, "/r/dev")
    big = "a" * 200_000
    response = post(client, token, big, HTMX, room="dev")
    assert response.status_code == 413
    assert response.headers["HX-Retarget"] == "#composer-error"
    assert response.headers["X-Refusal"] == "worded"
    assert response.get_data(as_text=True).strip() == (
        "That message is too large to send (195 KB); a message can be up to 4,000 characters."
    )
    # Without JavaScript: the room's page again, saying why.
    response = post(client, token, big, room="dev")
    assert response.status_code == 413
    error, draft = shown(response)
    assert error.startswith("That message is too large to send (195 KB); a message can be up to 4,000 characters.")
    assert "too large to keep here" in error and draft == ""
    assert "<h1>#dev</h1>" in response.get_data(as_text=True)
    assert stored(app) == 0


def test_a_long_draft_comes_back_whole(client, app):
    """Under the request cap a refused draft is kept in full (it was cut to
    twice the limit, losing the rest)."""
    token = open_page(client)
    text = "word " * 3000
    response = post(client, token, text)
    assert response.status_code == 413
    error, draft = shown(response)
    assert error == "That message is 14,999 characters long; the limit is 4,000."
    assert draft == text
    assert stored(app) == 0


def test_an_expired_form_keeps_the_draft_and_brings_a_fresh_token(client, app):
    token = open_page(client)
    response = post(client, "stale", "my careful message", HTMX)
    assert response.status_code == 403
    assert response.headers["HX-Retarget"] == "#composer-error"
    assert response.headers["X-CSRF-Token"] == token
    assert "press Send again" in response.get_data(as_text=True)
    response = post(client, "stale", "my careful message")
    assert response.status_code == 403
    error, draft = shown(response)
    assert "did not come from this site" in error and draft == "my careful message"
    # The page it gives back sends: its form carries the session's token.
    assert post(client, csrf_from(response.get_data(as_text=True)), draft).status_code == 303
    assert stored(app) == 1


def test_a_fresh_session_gets_a_token_that_works(app):
    """An expired session (a cookie from a rotated key, or none) is a new one:
    the refusal carries the new session's token."""
    client = app.test_client()
    response = post(client, "from-an-old-page", "hello again", HTMX)
    assert response.status_code == 403
    token = response.headers["X-CSRF-Token"]
    assert post(client, token, "hello again", HTMX).status_code == 200
    assert stored(app) == 1


def test_bad_encoding_without_javascript_gives_the_page_back(client, app):
    token = open_page(client)
    response = client.post(
        "/messages",
        data=b"room=lobby&body=caf%e9+au+lait&csrf_token=" + token.encode(),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 400
    error, draft = shown(response)
    assert error == "The message could not be read: it is not valid UTF-8 text."
    assert draft.startswith("caf") and draft.endswith(" au lait")
    assert stored(app) == 0


def test_a_rate_limit_keeps_the_draft(client, app):
    app.config["POSTS_PER_MINUTE"] = 1
    token = open_page(client)
    assert post(client, token, "first", HTMX).status_code == 200
    response = post(client, token, "second", HTMX)
    assert response.status_code == 429 and "too fast" in response.get_data(as_text=True)
    assert response.headers["X-Refusal"] == "worded"
    error, draft = shown(post(client, token, "second"))
    assert "too fast" in error and draft == "second"
    assert stored(app) == 1


@pytest.fixture
def failing(app, monkeypatch):
    """The app as deployed (exceptions become 500s), storing a message fails."""
    app.config["PROPAGATE_EXCEPTIONS"] = False

    def broken(*args, **kwargs):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(Room, "touch", broken)
    return monkeypatch


def test_a_server_error_says_so_and_keeps_the_draft(client, app, failing):
    token = open_page(client)
    response = post(client, token, "lost?", HTMX)
    assert response.status_code == 500
    assert response.headers["HX-Retarget"] == "#composer-error"
    assert "Something went wrong on the server (error 500)" in response.get_data(as_text=True)
    assert "the disk is full" not in response.get_data(as_text=True)
    response = post(client, token, "lost?")
    assert response.status_code == 500
    error, draft = shown(response)
    assert error.startswith("Something went wrong on the server") and draft == "lost?"
    assert stored(app) == 0  # the post's transaction rolled back


def test_a_page_that_cannot_be_drawn_still_gives_the_draft_back(client, app, failing):
    token = open_page(client)
    failing.setattr(Message, "recent", lambda *a, **k: 1 / 0)
    response = post(client, token, "keep <this> & that")
    assert response.status_code == 500
    page = response.get_data(as_text=True)
    assert "Something went wrong on the server" in page
    form = re.search(r'<form class="resend" action="/messages" method="post">(.*?)</form>', page, re.S).group(1)
    assert 'name="csrf_token" value="{}"'.format(token) in form and 'name="room" value="lobby"' in form
    assert "keep &lt;this&gt; &amp; that</textarea>" in form


def test_refused_controls_and_unknown_pages_are_readable(client, app):
    token = open_page(client)
    response = client.post("/messages/999/retry", data={"csrf_token": token}, headers=HTMX)
    assert response.status_code == 404
    assert response.headers["HX-Retarget"] == "#composer-error"
    assert response.get_data(as_text=True).strip() == "There is no such reply."
    response = client.post("/messages/999/retry", data={"csrf_token": token}, headers={"Referer": "http://localhost/r/dev"})
    assert response.status_code == 404
    page = response.get_data(as_text=True)
    assert '<p id="error-text" class="error-text" role="alert">There is no such reply.</p>' in page
    assert '<a href="/r/dev">Back to the chat</a>' in page
    response = client.get("/no/such/page")
    assert response.status_code == 404 and response.headers["X-Refusal"] == "worded"
    assert '<a href="/">Back to the chat</a>' in response.get_data(as_text=True)
    assert "X-Refusal" not in client.get("/").headers


def test_the_composer_states_its_limit(client, app):
    page = client.get("/").get_data(as_text=True)
    field = re.search(r'<textarea id="composer-body"[^>]*>', page).group(0)
    assert 'maxlength="4000"' in field and 'data-max-length="4000"' in field
    assert 'aria-describedby="composer-count composer-error"' in field


def test_an_expired_page_refuses_a_control_and_brings_a_fresh_token(client, app):
    token = open_page(client)
    response = client.post("/messages/1/stop", data={"csrf_token": "stale"}, headers=HTMX)
    assert response.status_code == 403 and response.headers["X-CSRF-Token"] == token
    assert response.get_data(as_text=True).strip() == "This page had expired, so that was not done. Press it again."


def test_a_route_that_words_its_503_keeps_its_words(client, app):
    """A 503 a route raises with its reason (the server's reply cap) is that
    reason, not "something went wrong"; only a 5xx without words is that."""
    token = open_page(client)
    # This session's key, as its page carries it: the reply is this session's.
    key = re.search(r'data-session="([0-9a-f]+)"', client.get("/").get_data(as_text=True)).group(1)
    with app.app_context():
        question = Message.create(room="lobby", author="Ann", role="user", body="@gpt hi", session_key=key)
        reply = Message.create(room="lobby", author="gpt", role="assistant", status="failed",
                               reply_to=question, session_key=key)
        Message.create(room="elsewhere", author="gpt", role="assistant", status="streaming", session_key="other")
    app.config["MAX_CONCURRENT_REPLIES"] = 1
    response = client.post("/messages/{}/retry".format(reply.id), data={"csrf_token": token}, headers=HTMX)
    assert response.status_code == 503
    assert response.get_data(as_text=True).strip() == "@gpt is busy answering everyone right now. Try again in a moment."
    response = client.post("/messages/{}/retry".format(reply.id), data={"csrf_token": token})
    assert response.status_code == 503 and "@gpt is busy answering everyone" in response.get_data(as_text=True)
