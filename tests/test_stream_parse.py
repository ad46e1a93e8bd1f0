"""OpenAIProvider reads the event stream as plain JSON, not typed SDK objects:
it must give the same tokens, usage, errors and cuts as the SDK's own Stream."""
import json
import os
import sys
import time

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from chat.llm.openai_compat import OpenAIProvider  # noqa: E402
from chat.llm.openai_compat import sse_chunks  # noqa: E402
from chat.llm.tokens import StreamCut  # noqa: E402
from support.fake_openai import FakeOpenAI  # noqa: E402

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello please"}]


def typed_read(stream):
    """What the provider did with the SDK's typed chunks before."""
    tokens, usage, finished = [], None, False
    for chunk in stream:
        if chunk.usage is not None:
            usage = {"prompt_tokens": chunk.usage.prompt_tokens, "completion_tokens": chunk.usage.completion_tokens}
        if chunk.choices:
            choice = chunk.choices[0]
            finished = finished or choice.finish_reason is not None
            text = choice.delta.content if choice.delta else None
            if text:
                tokens.append(text)
    return tokens, usage, finished


def fast_read(token_stream):
    tokens = []
    try:
        for token in token_stream:
            tokens.append(token)
    except StreamCut:
        return tokens, token_stream.usage, False
    return tokens, token_stream.usage, True


@pytest.fixture
def fake():
    with FakeOpenAI(token_delay=0) as srv:
        yield srv


@pytest.fixture
def provider(fake):
    return OpenAIProvider(api_key="test", model="fake-model", base_url=fake.base_url, timeout=10)


def typed_stream(fake):
    client = openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0, timeout=10)
    return client.chat.completions.create(
        model="fake-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )


TOKENS = ["Hé", " there", "\u2028line", " {\"x\": 1}", "", " 日本", "."]


def test_content_and_usage_match_the_sdk(fake, provider):
    fake.enqueue(TOKENS)
    before = typed_read(typed_stream(fake))
    fake.enqueue(TOKENS)
    after = fast_read(provider.stream(MESSAGES))
    assert after == before
    assert after[0] == [t for t in TOKENS if t]
    assert after[1]["completion_tokens"] == len(TOKENS) and after[2] is True


def test_cut_stream_keeps_tokens_and_raises(fake, provider):
    fake.enqueue(TOKENS, cut_after=3)
    before = typed_read(typed_stream(fake))
    fake.enqueue(TOKENS, cut_after=3)
    after = fast_read(provider.stream(MESSAGES))
    assert before == (TOKENS[:3], None, False)
    assert after == before


def test_close_closes_the_upstream_response(fake, provider):
    fake.enqueue(["w{} ".format(i) for i in range(500)], delay=0.01)
    stream = provider.stream(MESSAGES)
    tokens = iter(stream)
    assert next(tokens) == "w0 "
    stream.close()
    deadline = time.monotonic() + 3
    while fake.client_closed_early[0] is not True and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.client_closed_early[0] is True


def sse_body(*events, sep=b"\n"):
    out = b""
    for event in events:
        payload = event if isinstance(event, str) else json.dumps(event)
        out += b"data: " + payload.encode() + sep + sep
    return out


def byte_pieces(body, size):
    return [body[i:i + size] for i in range(0, len(body), size)]


def both(body, size):
    """(typed result or exception, fast result or exception) for one body
    delivered in ``size``-byte reads."""
    request = httpx2.Request("POST", "http://model.test/v1/chat/completions")
    client = openai.OpenAI(api_key="test", base_url="http://model.test/v1")

    def typed():
        response = httpx2.Response(200, content=iter(byte_pieces(body, size)), request=request)
        return typed_read(openai.Stream(cast_to=ChatCompletionChunk, response=response, client=client))

    def fast():
        response = httpx2.Response(200, content=iter(byte_pieces(body, size)), request=request)
        chunks = list(sse_chunks(response))
        return chunks

    results = []
    for read in (typed, fast):
        try:
            results.append(read())
        except Exception as exc:  # compared below
            results.append(exc)
    return results


CHUNK = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def content(text, finish=None):
    return dict(CHUNK, choices=[{"index": 0, "delta": {"content": text}, "finish_reason": finish}])


@pytest.mark.parametrize("size", [1, 3, 7, 4096])
@pytest.mark.parametrize("sep", [b"\n", b"\r\n", b"\r"])
def test_error_event_raises_api_error_like_the_sdk(size, sep):
    error = {"message": "model overloaded", "type": "server_error", "code": None}
    body = sse_body(content("Hi"), {"error": error}, content("never"), "[DONE]", sep=sep)
    typed, fast = both(body, size)
    assert type(typed) is openai.APIError and type(fast) is openai.APIError
    assert (fast.message, fast.body) == (typed.message, typed.body) == ("model overloaded", error)


@pytest.mark.parametrize("size", [1, 5, 4096])
@pytest.mark.parametrize("sep", [b"\n", b"\r\n", b"\r"])
def test_events_split_across_reads(size, sep):
    usage = dict(CHUNK, choices=[], usage={"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6})
    body = b": keep-alive" + sep + sse_body(content("a\u2028b"), content(" c", "length"), usage, "[DONE]",
                                             content("after done"), sep=sep)
    typed, fast = both(body, size)
    assert typed == (["a\u2028b", " c"], {"prompt_tokens": 4, "completion_tokens": 2}, True)
    assert [c.get("usage") for c in fast] == [None, None, usage["usage"]]
    assert fast[0]["choices"][0]["delta"]["content"] == "a\u2028b"
    assert fast[1]["choices"][0]["finish_reason"] == "length"


def test_error_without_message_uses_the_sdk_default():
    typed, fast = both(sse_body({"error": "boom"}), 4096)
    assert str(fast) == str(typed) == "An error occurred during streaming"
