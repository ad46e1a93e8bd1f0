"""What a small local model does, handled: replies with no text, leading blank
lines and whitespace-only tokens, replies that never end a sentence, a context
window the room's history overflows, and a server that is still loading.

Replies come from the scripted model, or from the real ``openai`` SDK talking
to the fake OpenAI-compatible server; the setting ``LLM=local`` is checked
against the Procfile's ``llm`` process.
"""
import re
import shlex
import threading

import gevent
import pytest

from app import create_app
from chat.llm.context import SYSTEM_PROMPT
from chat.llm.context import estimate_tokens
from chat.llm.context import fit_context
from chat.llm.context import fold_system_prompt
from chat.llm.local_model import MODELS
from chat.llm.local_model import server_command
from chat.llm.openai_compat import OpenAIProvider
from chat.llm.providers import LOCAL_CONTEXT_TOKENS
from chat.llm.providers import LOCAL_MAX_TOKENS
from chat.llm.providers import make_provider
from chat.llm.tokens import TokenStream
from chat.render.rendering import render_markdown
from chat.stream.reply import NO_TEXT
from conftest import free_port
from models import Chunk
from models import Message
from models import db
from models import migrate
from models import migration_runner
from support.app_client import STREAM
from support.app_client import open_page
from support.app_client import post
from support.app_client import sse_events
from support.body import Body
from support.body import apply_author_stream
from support.body import parse_sse
from support.fake_openai import FakeOpenAI
from support.live import procfile_line


def ask(client, text="@gpt hello"):
    """Post a question over SSE; returns (reply id, the stream's event data)."""
    _, token = open_page(client)
    response = post(client, token, text, STREAM)
    return int(response.headers["X-Reply-Id"]), sse_events(response)


def ask_drawn(client, text="@gpt hello"):
    """Post a question over SSE; returns (reply id, the stream's events as
    (name, data), the reply body the asker's page draws from them)."""
    _, token = open_page(client)
    response = post(client, token, text, STREAM)
    reply_id = int(response.headers["X-Reply-Id"])
    events = parse_sse(response.get_data(as_text=True))
    body = Body(reply_id)
    apply_author_stream(body, events[1:-1])  # fails on a whitespace-only swap
    return reply_id, events, body.html


def observer_drawing(appends, reply_id):
    """The body an observer's page draws from a reply's append events."""
    body = Body(reply_id)
    for event in appends:
        body.apply(str(event.html))
    return body.html


def drain(subscription):
    """Every event a hub subscription has queued so far."""
    events = []
    while not subscription.queue.empty():
        events.append(subscription.queue.get_nowait())
    return events


def the_reply(app, reply_id):
    with app.app_context():
        return Message.get_by_id(reply_id)


# -- a reply with no text ----------------------------------------------------------


@pytest.mark.parametrize("tokens", [[], ["\n"], ["\n\n", " ", "\t"]])
def test_a_reply_with_no_text_says_so_instead_of_an_empty_bubble(client, app, provider, tokens):
    provider.enqueue(tokens)
    watcher = app.extensions["chat"]["hub"].subscribe("lobby")
    reply_id, events = ask(client)

    assert len(events) == 2, "no token event at all: {!r}".format(events)
    final = events[-1]
    assert 'data-status="failed"' in final
    assert '<p class="message-notice" role="status">{}</p>'.format(NO_TEXT) in final
    assert 'data-action="retry"' in final
    # The body stays empty, not blank (the page keeps the empty body it has).
    assert re.search(r'id="message-{}-body"(?: hx-preserve)?></div>'.format(reply_id), final), final
    reply = the_reply(app, reply_id)
    assert (reply.status, reply.body, reply.error) == ("failed", "", NO_TEXT)
    # Observers: no append; the failed article around the empty body they have.
    seen = drain(watcher)
    assert [e.kind for e in seen if e.message_id == reply_id] == ["article", "settle"]
    assert NO_TEXT in seen[-1].html


def test_a_reply_with_no_text_can_be_retried(client, app, provider):
    provider.enqueue(["\n"])
    reply_id, _ = ask(client)
    _, token = open_page(client)
    provider.enqueue(["Second", " try", "."])
    assert client.post("/messages/{}/retry".format(reply_id), headers={"HX-Request": "true", "X-CSRF-Token": token}).status_code == 204
    with app.app_context():
        assert wait(lambda: Message.get_by_id(reply_id).status == "complete")
        reply = Message.get_by_id(reply_id)
    assert (reply.body, reply.error) == ("Second try.", None)


def wait(predicate, timeout=5.0):
    deadline = gevent.get_hub().loop.now() + timeout
    while gevent.get_hub().loop.now() < deadline:
        if predicate():
            return True
        gevent.sleep(0.01)
    return False


# -- odd whitespace ------------------------------------------------------------------


