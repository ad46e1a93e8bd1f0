"""Stop, Retry, rate limits and the watchdog, through the app and its database."""
from datetime import timedelta

import gevent

from chat.fanout.hub import Hub
from chat.llm.tokens import TokenStream
from chat.stream.watchdog import sweep
from conftest import PacedProvider
from conftest import csrf_from
from models import Chunk
from models import Message
from models import ReplyRestart
from models import utcnow

HTMX = {"HX-Request": "true"}
STREAM = {"HX-Request": "true", "Accept": "text/html, text/event-stream"}


class SlowProvider:
    """Tokens every 20 ms until closed; records whether it was closed."""

    model = "slow"

    def __init__(self):
        self.closed = []

    def stream(self, messages):
        def tokens():
            for i in range(500):
                gevent.sleep(0.02)
                yield " word{}.".format(i)

        stream = TokenStream(tokens(), close=lambda: self.closed.append(True))
        return stream


def page(client):
    html = client.get("/").get_data(as_text=True)
    return csrf_from(html)


def ask(client, token, body="@gpt go", headers=STREAM):
    return client.post("/messages", data={"body": body, "page": "ee01", "csrf_token": token}, headers=headers)


def wait_for(predicate, timeout=5.0):
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return True
        gevent.sleep(0.01)
    return False


def reply_of(app):
    with app.app_context():
        return Message.get(Message.role == "assistant")


def test_stop_closes_upstream_keeps_text_and_marks_stopped(app, client):
    slow = app.extensions["chat"]["generator"].provider = SlowProvider()
    token = page(client)
    response = ask(client, token, headers=HTMX)  # htmx without the stream: reply runs in the background
    assert response.status_code == 200
    reply = reply_of(app)
    assert 'data-action="stop"' in response.get_data(as_text=True)
    assert wait_for(lambda: Chunk.select().where(Chunk.message == reply.id).count() >= 3)
    stop = client.post("/messages/{}/stop".format(reply.id), headers=dict(HTMX, **{"X-CSRF-Token": token}))
    assert stop.status_code == 204
    assert wait_for(lambda: reply_of(app).status == "stopped")
    stopped = reply_of(app)
    assert slow.closed, "the upstream request was closed"
    assert stopped.body.startswith("word0. word1. word2."), "a reply starts at its first visible character"
    assert Chunk.select().where(Chunk.message == reply.id).count() == 0
    assert 'data-action="retry"' in client.get("/").get_data(as_text=True)


def test_only_the_asker_can_stop_and_unknown_replies_are_404(app, client):
    app.extensions["chat"]["generator"].provider = SlowProvider()
    token = page(client)
    ask(client, token, headers=HTMX)
    reply = reply_of(app)
    other = app.test_client()
    other_token = page(other)
    response = other.post("/messages/{}/stop".format(reply.id), headers=dict(HTMX, **{"X-CSRF-Token": other_token}))
    assert response.status_code == 403
    assert reply_of(app).status == "streaming"
    missing = client.post("/messages/999/stop", headers=dict(HTMX, **{"X-CSRF-Token": token}))
    assert missing.status_code == 404
    app.extensions["chat"]["generator"].stop(reply.id)


def test_retry_asks_again_and_refuses_what_is_not_retryable(app, client, provider):
    def fail(messages):
        raise ConnectionError("down")

    original = provider.stream
    provider.stream = fail
    token = page(client)
    ask(client, token).get_data()
    assert reply_of(app).status == "failed"
    headers = dict(HTMX, **{"X-CSRF-Token": token})
    provider.stream = original
    provider.enqueue(["Second", " try", "."])
    assert client.post("/messages/{}/retry".format(reply_of(app).id), headers=headers).status_code == 204
    assert wait_for(lambda: reply_of(app).status == "complete")
    assert reply_of(app).body == "Second try."
    again = client.post("/messages/{}/retry".format(reply_of(app).id), headers=headers)
    assert again.status_code == 409


