"""Edit and resend, through the app: your last message changed in place and
its reply written again from the new text (streamed to you over the edit's
own response), a message without a reply given one when it now asks, and
every edit that cannot be done refused in words, over htmx and without
JavaScript."""
import json

from models import Message
from models import Room
from models import db
from support.app_client import HTMX
from support.app_client import STREAM
from support.app_client import open_page
from support.app_client import post
from support.app_client import sse_events
from support.app_client import wait_until


def edit(client, token, message_id, body, headers=STREAM, page="aa01"):
    return client.post(
        "/messages/{}/edit".format(message_id),
        data={"body": body, "page": page, "csrf_token": token},
        headers=headers,
    )


def row(app, message_id):
    with app.app_context(), db.connection_context():
        return Message.get_by_id(message_id)


def settled(app, message_id):
    return wait_until(lambda: row(app, message_id).status != "streaming")


def asked(client, provider, text="@gpt what is two plus two?", answer=("Four", ".")):
    _, token = open_page(client)
    provider.enqueue(answer)
    response = post(client, token, text, headers=STREAM)
    events = sse_events(response)
    assert events
    reply_id = int(response.headers["X-Reply-Id"])
    return token, reply_id - 1, reply_id


def test_an_edit_replaces_the_question_and_writes_its_answer_again(app, client, provider):
    token, question, reply = asked(client, provider)
    assert settled(app, reply) and row(app, reply).body == "Four."
    provider.enqueue(["Six", "."])
    response = edit(client, token, question, "@gpt what is three plus three?")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["X-Reply-Id"] == str(reply)  # the same article, streamed again
    events = sse_events(response)
    first = events[0]
    assert 'id="message-{}"'.format(question) in first and "three plus three" in first and ">edited<" in first
    assert 'id="message-{}"'.format(reply) in first and 'data-status="streaming"' in first
    assert settled(app, reply)
    q, r = row(app, question), row(app, reply)
    assert (q.body, r.body, r.status) == ("@gpt what is three plus three?", "Six.", "complete")
    assert q.edited_at is not None
    # The model was asked the new question, and saw neither the old one nor its answer.
    sent = provider.requests[-1]
    assert sent[-1]["content"].endswith("@gpt what is three plus three?")
    assert not any("two plus two" in m["content"] or m["content"] == "Four." for m in sent)
    # Everyone else is told through the hub (the page's socket skips its own copy).
    html = client.get("/").get_data(as_text=True)
    assert "three plus three" in html and "two plus two" not in html


def test_a_message_without_an_answer_gets_one_when_it_now_asks(app, client, provider):
    _, token = open_page(client)
    post(client, token, "hello all", headers=HTMX)
    with app.app_context(), db.connection_context():
        question = Message.get(Message.body == "hello all").id
    response = edit(client, token, question, "hello all, and what is @gpt up to?", headers=HTMX)
    assert response.status_code == 200
    with app.app_context(), db.connection_context():
        reply = Message.get(Message.role == "assistant")
    assert reply.reply_to_id == question
    assert settled(app, reply.id)
    with app.app_context(), db.connection_context():
        assert Room.get(Room.name == "lobby").messages == 2  # the room list counts the new answer
    # A plain edit without @gpt is just an edit.
    _, token = open_page(client)
    post(client, token, "second thought", headers=HTMX)
    with app.app_context(), db.connection_context():
        plain = Message.get(Message.body == "second thought").id
    assert edit(client, token, plain, "second thoughts", headers=HTMX).status_code == 200
    assert row(app, plain).body == "second thoughts"
    assert Message.select().where(Message.role == "assistant").count() == 1


def refusal(response):
    assert response.headers.get("HX-Retarget") == "#composer-error", response.get_data(as_text=True)[:300]
    return response.status_code, response.get_data(as_text=True)