def test_leading_blank_lines_and_whitespace_tokens_make_no_empty_swaps(client, app, provider):
    tokens = ["\n", "\n", " ", " Sure", ".", "\n", "\n", " ", "Next", " line", " ", "\t", " ends", ".", "\n"]
    provider.enqueue(tokens)
    watcher = app.extensions["chat"]["hub"].subscribe("lobby")
    reply_id, events, drawn = ask_drawn(client)

    middle = [data for _, data in events[1:-1]]
    assert middle and all(data.strip() for data in middle), "no whitespace-only swap: {!r}".format(middle)
    reply = the_reply(app, reply_id)
    # The reply starts at its first visible character.
    assert reply.status == "complete" and reply.body == "Sure.\n\n Next line \t ends.\n"
    assert drawn == str(render_markdown(reply.body))
    appends = [e for e in drain(watcher) if e.kind == "append"]
    assert appends and all(str(e.html).strip() for e in appends)
    assert observer_drawing(appends, reply_id) == str(render_markdown(reply.body))


# -- replies that never end a sentence ---------------------------------------------------


def test_a_reply_without_sentence_ends_is_committed_by_the_size_cap(client, app, provider):
    app.extensions["chat"]["generator"].size_cap = 120
    words = [" word{}".format(i) for i in range(300)]  # no punctuation, no blank line
    provider.enqueue(words)
    watcher = app.extensions["chat"]["hub"].subscribe("lobby")
    reply_id, _ = ask(client)
    appends = [e for e in drain(watcher) if e.kind == "append" and e.message_id == reply_id]
    assert len(appends) >= len("".join(words)) // 120 - 1
    text = "".join(words).lstrip()
    assert the_reply(app, reply_id).body == text
    # Observers saw it grow chunk by chunk (at most 120 characters each, so at
    # least the count above) and end with the whole text drawn.
    assert observer_drawing(appends, reply_id) == str(render_markdown(text))


class SlowProvider:
    """A model that takes ``delay`` seconds per token and never ends a sentence."""

    model = "slow"

    def __init__(self, tokens, delay):
        self.tokens, self.delay = tokens, delay

    def stream(self, messages):
        def tokens():
            for token in self.tokens:
                gevent.sleep(self.delay)
                yield token

        return TokenStream(tokens())


def test_a_slow_reply_without_sentence_ends_is_committed_by_the_time_cap(client, app):
    generator = app.extensions["chat"]["generator"]
    generator.time_cap = 0.2
    generator.provider = SlowProvider([" and"] * 12, delay=0.05)  # 0.6 s, 48 characters
    watcher = app.extensions["chat"]["hub"].subscribe("lobby")
    _, token = open_page(client)
    assert post(client, token, "@gpt go on", {"HX-Request": "true"}).status_code == 200  # no stream: returns at once
    with app.app_context():
        reply_id = Message.get(Message.role == "assistant").id
        assert wait(lambda: Chunk.select().where(Chunk.message == reply_id).exists(), 2)
        assert Message.get_by_id(reply_id).status == "streaming", "committed while the reply still streams"
        assert wait(lambda: Message.get_by_id(reply_id).status == "complete", 3)
    appends = [e for e in drain(watcher) if e.kind == "append" and e.message_id == reply_id]
    assert 2 <= len(appends) <= 5, "about one commit per 0.2 s: {}".format(len(appends))


# -- a context window the history overflows ------------------------------------------------


def test_fit_context_drops_the_oldest_history_and_never_the_question():
    system = {"role": "system", "content": "s" * 30}
    history = [{"role": "user", "content": "m{:02d} ".format(i) + "x" * 56} for i in range(10)]  # 24 tokens each
    question = {"role": "user", "content": "q" * 300}  # 104 tokens: alone over half the budget
    messages = [system] + history + [question]
    assert [estimate_tokens(m) for m in (system, history[0], question)] == [14, 24, 104]

    fitted, dropped = fit_context(messages, 200)
    assert fitted[0] is system and fitted[-1] is question
    assert fitted[1:-1] == history[-3:] and dropped == 7
    assert sum(estimate_tokens(m) for m in fitted) <= 200

    assert fit_context(messages, 0) == (messages, 0), "no window, no trimming"
    assert fit_context(messages, 10_000) == (messages, 0)
    # Too small for even the question: it is still sent, alone with the prompt.
    assert fit_context(messages, 50) == ([system, question], 10)


def test_estimate_is_high_for_english_and_cjk():
    english = "The quick brown fox jumps over the lazy dog near the river bank today."
    assert estimate_tokens({"content": english}) >= 16 + 4  # about 16 real tokens
    assert estimate_tokens({"content": "你好世界" * 10}) >= 40  # about one token per character


