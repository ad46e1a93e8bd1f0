"""A room's own assistant, through the app: instructions and a model chosen
from what the server offers, stored on the room, shown on its page, sent with
every question asked there (and only there), checked and rate limited, and
told to the room's pages; the real ``openai`` SDK lists a real server's models."""
import time

import gevent

from chat.llm.context import SYSTEM_PROMPT
from chat.llm.openai_compat import OpenAIProvider
from chat.llm.providers import offered_models
from chat.llm.tokens import TokenStream
from models import Room
from models import db
from support.app_client import HTMX
from support.app_client import STREAM
from support.app_client import open_page
from support.app_client import sse_events


class ModelsProvider:
    """A scripted model whose server offers several models; records which one
    each reply asked for."""

    model = "house-model"

    def __init__(self, offered=("house-model", "big-model", "small-model")):
        self.offered = None  # offered_models keeps its cache here
        self.names = list(offered)
        self.asked = []  # (model, messages)

    def models(self):
        return list(self.names)

    def stream(self, messages, model=None):
        self.asked.append((model or self.model, messages))
        return TokenStream(iter(["Ahoy", "."]))


def use(app, provider):
    """``provider`` answers, its models already listed (the app factory reads
    them as it starts)."""
    app.extensions["chat"]["generator"].provider = provider
    offered_models(provider)
    return provider


def room_page(client, room):
    html = client.get("/r/{}".format(room)).get_data(as_text=True)
    token = html.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    return html, token


def set_assistant(client, token, room, instructions, model, headers=HTMX):
    return client.post(
        "/r/{}/assistant".format(room),
        data={"instructions": instructions, "model": model, "csrf_token": token},
        headers=headers,
    )


def ask(client, token, room, text="@gpt hello"):
    response = client.post(
        "/messages", data={"body": text, "room": room, "page": "ab01", "csrf_token": token}, headers=STREAM
    )
    return sse_events(response)


def test_a_rooms_instructions_and_model_answer_its_questions_only(app, client):
    provider = use(app, ModelsProvider())
    html, token = room_page(client, "pirates")
    assert '<option value="big-model">big-model</option>' in html
    assert "<option value=\"house-model\" selected>house-model (the server's default)</option>" in html
    response = set_assistant(client, token, "pirates", "Talk like a pirate.\nKeep it short.", "big-model")
    assert response.status_code == 200
    assert "Saved: everyone in #pirates now asks this assistant." in response.get_data(as_text=True)
    with app.app_context(), db.connection_context():
        room = Room.get(Room.name == "pirates")
    assert (room.instructions, room.model, room.messages) == ("Talk like a pirate.\nKeep it short.", "big-model", 0)

    # The room's page says so.
    html, token = room_page(client, "pirates")
    assert '<span id="room-model" class="model-name">big-model</span>' in html
    assert "Talk like a pirate.\nKeep it short.</p>" in html
    assert '<option value="big-model" selected>' in html

    # A question there is sent with the instructions, to the room's model,
    # and its reply says so from its first event on.
    events = ask(client, token, "pirates")
    assert '<span class="message-model">big-model</span>' in events[0]
    gevent.sleep(0.05)
    model, messages = provider.asked[-1]
    assert model == "big-model"
    assert messages[0]["role"] == "system"
    assert messages[0]["content"].startswith(SYSTEM_PROMPT)
    assert messages[0]["content"].endswith("Talk like a pirate.\nKeep it short.")
    # The reply says which model wrote it.
    page, _ = room_page(client, "pirates")
    assert '<span class="message-model">big-model</span>' in page

    # Another room keeps the default assistant.
    _, lobby_token = open_page(client)
    ask(client, lobby_token, "lobby")
    gevent.sleep(0.05)
    model, messages = provider.asked[-1]
    assert model == "house-model" and messages[0]["content"] == SYSTEM_PROMPT

    # Back to the default: empty instructions, the default model.
    assert set_assistant(client, token, "pirates", "  ", "house-model").status_code == 200
    with app.app_context(), db.connection_context():
        room = Room.get(Room.name == "pirates")
    assert (room.instructions, room.model) == (None, None)


def refused(response):
    return response.status_code, response.get_data(as_text=True)


