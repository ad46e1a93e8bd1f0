"""The page, the composer's post in its three forms, bad input, and seeding."""

import pytest

from chat.llm.context import SYSTEM_PROMPT
from chat.llm.context import build_context
from chat.stream.reply import reply_context
from conftest import PacedProvider
from models import Chunk
from models import Message
from support.app_client import HTMX
from support.app_client import STREAM
from support.app_client import open_page
from support.app_client import post
from support.app_client import sse_events
from support.app_client import wait_until
from support.body import Body
from support.body import apply_author_stream
from support.body import parse_sse


def test_page_gives_each_session_a_name_and_a_composer(client):
    html, _ = open_page(client)
    assert "You are <strong class=\"me\">" in html
    name = html.split('class="me">')[1].split("<")[0]
    assert name and name == client.get("/").get_data(as_text=True).split('class="me">')[1].split("<")[0]
    assert '<form id="composer"' in html and 'name="body"' in html and 'type="submit"' in html
    other = open_page(client.application.test_client())[0].split('class="me">')[1].split("<")[0]
    assert other  # a second browser gets its own session (names may rarely collide)


def test_security_headers_and_cookie_flags(client):
    response = client.get("/")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    secure = client.application.test_client().get("/", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in secure.headers["Set-Cookie"]


def test_plain_message_over_htmx_returns_its_article(client, app):
    _, token = open_page(client)
    response = post(client, token, "hello <b>all</b>", HTMX)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert html.startswith('<hx-upsert hx-target="#messages" sort><article class="message"')
    assert "hello &lt;b&gt;all&lt;/b&gt;" in html
    with app.app_context():
        assert [m.body for m in Message.select()] == ["hello <b>all</b>"]


def test_gpt_message_streams_tokens_then_the_final_article(client, app, provider):
    provider.enqueue(["Sure", ".", "\n\n", "- a", "\n", "- <b>", " done", "."])
    _, token = open_page(client)
    response = post(client, token, "@gpt list things", STREAM)
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    reply_id = int(response.headers["X-Reply-Id"])
    assert response.headers["HX-Retarget"] == "#message-{}-body".format(reply_id)
    events = parse_sse(response.get_data(as_text=True))
    first, drawing, final = events[0][1], events[1:-1], events[-1][1]
    assert 'data-role="user"' in first and 'data-status="streaming"' in first
    # The reply is drawn as Markdown while it streams; the last event leaves
    # that body in place and only changes the article around it.
    body = Body(reply_id)
    apply_author_stream(body, drawing)
    assert body.html == "<p>Sure.</p><ul>\n<li>a</li>\n<li>&lt;b&gt; done.</li>\n</ul>"
    assert all(data.strip() for _, data in drawing), "no whitespace-only swaps"
    assert 'data-status="complete"' in final and "done." not in final
    assert 'id="message-{}-body" hx-preserve></div>'.format(reply_id) in final
    with app.app_context():
        reply = Message.get_by_id(reply_id)
        assert reply.body == "Sure.\n\n- a\n- <b> done."
        assert reply.status == "complete" and reply.completion_tokens == 8
        assert Chunk.select().count() == 0, "chunks are compacted on completion"
    context = provider.requests[0]
    assert context[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert context[-1]["content"].endswith(": @gpt list things")


def test_without_javascript_post_redirects_and_the_reply_completes(client, app, provider):
    provider.enqueue(["No", " JS", " needed", "."])
    _, token = open_page(client)
    response = post(client, token, "@gpt plain form", page="")
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/#message-")
    with app.app_context():
        assert wait_until(lambda: Message.select().where(Message.status == "complete", Message.role == "assistant").exists())
        assert Message.get(Message.role == "assistant").body == "No JS needed."
    assert "No JS needed." in client.get("/").get_data(as_text=True)


@pytest.mark.parametrize("body", ["", "   \n\t ", "\x00\x07"])
def test_empty_messages_are_refused_and_nothing_is_created(client, app, body):
    _, token = open_page(client)
    response = post(client, token, body, HTMX)
    assert response.status_code == 400
    assert response.headers["HX-Retarget"] == "#composer-error"
    assert "empty" in response.get_data(as_text=True)
    with app.app_context():
        assert Message.select().count() == 0


def test_too_long_message_gets_413_and_keeps_the_draft(client, app):
    _, token = open_page(client)
    text = "x" * (app.config["MAX_MESSAGE_LENGTH"] + 1)
    response = post(client, token, text)
    assert response.status_code == 413
    html = response.get_data(as_text=True)
    assert "the limit is 4,000" in html
    assert text in html, "what the person typed is not lost"
    with app.app_context():
        assert Message.select().count() == 0


def test_control_characters_are_stripped(client, app):
    _, token = open_page(client)
    post(client, token, "a\x00b\u200bc\r\nd\te", HTMX)
    with app.app_context():
        assert Message.get().body == "abc\nd\te"


def test_posts_without_the_csrf_token_create_nothing(client, app):
    open_page(client)
    for token in ("", "forged"):
        response = post(client, token, "hello", HTMX)
        assert response.status_code == 403
    with app.app_context():
        assert Message.select().count() == 0


def test_failed_model_call_marks_the_reply_failed_with_a_readable_error(client, app, provider):
    class Broken(Exception):
        status_code = 503

    def explode(messages):
        raise Broken("secret-key-sk-123 internal detail")

    provider.stream = explode
    _, token = open_page(client)
    response = post(client, token, "@gpt hi", STREAM)
    final = sse_events(response)[-1]
    assert 'data-status="failed"' in final
    assert "The model provider had an error (503)" in final
    assert "secret" not in final
    with app.app_context():
        assert Message.get(Message.role == "assistant").status == "failed"


def test_seed_conversation_on_a_fresh_database_once(app, client):
    app.config["SEED_DEMO"] = True
    html, _ = open_page(client)
    assert html.count('class="message"') == 4
    assert "@gpt" in html and 'data-status="streaming"' in html
    with app.app_context():
        assert wait_until(lambda: Message.get(Message.role == "assistant").status == "complete")
    html, _ = open_page(client)
    assert html.count('class="message"') == 4, "seeded only once"


def test_init_db_command(runner):
    result = runner.invoke(args=["init-db"])
    assert result.exit_code == 0 and "Database ready" in result.output


def test_build_context_roles_and_names():
    class M:
        def __init__(self, role, author, body):
            self.role, self.author, self.body = role, author, body

    context = build_context([M("user", "Ann", "@gpt hi"), M("assistant", "gpt", "Hello Ann."), M("assistant", "gpt", "")])
    assert context[1:] == [
        {"role": "user", "content": "Ann: @gpt hi"},
        {"role": "assistant", "content": "Hello Ann."},
    ]


def test_reply_context_keeps_the_question_when_the_room_moves_on(app):
    with app.app_context():
        Message.create(room="main", author="Bo", role="user", body="earlier")
        question = Message.create(room="main", author="Ann", role="user", body="@gpt what is 2+2?")
        reply = Message.new_reply(question)
        for n in range(30):  # a busy room keeps posting while the reply waits for its model
            Message.create(room="main", author="Cy", role="user", body="later {}".format(n))
        Message.create(room="other", author="Di", role="user", body="another room")
        context = reply_context(reply, 2)
    assert [m["content"] for m in context[1:]] == ["Bo: earlier", "Ann: @gpt what is 2+2?"]
    assert context[0]["role"] == "system"


@pytest.mark.parametrize("raw", [b"body=%ff%fehi", b"body=\xff\xfehi"])
def test_undecodable_bodies_get_400_and_create_nothing(client, app, raw):
    _, token = open_page(client)
    response = client.post(
        "/messages",
        data=raw + b"&csrf_token=" + token.encode(),
        content_type="application/x-www-form-urlencoded",
        headers=HTMX,
    )
    assert response.status_code == 400
    assert "not valid UTF-8" in response.get_data(as_text=True)
    with app.app_context():
        assert Message.select().count() == 0


def test_utf8_text_is_accepted_as_typed(client, app):
    _, token = open_page(client)
    assert post(client, token, "naïve café 你好 %FF", HTMX).status_code == 200
    with app.app_context():
        assert Message.get().body == "naïve café 你好 %FF"


@pytest.mark.parametrize("frame_text, most_events", [(1, None), (200, 3)])
def test_stream_frame_text_sets_how_much_text_a_held_event_waits_for(client, app, frame_text, most_events):
    """In a burst (tokens 20 ms apart, a 1 s frame) an event waits until it
    carries STREAM_FRAME_TEXT characters: one token is enough for 1, and 200
    holds the whole burst to the end of the frame."""
    app.config.update(STREAM_FRAME_TIME=1.0, STREAM_FRAME_TEXT=frame_text)
    provider = app.extensions["chat"]["generator"].provider = PacedProvider(delay=0.02)
    tokens = ["One", " two", " three", " four", " five", " six", " seven", " eight", "."]
    provider.enqueue(tokens)
    _, token = open_page(client)
    events = parse_sse(post(client, token, "@gpt count", STREAM).get_data(as_text=True))
    plain = [data for name, data in events[1:-1] if name != "reply-at"]
    if most_events is None:
        assert len(plain) >= len(tokens) - 2, plain  # about one a token
    else:
        assert len(plain) <= most_events, plain


@pytest.mark.parametrize(
    "mode,appends,articles", [("append", 2, 2), ("whole-per-chunk", 0, 5), ("whole-per-token", 0, 7)]
)
def test_fanout_modes_for_the_benchmark(client, app, provider, mode, appends, articles):
    """This design sends only new pieces; the baselines re-send whole messages."""
    generator = app.extensions["chat"]["generator"]
    generator.fanout = mode
    watcher = app.extensions["chat"]["hub"].subscribe("lobby")
    provider.enqueue(["One", ".", " Two", "."])
    _, token = open_page(client)
    events = sse_events(post(client, token, "@gpt count", STREAM))
    kinds = []
    while not watcher.queue.empty():
        kinds.append(watcher.queue.get_nowait().kind)
    # user article, reply article, then the pieces, then the final article
    # (this design: only its new status around the body every page has)
    assert kinds.count("append") == appends
    assert kinds.count("article") == articles
    assert kinds.count("settle") == (1 if mode == "append" else 0)
    if mode == "whole-per-token":
        assert sum("hx-upsert" in e for e in events) == 6, "the asker too gets the whole message per token"



@pytest.mark.parametrize("page, expected", [("ab12", "ab12"), ("a b", None), ("x" * 40, None)])
def test_only_a_hex_page_id_is_taken(client, app, page, expected):
    """The page id names whose socket skips its own messages (and travels to
    other processes): anything but the hex ids pages are given is dropped."""
    _, token = open_page(client)
    sub = app.extensions["chat"]["hub"].subscribe("lobby")
    assert post(client, token, "hello", HTMX, page=page).status_code == 200
    event = sub.queue.get(timeout=2)
    assert event.kind == "article" and event.page == expected