def test_history_is_trimmed_to_the_window_and_the_reply_says_so(client, app, provider):
    app.extensions["chat"]["generator"].max_tokens = 100
    provider.context_tokens = 600  # prompt budget: 600 - min(100, 300) = 500 tokens
    with app.app_context():
        for i in range(15):  # within CONTEXT_MESSAGES, so only the window trims
            Message.create(room="lobby", author="Bo", role="user", body="old message {} ".format(i) + "y" * 100)
    provider.enqueue(["Fine", "."])
    reply_id, events = ask(client, "@gpt " + "what now? " * 20)

    sent = provider.requests[0]
    assert sent[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert sent[-1]["content"].endswith(": @gpt " + ("what now? " * 20).strip())
    assert sum(estimate_tokens(m) for m in sent) <= 500
    kept = [m["content"] for m in sent[1:-1]]
    assert kept and kept[-1].startswith("Bo: old message 14 "), "the newest history stays"
    dropped = 15 - len(kept)
    assert dropped > 1
    note = "The {} oldest messages were left out to fit the model&#39;s context.".format(dropped)
    assert '<p class="message-note">{}</p>'.format(note) in events[-1]
    reply = the_reply(app, reply_id)
    assert reply.status == "complete" and reply.note == note.replace("&#39;", "'")
    assert note in client.get("/").get_data(as_text=True), "the note stays after a reload"


def test_nothing_is_trimmed_without_a_window(client, app, provider):
    with app.app_context():
        for i in range(15):
            Message.create(room="lobby", author="Bo", role="user", body="y" * 3000)
    reply_id, events = ask(client)
    assert len(provider.requests[0]) == 17
    assert "message-note" not in events[-1]
    assert the_reply(app, reply_id).note is None


def test_an_old_database_gains_the_note_column(app):
    with app.app_context(), db.connection_context():
        db.execute_sql("ALTER TABLE message DROP COLUMN note")
        runner = migration_runner()
        runner.History.delete().where(runner.History.name == "0003_message_note").execute()
        assert "note" not in {c.name for c in db.get_columns("message")}
    assert migrate() == ["0003_message_note"]
    with app.app_context(), db.connection_context():
        assert "note" in {c.name for c in db.get_columns("message")}


# -- a server that is still loading ------------------------------------------------------


@pytest.fixture
def sdk_provider(app):
    """Puts the real SDK provider in the app, aimed at ``base_url``."""
    made = []

    def make(base_url, retry_seconds):
        provider = OpenAIProvider(
            api_key="local", model="m", base_url=base_url, timeout=5, connect_timeout=2, retry_seconds=retry_seconds
        )
        app.extensions["chat"]["generator"].provider = provider
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.client.close()


def test_a_server_that_starts_late_is_waited_for(client, app, sdk_provider):
    port = free_port()  # nothing listens yet: connections are refused
    sdk_provider("http://127.0.0.1:{}/v1".format(port), retry_seconds=10)
    fake = FakeOpenAI(port=port, token_delay=0)
    fake.enqueue(["Ready", " now", "."])
    timer = threading.Timer(1.0, fake.start)
    timer.start()
    try:
        reply_id, events, drawn = ask_drawn(client)
    finally:
        timer.join()
        fake.stop()
    assert drawn == "<p>Ready now.</p>"
    assert the_reply(app, reply_id).status == "complete"


def test_a_loading_server_answering_503_is_retried(client, app, sdk_provider, fake_llm):
    sdk_provider(fake_llm.base_url, retry_seconds=10)
    fake_llm.enqueue([], status=503)
    fake_llm.enqueue([], status=503)
    fake_llm.enqueue(["Loaded", "."])
    reply_id, events, drawn = ask_drawn(client)
    assert drawn == "<p>Loaded.</p>"
    assert len(fake_llm.requests) == 3
    assert the_reply(app, reply_id).status == "complete"


def test_a_server_that_never_comes_up_fails_the_reply_in_time(client, app, sdk_provider):
    sdk_provider("http://127.0.0.1:{}/v1".format(free_port()), retry_seconds=1.5)
    started = gevent.get_hub().loop.now()
    reply_id, events = ask(client)
    elapsed = gevent.get_hub().loop.now() - started
    assert 1.4 < elapsed < 4, elapsed
    expected = "The model&#39;s server did not answer for 1.5 s: it may still be starting. Try again in a moment."
    assert expected in events[-1] and 'data-status="failed"' in events[-1]
    assert the_reply(app, reply_id).status == "failed"


def test_other_errors_are_not_retried(client, app, sdk_provider, fake_llm):
    sdk_provider(fake_llm.base_url, retry_seconds=10)
    fake_llm.enqueue([], status=500)
    reply_id, events = ask(client)
    assert len(fake_llm.requests) == 1
    assert "The model provider had an error (500). Try again." in events[-1]


# -- LLM=local and the Procfile's llm process -----------------------------------------------


def test_llm_local_points_the_sdk_at_the_llm_process(tmp_path):
    app = create_app(
        {"DATABASE_URL": "sqlite:///{}".format(tmp_path / "t.db"), "SECRET_KEY": "t", "WATCHDOG_INTERVAL": 0,
         "LLM": "local", "OPENAI_API_KEY": "sk-real-key", "LLM_PORT": 9123}
    )
    provider = app.extensions["chat"]["generator"].provider
    try:
        assert str(provider.client.base_url) == "http://127.0.0.1:9123/v1/"
        assert provider.client.api_key == "local", "a hosted key is never sent to the local server"
        # SmolLM2 Instruct by default, whose chat format keeps a system turn.
        assert provider.model == "smollm2-135m-instruct"
        assert provider.context_tokens == LOCAL_CONTEXT_TOKENS
        assert provider.retry_seconds > 0 and provider.system_role is True
        assert provider.temperature == 0.2, "the server's 0.8 makes a 135M model wander off the question"
        assert provider.max_tokens == LOCAL_MAX_TOKENS
        assert app.extensions["chat"]["generator"].prompt_budget() == LOCAL_CONTEXT_TOKENS - LOCAL_MAX_TOKENS
    finally:
        provider.client.close()


def test_llm_local_model_chooses_gemma_and_refuses_unknown_names(tmp_path):
    config = {"LLM": "local", "LLM_PORT": 9123, "LLM_TIMEOUT": 5.0, "LLM_CONNECT_TIMEOUT": 1.0}
    provider = make_provider(dict(config, LLM_LOCAL_MODEL="gemma3"))
    try:
        assert (provider.model, provider.system_role) == ("gemma-3-270m", False)
    finally:
        provider.client.close()
    with pytest.raises(ValueError, match="LLM_LOCAL_MODEL must be one of smollm2, gemma3, not 'llama'"):
        make_provider(dict(config, LLM_LOCAL_MODEL="llama"))


def test_a_temperature_is_sent_only_when_the_provider_has_one(client, app, sdk_provider, fake_llm):
    provider = sdk_provider(fake_llm.base_url, retry_seconds=0)
    ask(client, "@gpt one")
    provider.temperature = 0.2
    ask(client, "@gpt two")
    assert "temperature" not in fake_llm.requests[0], "a hosted model keeps its own default"
    assert fake_llm.requests[1]["temperature"] == 0.2


def test_unknown_llm_setting_is_refused():
    with pytest.raises(ValueError, match="LLM must be"):
        make_provider({"LLM": "llama"})


def test_without_a_system_role_the_prompt_opens_the_first_user_turn(client, app, sdk_provider, fake_llm):
    sdk_provider(fake_llm.base_url, retry_seconds=0).system_role = False
    ask(client, "@gpt who are you?")
    sent = fake_llm.requests[0]["messages"]
    assert [m["role"] for m in sent] == ["user"]
    assert sent[0]["content"].startswith(SYSTEM_PROMPT + "\n\n") and sent[0]["content"].endswith(": @gpt who are you?")
    assert fold_system_prompt([{"role": "system", "content": "S"}]) == [{"role": "user", "content": "S"}]




def test_the_procfile_llm_process_matches_the_apps_defaults(app):
    args = shlex.split(procfile_line("llm"))
    # llama_cpp.server takes its address from HOST and PORT before its --host
    # and --port flags, and honcho and hosts set PORT for every process.
    assert args[:2] == ["HOST=127.0.0.1", "PORT=${{LLM_PORT:-{}}}".format(app.config["LLM_PORT"])], "loopback only"
    assert args[2:6] == ["python", "-m", "chat.llm.local_model", "serve"]
    options = dict(zip(args[6::2], args[7::2]))
    assert "--host" not in options and "--port" not in options
    assert options == {"--n_ctx": "${{LLM_CONTEXT_TOKENS:-{}}}".format(LOCAL_CONTEXT_TOKENS)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_server_is_started_with_each_models_name_and_chat_format(name, monkeypatch):
    model = MODELS[name]
    monkeypatch.setattr(type(model), "gguf_path", lambda self: "/weights/" + self.name + ".gguf")
    args = server_command(model, ["--n_ctx", "4096"])
    assert args[1:3] == ["-m", "llama_cpp.server"]
    options = dict(zip(args[3::2], args[4::2]))
    assert options["--model"] == "/weights/{}.gguf".format(name)
    # The alias is the name the web process asks for (make_provider).
    assert options["--model_alias"] == model.alias
    assert options["--chat_format"] == {"smollm2": "chatml", "gemma3": "gemma"}[name]
    assert options["--n_ctx"] == "4096"
    # Queue concurrent replies instead of cutting the one streaming.
    assert options["--interrupt_requests"] == "False"