def test_what_cannot_be_set_is_refused_in_words(app, client):
    use(app, ModelsProvider())
    _, token = room_page(client, "quiz")
    code, text = refused(set_assistant(client, token, "quiz", "x" * 2001, "house-model"))
    assert code == 413 and "2,001 characters long; the limit is 2,000" in text and 'id="assistant-form"' in text
    assert "x" * 2001 + "</textarea>" in text, "what was typed comes back"
    code, text = refused(set_assistant(client, token, "quiz", "Be brief.", "gpt-9000"))
    assert code == 400 and "“gpt-9000” is not a model this server offers" in text and "big-model" in text
    code, _ = refused(client.post("/r/quiz/assistant", data={"csrf_token": token}, headers=HTMX))
    assert code == 400
    assert client.post("/r/Not_A_Room/assistant", data={"instructions": "", "model": "", "csrf_token": token}).status_code == 404
    # No CSRF token, no change.
    assert client.post("/r/quiz/assistant", data={"instructions": "hacked", "model": "big-model"}).status_code == 403
    with app.app_context(), db.connection_context():
        assert Room.get_or_none(Room.name == "quiz") is None

    # Ten changes an hour per person, then words.
    app.config["ASSISTANT_CHANGES_PER_HOUR"] = 3
    for i in range(3):
        assert set_assistant(client, token, "quiz", "Version {}".format(i), "house-model").status_code == 200
    code, text = refused(set_assistant(client, token, "quiz", "Version 3", "house-model"))
    assert code == 429 and "changed rooms&#39; assistants 3 times in the last hour" in text
    # Saving what is already set is no change, and is not counted.
    assert set_assistant(client, token, "quiz", "Version 2", "house-model").status_code == 200


def test_without_javascript_the_form_saves_and_refusals_keep_the_text(app, client):
    use(app, ModelsProvider())
    _, token = room_page(client, "plain")
    page = client.get("/r/plain/assistant")
    assert page.status_code == 200 and 'action="/r/plain/assistant"' in page.get_data(as_text=True)
    saved = set_assistant(client, token, "plain", "Answer in haiku.", "small-model", headers={})
    assert saved.status_code == 303 and saved.headers["Location"].endswith("/r/plain")
    long = "Be kind. " * 300
    code, text = refused(set_assistant(client, token, "plain", long, "small-model", headers={}))
    assert code == 413 and long.strip() in text and "<h1>#plain's assistant</h1>" in text


def test_the_rooms_pages_hear_of_a_new_assistant(app, client):
    use(app, ModelsProvider())
    hub = app.extensions["chat"]["hub"]
    sub = hub.subscribe("pirates")
    other = hub.subscribe("lobby")
    _, token = room_page(client, "pirates")
    set_assistant(client, token, "pirates", "Arr <b>matey</b>", "big-model")
    event = sub.queue.get_nowait()
    assert event.kind == "room"
    assert '<span id="room-model" class="model-name" hx-swap-oob="true">big-model</span>' in event.html
    assert "Arr &lt;b&gt;matey&lt;/b&gt;" in event.html
    assert other.queue.empty()
    hub.unsubscribe(sub)
    hub.unsubscribe(other)


def test_a_server_that_cannot_list_its_models_offers_its_default_only(app, client):
    class Silent(ModelsProvider):
        def models(self):
            raise ConnectionError("no /models here")

    use(app, Silent())
    assert offered_models(app.extensions["chat"]["generator"].provider) == ["house-model"]
    _, token = room_page(client, "quiet")
    code, text = refused(set_assistant(client, token, "quiet", "", "big-model"))
    assert code == 400 and "Choose one of: house-model." in text


def test_a_page_never_waits_for_the_list_of_models(app, client):
    class Slow(ModelsProvider):
        def models(self):
            gevent.sleep(1.0)
            return super().models()

    provider = Slow()
    app.extensions["chat"]["generator"].provider = provider
    started = time.monotonic()
    html = client.get("/r/slow").get_data(as_text=True)
    assert time.monotonic() - started < 0.5
    assert '<option value="house-model" selected>' in html and "big-model" not in html
    gevent.sleep(1.2)  # read meanwhile, in the background
    assert "big-model" in client.get("/r/slow").get_data(as_text=True)


def test_the_sdk_lists_a_real_servers_models(fake_llm):
    provider = OpenAIProvider(api_key="k", model="fake-model", base_url=fake_llm.base_url)
    assert offered_models(provider) == ["fake-model", "fake-model-large"]
    assert offered_models(provider) == ["fake-model", "fake-model-large"]
    assert fake_llm.model_lists == 1, "kept, not asked for every page"
    fake_llm.models = None  # a server without the route
    assert offered_models(OpenAIProvider(api_key="k", model="fake-model", base_url=fake_llm.base_url)) == ["fake-model"]
