"""Check that tests/support/fake_openai.py is consumable by the real openai SDK."""
import os
import subprocess
import sys
import time

import openai
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from support.fake_openai import FakeOpenAI  # noqa: E402

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello please"}]


@pytest.fixture
def server():
    with FakeOpenAI(token_delay=0.001) as srv:
        yield srv


@pytest.fixture
def client(server):
    # max_retries=0: scripted errors must surface at once, not be retried away.
    with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0, timeout=10) as c:
        yield c


def _stream(client, **kw):
    return client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True, **kw)


def _wait_for(predicate, timeout=2.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_stream_yields_enqueued_tokens_and_usage(server, client):
    tokens = ["Hi", " there", ",", " friend", "."]
    server.enqueue(tokens)
    chunks = list(_stream(client, stream_options={"include_usage": True}))

    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert content == tokens
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == len(tokens)
    assert last.usage.prompt_tokens == 5  # "be brief" + "say hello please"
    assert last.usage.total_tokens == 5 + len(tokens)
    assert server.requests[0]["stream_options"] == {"include_usage": True}
    assert server.headers[0]["Authorization"] == "Bearer test"
    assert server.client_closed_early == [False]


def test_default_tokens_and_non_stream(server, client):
    resp = client.chat.completions.create(model="fake-model", messages=MESSAGES)
    assert resp.choices[0].message.content == "".join(server.default_tokens)
    assert resp.usage.completion_tokens == len(server.default_tokens)
    assert server.client_closed_early == []  # only streamed requests are tracked


@pytest.mark.parametrize("status, exc", [(500, openai.InternalServerError),
                                         (429, openai.RateLimitError),
                                         (401, openai.AuthenticationError)])
def test_status_errors_raise_sdk_errors(server, client, status, exc):
    server.enqueue(["unused"], status=status)
    with pytest.raises(exc) as info:
        _stream(client)
    assert isinstance(info.value, openai.APIStatusError)
    assert info.value.status_code == status
    assert info.value.body["message"] == f"fake error {status}"
    # The queue is FIFO: the next request gets the default reply again.
    assert "".join(c.choices[0].delta.content or "" for c in _stream(client)
                   if c.choices) == "".join(server.default_tokens)


def test_cut_after_ends_iteration_silently(server, client):
    # With Connection: close and no Content-Length, a closed socket is a valid
    # end of body, so the SDK just stops iterating: no exception, no finish
    # chunk, no usage.  Apps must treat "no finish_reason" as a failure.
    server.enqueue(["a", " b", " c", " d", " e"], cut_after=2)
    chunks = list(_stream(client, stream_options={"include_usage": True}))
    assert [c.choices[0].delta.content for c in chunks] == ["a", " b"]
    assert all(c.choices[0].finish_reason is None for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert server.client_closed_early == [False]  # the server hung up, not the client


def test_client_close_is_recorded(server, client):
    server.enqueue([f" w{i}" for i in range(200)], delay=0.05)
    stream = _stream(client)
    received = []
    for chunk in stream:
        received.append(chunk.choices[0].delta.content)
        if len(received) == 2:
            stream.close()
            break
    assert received == [" w0", " w1"]
    # The server only notices on a write after the close, a token or two later.
    assert _wait_for(lambda: server.client_closed_early[0] is not None)
    assert server.client_closed_early == [True]


def test_first_token_delay(server, client):
    server.enqueue(["late"], first_token_delay=0.3)
    start = time.monotonic()
    stream = _stream(client)
    first = next(iter(stream))
    assert first.choices[0].delta.content == "late"
    assert time.monotonic() - start >= 0.3
    stream.close()


def test_runs_as_subprocess():
    script = os.path.join(os.path.dirname(__file__), "support", "fake_openai.py")
    with subprocess.Popen([sys.executable, script, "--port", "0", "--delay", "0"],
                          stdout=subprocess.PIPE, text=True) as proc:
        try:
            line = proc.stdout.readline().strip()
            assert line.startswith("listening on http://127.0.0.1:")
            base_url = line.split()[-1]
            with openai.OpenAI(base_url=base_url, api_key="test", max_retries=0, timeout=10) as c:
                chunks = list(c.chat.completions.create(model="m", messages=MESSAGES, stream=True))
            assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        finally:
            proc.terminate()
            proc.wait(timeout=5)