def test_edits_that_cannot_be_done_are_refused_in_words(app, client, provider):
    token, question, reply = asked(client, provider)
    assert settled(app, reply)
    cases = [
        ("", 400, "Write something first"),
        ("x" * 5000, 413, "5,000 characters long"),
        ("what is two plus two?", 400, "Keep @gpt in the message"),
    ]
    for body, status, words in cases:
        code, text = refusal(edit(client, token, question, body, headers=HTMX))
        assert (code, words in text) == (status, True), (body[:20], code, text)
    assert row(app, question).body == "@gpt what is two plus two?", "nothing changed"

    # Someone else's message.
    other = app.test_client()
    _, other_token = open_page(other)
    code, text = refusal(edit(other, other_token, question, "@gpt mine now", headers=HTMX))
    assert code == 403 and "Only the person who wrote a message can edit it" in text
    # A message that does not exist, or a reply.
    assert refusal(edit(client, token, 999, "@gpt hi", headers=HTMX))[0] == 404
    assert refusal(edit(client, token, reply, "@gpt hi", headers=HTMX))[0] == 404

    # Two edits in a row: the second waits its turn.
    provider.enqueue(["Ok", "."])
    assert edit(client, token, question, "@gpt and now?", headers=HTMX).status_code == 200
    code, text = refusal(edit(client, token, question, "@gpt and now again?", headers=HTMX))
    assert code == 409 and "Wait for the answer to finish" in text or code == 429, (code, text)
    assert settled(app, reply)

    # The conversation moved on: someone wrote after the answer.
    _, other_token = open_page(other)
    post(other, other_token, "I have a question too", headers=HTMX)
    code, text = refusal(edit(client, token, question, "@gpt one more", headers=HTMX))
    assert code == 409 and "Only your last message can be edited" in text
    assert row(app, question).body == "@gpt and now?"


def test_without_javascript_the_edit_is_a_form_that_saves_and_redirects(app, client, provider):
    token, question, reply = asked(client, provider)
    assert settled(app, reply)
    page = client.get("/").get_data(as_text=True)
    # The page drawn for the asker has a plain link to the form, on that message only.
    assert page.count('data-action="edit"') == 1
    assert 'href="/messages/{}/edit"'.format(question) in page
    form = client.get("/messages/{}/edit".format(question))
    html = form.get_data(as_text=True)
    assert form.status_code == 200 and "@gpt what is two plus two?</textarea>" in html
    provider.enqueue(["Ten", "."])
    saved = client.post("/messages/{}/edit".format(question), data={"body": "@gpt five plus five?", "csrf_token": token})
    assert saved.status_code == 303
    assert saved.headers["Location"].endswith("/#message-{}".format(reply))
    assert settled(app, reply) and row(app, reply).body == "Ten."
    # A refused edit shows the form again, the text kept, the reason given.
    refused = client.post("/messages/{}/edit".format(question), data={"body": "five plus five?", "csrf_token": token})
    html = refused.get_data(as_text=True)
    assert refused.status_code == 400 and "Keep @gpt in the message" in html and "five plus five?</textarea>" in html
    # Someone else gets no form, and words.
    other = app.test_client()
    open_page(other)
    other_form = other.get("/messages/{}/edit".format(question))
    assert other_form.status_code == 403 and "Only the person who wrote" in other_form.get_data(as_text=True)
    assert "<textarea" not in other_form.get_data(as_text=True)


def test_the_export_says_a_message_was_edited(app, client, provider):
    token, question, reply = asked(client, provider)
    assert settled(app, reply)
    provider.enqueue(["Yes", "."])
    edit(client, token, question, "@gpt is it edited?", headers=HTMX)
    assert settled(app, reply)
    data = json.loads(client.get("/r/lobby.json").get_data(as_text=True))
    first = data["messages"][0]
    assert first["body"] == "@gpt is it edited?" and first["edited_at"].endswith("Z")
    assert data["messages"][1]["edited_at"] is None
    assert "· *edited*" in client.get("/r/lobby.md").get_data(as_text=True)