def test_one_reply_at_a_time_per_session_and_rates(app, client):
    app.extensions["chat"]["generator"].provider = SlowProvider()
    token = page(client)
    ask(client, token, headers=HTMX)
    busy = ask(client, token, "@gpt and another", headers=HTMX)
    assert busy.status_code == 429
    assert "still answering you" in busy.get_data(as_text=True)
    app.extensions["chat"]["generator"].stop(reply_of(app).id)
    app.config["POSTS_PER_MINUTE"] = 3
    for i in range(2):
        assert ask(client, token, "plain {}".format(i), headers=HTMX).status_code == 200
    refused = ask(client, token, "one too many", headers=HTMX)
    assert refused.status_code == 429 and "too fast" in refused.get_data(as_text=True)
    with app.app_context():
        assert Message.select().where(Message.body == "one too many").count() == 0


def test_watchdog_interrupts_replies_with_no_recent_activity_only(app):
    with app.app_context():
        question = Message.create(room="lobby", author="A", role="user", body="@gpt q")
        dead = Message.new_reply(question)
        Chunk.create(message=dead.id, seq=1, text="Kept sentence. ")
        old = utcnow() - timedelta(seconds=120)
        Message.update(created_at=old).where(Message.id == dead.id).execute()
        Chunk.update(created_at=old).execute()
        alive = Message.new_reply(question)  # created just now
        hub = Hub()
        watcher = hub.subscribe("lobby")
        generator = app.extensions["chat"]["generator"]
        assert sweep(generator, hub, app.extensions["chat"]["relay"], stale_after=45) == [dead.id]
        dead = Message.get_by_id(dead.id)
        assert dead.status == "interrupted" and dead.body == "Kept sentence. "
        assert Message.get_by_id(alive.id).status == "streaming"
        event = watcher.queue.get_nowait()
        assert 'data-status="interrupted"' in event.html and 'data-action="retry"' in event.html
        # A chunk committed recently keeps a reply alive, whatever its age.
        Message.update(created_at=old).where(Message.id == alive.id).execute()
        Chunk.create(message=alive.id, seq=1, text="Fresh. ")
        assert sweep(generator, hub, app.extensions["chat"]["relay"], stale_after=45) == []


def test_stop_is_heard_before_the_model_answers(app, client):
    class Silent:
        model = "silent"

        def stream(self, messages):
            gevent.sleep(30)  # the request is still waiting for the model's headers

    app.extensions["chat"]["generator"].provider = Silent()
    token = page(client)
    ask(client, token, headers=HTMX)
    reply = reply_of(app)
    gevent.sleep(0.05)
    stop = client.post("/messages/{}/stop".format(reply.id), headers=dict(HTMX, **{"X-CSRF-Token": token}))
    assert stop.status_code == 204
    assert wait_for(lambda: reply_of(app).status == "stopped", timeout=2)


def test_a_silent_model_still_shows_the_reply_is_alive(app, client):
    """While nothing is committed, a heartbeat keeps other processes' watchdogs away."""

    class Silent:
        model = "silent"

        def stream(self, messages):
            gevent.sleep(30)

    generator = app.extensions["chat"]["generator"]
    generator.provider = Silent()
    generator.heartbeat = 0.05
    token = page(client)
    ask(client, token, headers=HTMX)
    first = None
    assert wait_for(lambda: reply_of(app).active_at is not None, timeout=2)
    first = reply_of(app).active_at
    assert wait_for(lambda: reply_of(app).active_at > first, timeout=2), "the heartbeat repeats"
    generator.stop(reply_of(app).id)


# -- Regenerate -------------------------------------------------------------------




def control(client, token, reply_id, action, htmx=True):
    headers = dict(HTMX, **{"X-CSRF-Token": token}) if htmx else {}
    data = {} if htmx else {"csrf_token": token}
    return client.post("/messages/{}/{}".format(reply_id, action), data=data, headers=headers)


def answered(app, client, provider, tokens, question="@gpt go"):
    """Ask and wait for the complete reply; (csrf token, reply)."""
    token = page(client)
    provider.enqueue(tokens)
    ask(client, token, question).get_data()
    assert wait_for(lambda: reply_of(app).status == "complete")
    return token, reply_of(app)


