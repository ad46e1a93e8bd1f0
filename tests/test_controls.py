"""Stop, Retry, rate limits and the watchdog, through the app and its database."""
from datetime import timedelta

import gevent

from conftest import csrf_from
from hub import Hub
from models import Chunk
from models import Message
from models import utcnow
from providers import TokenStream
from watchdog import sweep

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