def test_regenerate_replaces_the_answer_in_place_for_everyone(app, client, provider):
    token, first = answered(app, client, provider, ["The", " first", " answer", "."])
    assert first.body == "The first answer."
    watcher = app.extensions["chat"]["hub"].subscribe("lobby")
    provider.enqueue(["A", " second", " one", "."])
    response = control(client, token, first.id, "regenerate")
    assert response.status_code == 204
    assert wait_for(lambda: reply_of(app).status == "complete")

    again = reply_of(app)  # still the only reply: the same row, the same id
    assert again.id == first.id and again.body == "A second one."
    with app.app_context():
        assert Message.select().where(Message.role == "assistant").count() == 1
    # Every page was told the article went back to empty and streaming.
    reset = watcher.queue.get_nowait()
    assert reset.kind == "article" and reset.message_id == first.id
    assert 'data-status="streaming"' in reset.html and "first answer" not in reset.html
    # The model saw the question, not the answer it replaces.
    context = provider.requests[-1]
    assert context[-1]["role"] == "user" and context[-1]["content"].endswith("@gpt go")
    assert all("first answer" not in m["content"] for m in context)
    page_html = client.get("/").get_data(as_text=True)
    assert "A second one." in page_html and "The first answer." not in page_html


def test_regenerate_is_for_the_asker_and_the_newest_finished_reply_only(app, client, provider):
    token, reply = answered(app, client, provider, ["Done", "."])
    other = app.test_client()
    other_token = page(other)
    assert control(other, other_token, reply.id, "regenerate").status_code == 403
    assert control(client, token, 999, "regenerate").status_code == 404
    assert control(client, token, reply.reply_to_id, "regenerate").status_code == 404, "a question is not a reply"

    # Someone writes after it: the conversation moved on.
    ask(other, other_token, "thanks!", headers=HTMX)
    moved_on = control(client, token, reply.id, "regenerate")
    assert moved_on.status_code == 409
    assert "newest message" in moved_on.get_data(as_text=True)
    assert moved_on.headers["HX-Retarget"] == "#composer-error"
    assert reply_of(app).body == "Done." and reply_of(app).status == "complete"
    with app.app_context():
        assert not Message.get_by_id(reply.id).restart("w", statuses=("complete",), newest=True)
        assert Message.get_by_id(reply.id).status == "complete"



def test_only_later_messages_of_its_own_room_count(app, client, provider):
    token, reply = answered(app, client, provider, ["Lobby", " answer", "."])
    other = app.test_client()
    other_token = page(other)
    posted = other.post("/messages", data={"body": "elsewhere", "room": "kitchen", "csrf_token": other_token},
                        headers=HTMX)
    assert posted.status_code == 200
    with app.app_context():
        assert Message.get(Message.body == "elsewhere").id > reply.id
    provider.enqueue(["Still", " the", " newest", "."])
    assert control(client, token, reply.id, "regenerate").status_code == 204
    assert wait_for(lambda: reply_of(app).body == "Still the newest.")


def test_no_regenerate_on_a_page_of_older_messages(app, client, provider):
    token, reply = answered(app, client, provider, ["Done", "."])
    assert 'data-action="regenerate"' in client.get("/").get_data(as_text=True)
    # A page of history ending with this reply: it may not be the newest.
    history = client.get("/?before={}".format(reply.id + 1)).get_data(as_text=True)
    assert 'id="message-{}"'.format(reply.id) in history
    assert 'data-action="regenerate"' not in history

def test_regenerate_refuses_a_reply_still_streaming_or_failed(app, client, provider):
    generator = app.extensions["chat"]["generator"]
    generator.provider = SlowProvider()
    token = page(client)
    ask(client, token, headers=HTMX)
    reply = reply_of(app)
    streaming = control(client, token, reply.id, "regenerate")
    assert streaming.status_code == 409 and "finished reply" in streaming.get_data(as_text=True)
    generator.stop(reply.id)
    assert wait_for(lambda: reply_of(app).status == "stopped")
    assert control(client, token, reply.id, "regenerate").status_code == 409, "Retry is for a stopped reply"
    assert reply_of(app).status == "stopped"


def test_regenerate_waits_for_the_askers_other_reply_and_the_server_cap(app, client, provider):
    token, reply = answered(app, client, provider, ["Done", "."])
    with app.app_context():
        # A reply of this session still streaming elsewhere (another room).
        busy = Message.create(room="elsewhere", author="gpt", role="assistant", status="streaming",
                              session_key=reply.session_key)
    refused = control(client, token, reply.id, "regenerate")
    assert refused.status_code == 429 and "still answering you" in refused.get_data(as_text=True)
    with app.app_context():
        Message.update(session_key="someone-else").where(Message.id == busy.id).execute()
    app.config["MAX_CONCURRENT_REPLIES"] = 1
    assert control(client, token, reply.id, "regenerate").status_code == 503

    def current():
        with app.app_context():
            return Message.get_by_id(reply.id)

    assert current().body == "Done." and current().status == "complete"
    app.config["MAX_CONCURRENT_REPLIES"] = 100
    provider.enqueue(["Again", "."])
    assert control(client, token, reply.id, "regenerate").status_code == 204
    assert wait_for(lambda: current().body == "Again.")


def test_regenerate_without_javascript_is_a_form_post_and_a_redirect(app, client, provider):
    token, reply = answered(app, client, provider, ["Plain", "."])
    # The page drawn for the asker has the control as a plain form with its
    # token; the one drawn for anyone else has no form, and no token of theirs.
    html = client.get("/").get_data(as_text=True)
    form = '<form class="message-control-form" method="post" action="/messages/{}/regenerate">'.format(reply.id)
    assert form in html and 'name="csrf_token" value="{}"'.format(token) in html.split(form)[1][:200]
    other = app.test_client()
    other_html = other.get("/").get_data(as_text=True)
    assert form not in other_html and token not in other_html

    provider.enqueue(["Posted", " again", "."])
    response = control(client, token, reply.id, "regenerate", htmx=False)
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/#message-{}".format(reply.id))
    assert wait_for(lambda: reply_of(app).body == "Posted again.")
    # Without the token, nothing happens.
    assert client.post("/messages/{}/regenerate".format(reply.id)).status_code == 403


def test_pushed_articles_carry_no_ones_token(app, client, provider):
    watcher = app.extensions["chat"]["hub"].subscribe("lobby")
    token, reply = answered(app, client, provider, ["Shared", "."])
    events = []
    while not watcher.queue.empty():
        events.append(watcher.queue.get_nowait())
    assert events and all(token not in e.html and "<form" not in e.html for e in events)


# -- the footer and the badges ------------------------------------------------------


def footer(html, reply_id):
    """{class: text} of the spans in a reply's footer, from a page."""
    import re

    article = html.split('id="message-{}"'.format(reply_id))[1].split("</article>")[0]
    found = re.search(r'<footer class="message-usage">(.*?)</footer>', article, re.S)
    if found is None:
        return None
    return dict(re.findall(r'<span class="usage-([a-z]+)">([^<]*)</span>', found.group(1)))


def duration(ms):
    """A time as the footer writes it."""
    return "{} ms".format(ms) if ms < 1000 else "{:.1f} s".format(ms / 1000)


def test_footer_shows_model_tokens_first_token_and_pace(app, client):
    paced = app.extensions["chat"]["generator"].provider = PacedProvider(delay=0.03)
    tokens = ["One", " two", " three", " four", " five", "."]
    token, reply = answered(app, client, paced, tokens)
    # First token to last: five pauses of 30 ms.
    assert 140 <= reply.generation_ms < 3000, reply.generation_ms
    assert reply.ttft_ms is not None and reply.ttft_ms < 500
    assert (reply.prompt_tokens, reply.completion_tokens) == (11, 6)
    shown = footer(client.get("/").get_data(as_text=True), reply.id)
    assert shown == {
        "model": "paced",
        "prompt": "11 prompt tokens",
        "completion": "6 completion tokens",
        "ttft": "first token in " + duration(reply.ttft_ms),
        "rate": "{:.1f} tokens/s".format(6000 / reply.generation_ms),
    }
    assert 2 < 6000 / reply.generation_ms < 45

    # Regenerating clears the old figures until the new answer has its own.
    paced.delay = 0.3
    paced.enqueue(["Slow", " one", "."])
    assert control(client, token, reply.id, "regenerate").status_code == 204
    assert wait_for(lambda: reply_of(app).status == "streaming")
    streaming = reply_of(app)
    assert (streaming.generation_ms, streaming.ttft_ms, streaming.completion_tokens) == (None, None, None)
    assert footer(client.get("/").get_data(as_text=True), reply.id) is None
    assert wait_for(lambda: reply_of(app).status == "complete")
    assert 550 <= reply_of(app).generation_ms < 5000


def test_footer_without_usage_shows_what_is_known(app, client):
    paced = app.extensions["chat"]["generator"].provider = PacedProvider(delay=0.05, usage=False)
    token, reply = answered(app, client, paced, ["No", " usage", " here", "."])
    assert reply.prompt_tokens is None and reply.completion_tokens is None
    html = client.get("/").get_data(as_text=True)
    shown = footer(html, reply.id)
    assert shown == {
        "model": "paced",
        "ttft": "first token in " + duration(reply.ttft_ms),
        "duration": "written in {:.1f} s".format(reply.generation_ms / 1000),
    }
    assert "None" not in html.split('id="message-{}"'.format(reply.id))[1].split("</article>")[0]


def test_the_demo_model_reports_usage_for_a_full_footer(app, client):
    from chat.llm.demo import DemoProvider

    demo = app.extensions["chat"]["generator"].provider = DemoProvider(token_delay=0.001, first_token_delay=0)
    token = page(client)
    ask(client, token, "@gpt hello demo").get_data()
    assert wait_for(lambda: reply_of(app).status == "complete")
    reply = reply_of(app)
    assert reply.completion_tokens and reply.completion_tokens > 20 and reply.prompt_tokens
    shown = footer(client.get("/").get_data(as_text=True), reply.id)
    assert set(shown) == {"model", "prompt", "completion", "ttft", "rate"}, shown
    assert shown["model"] == demo.model


def test_finished_replies_show_a_status_badge_and_the_reason(app):
    from chat.render.rendering import render_message

    with app.test_request_context():
        question = Message.create(room="lobby", author="A", role="user", body="@gpt q")
        for status, badge, reason in [
            ("failed", "Failed", "Could not reach the model provider."),
            ("stopped", "Stopped", "Stopped before the reply was finished."),
            ("interrupted", "Interrupted", "The server restarted before the reply was finished."),
        ]:
            reply = Message.new_reply(question)
            reply.status = status
            reply.error = reason if status == "failed" else None
            html = render_message(reply)
            assert '<span class="message-badge" data-badge="{}">{}</span>'.format(status, badge) in html
            assert html.index("message-badge") < html.index("</header>"), "the badge is on the meta line"
            assert '<p class="message-notice" role="status">{}</p>'.format(reason) in html
            assert 'data-action="retry"' in html and 'data-action="regenerate"' not in html
        reply.status = "complete"
        html = render_message(reply)
        assert "message-badge" not in html and "message-notice" not in html
        assert 'data-action="regenerate"' in html and 'title="Replace this answer with a new one"' in html


def test_footer_writes_long_waits_in_seconds(app):
    from chat.render.rendering import render_message

    with app.test_request_context():
        question = Message.create(room="lobby", author="A", role="user", body="@gpt q")
        reply = Message.new_reply(question, model="m")
        reply.status, reply.ttft_ms, reply.generation_ms, reply.completion_tokens = "complete", 2345, 4000, 50
        html = render_message(reply)
        assert '<span class="usage-ttft">first token in 2.3 s</span>' in html
        assert '<span class="usage-rate">12.5 tokens/s</span>' in html
        assert "prompt tokens" not in html, "a count the server did not send is left out"


def test_regenerate_and_retry_count_as_questions_to_the_model(app, client, provider):
    """ASKS_PER_MINUTE counts every generation a session starts: asking,
    Regenerate and Retry alike, so none of them loops the model freely."""
    app.config["ASKS_PER_MINUTE"] = 3
    token, reply = answered(app, client, provider, ["One", "."])
    for n in range(2):  # two more generations: three in the minute
        provider.enqueue(["Again", "."])
        assert control(client, token, reply.id, "regenerate").status_code == 204
        assert wait_for(lambda: reply_of(app).status == "complete")
    refused = control(client, token, reply.id, "regenerate")
    assert refused.status_code == 429
    assert "asked @gpt a lot this minute" in refused.get_data(as_text=True)
    assert reply_of(app).status == "complete" and len(provider.requests) == 3
    # A stopped reply's Retry is held back the same way.
    with app.app_context():
        Message.update(status="stopped").where(Message.id == reply.id).execute()
    assert control(client, token, reply.id, "retry").status_code == 429
    assert len(provider.requests) == 3
    # The minute passes: the next one goes.
    with app.app_context():
        past = utcnow() - timedelta(seconds=61)
        Message.update(created_at=past).execute()
        ReplyRestart.update(created_at=past).execute()
    provider.enqueue(["Fresh", "."])
    assert control(client, token, reply.id, "retry").status_code == 204
    assert wait_for(lambda: reply_of(app).status == "complete") and reply_of(app).body == "Fresh."
