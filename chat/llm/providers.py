"""Where replies come from: the OpenAI SDK (any compatible server) or an
offline demo model that needs no key.

A provider's ``stream(messages)`` returns a ``TokenStream``: iterate it for text
tokens; afterwards ``usage`` holds token counts when the server sent them;
``close()`` closes the upstream request.
"""
import json
import random
import re
import time

import gevent

from chat.llm import local_model

SYSTEM_PROMPT = (
    "You are gpt, a helpful assistant in a group chat. Several people talk here; "
    "their messages are prefixed with their names. Answer the person who mentioned "
    "you, concisely, in Markdown."
)


# A reply's length cap in tokens when MAX_TOKENS is not set.
MAX_TOKENS = 1024

# The local model (local_model.py says which one, and the name the Procfile's
# ``llm`` process serves it under): the context size it is started with, and
# how long a reply waits for that server to come up (it refuses connections
# while it loads).
LOCAL_CONTEXT_TOKENS = 4096
LOCAL_RETRY_SECONDS = 20.0
# One llama.cpp server answers one reply at a time: a shorter cap keeps a
# model that rambles from holding it for minutes.
LOCAL_MAX_TOKENS = 256
LLM_CHOICES = ("local",)


class StreamCut(Exception):
    """The upstream stream ended without saying the reply was finished."""


class ModelNotReady(Exception):
    """The model's server kept refusing connections (or answering 503) for as
    long as a reply waits for it: it is down, or still loading."""

    def __init__(self, seconds):
        super().__init__("no answer for {:g} s".format(seconds))
        self.seconds = seconds


class TokenStream:
    """An iterator of text tokens with usage and a way to stop early."""

    def __init__(self, tokens, close=None):
        self._tokens = tokens
        self._close = close
        self.usage = None

    def __iter__(self):
        return iter(self._tokens)

    def close(self):
        if self._close is not None:
            self._close()


_LINE_END = re.compile(rb"\r\n|\r|\n")
# What a JSON string can carry and no database or page can: NUL (PostgreSQL
# refuses it in text) and a surrogate on its own ("\ud83d" with no partner
# cannot be encoded as UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text):
    """``text`` with NUL and lone surrogates as U+FFFD, the replacement character."""
    if text.isascii() and "\x00" not in text:
        return text
    return _UNSTORABLE.sub("\ufffd", text)


def _transport_errors():
    """The HTTP library's (timeout errors, other request errors), as the SDK
    maps them to ``APITimeoutError`` and ``APIConnectionError``."""
    try:
        from openai._httpx2 import request_exceptions, timeout_exceptions
    except ImportError:  # an SDK built on plain httpx
        import httpx

        return (httpx.TimeoutException,), (httpx.RequestError,)
    return timeout_exceptions(), request_exceptions()


def _sse_lines(http_response):
    """The body's lines as bytes, split at CRLF, CR or LF like an SSE parser
    (not at the other Unicode line breaks ``str.splitlines`` knows)."""
    import openai

    timeouts, request_errors = _transport_errors()
    rest = b""
    try:
        for data in http_response.iter_bytes():
            if rest:
                data = rest + data
            if b"\r" in data:
                # Hold back a final CR: its LF may be in the next read.
                held = data.endswith(b"\r")
                lines = _LINE_END.split(data[:-1] if held else data)
                rest = lines.pop() + (b"\r" if held else b"")
            else:
                lines = data.split(b"\n")
                rest = lines.pop()
            yield from lines
    except timeouts as exc:
        raise openai.APITimeoutError(request=http_response.request) from exc
    except request_errors as exc:
        raise openai.APIConnectionError(request=http_response.request) from exc
    if rest:
        yield rest[:-1] if rest.endswith(b"\r") else rest


def sse_chunks(http_response):
    """The JSON objects of a Chat Completions event stream, as plain dicts,
    until ``data: [DONE]`` or the end of the body. An event carrying an
    ``error`` raises ``openai.APIError`` the way the SDK's own stream does."""
    import openai

    data = []
    for line in _sse_lines(http_response):
        if line:
            if line.startswith(b"data:") or line == b"data":
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
            # Other fields (event, id, retry) and ":" comments carry nothing here.
            continue
        if not data:
            continue
        payload = data[0] if len(data) == 1 else b"\n".join(data)
        data = []
        if payload.startswith(b"[DONE]"):
            return
        chunk = json.loads(payload)
        if isinstance(chunk, dict) and chunk.get("error"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else None
            if not message or not isinstance(message, str):
                message = "An error occurred during streaming"
            raise openai.APIError(message=message, request=http_response.request, body=error)
        yield chunk


class OpenAIProvider:
    """Chat Completions streaming through the ``openai`` SDK."""

    def __init__(
        self,
        api_key,
        model,
        base_url=None,
        timeout=60.0,
        connect_timeout=10.0,
        max_tokens=MAX_TOKENS,
        retry_seconds=0.0,
        context_tokens=0,
        system_role=True,
        temperature=None,
    ):
        import openai  # imported lazily: the demo model needs none of it

        self.model = model
        self.max_tokens = max_tokens
        # A server that is still starting refuses connections: keep trying it
        # for this long before the reply fails (0: fail at once).
        self.retry_seconds = retry_seconds
        # The server's context window in tokens (0: large enough not to matter).
        self.context_tokens = context_tokens
        # False for chat formats that drop a system message (llama.cpp's
        # "gemma"): the prompt then travels in the first user turn.
        self.system_role = system_role
        # Sampling temperature (None: the server's default).
        self.temperature = temperature
        # ``timeout`` bounds each wait for the next bytes (so a silent model is
        # given up on), ``connect_timeout`` the connection itself.
        self.client = openai.OpenAI(
            api_key=api_key,
            base_url=base_url or None,
            timeout=openai.Timeout(timeout, connect=connect_timeout),
            max_retries=0,
        )

    def stream(self, messages):
        if not self.system_role:
            messages = fold_system_prompt(messages)
        response = self._open(
            model=self.model,
            # The SDK checks and rewrites every message against its types
            # before sending (about 0.2 ms a message, for a context of plain
            # text messages it leaves as they are); as part of ``extra_body``
            # they are sent as they are.
            messages=[],
            extra_body={"messages": messages},
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=self.max_tokens,
            **({} if self.temperature is None else {"temperature": self.temperature}),
        )
        token_stream = TokenStream(None, close=response.close)

        def tokens():
            finished = False
            try:
                for chunk in sse_chunks(response.http_response):
                    usage = chunk.get("usage")
                    if usage is not None:
                        token_stream.usage = {
                            "prompt_tokens": usage.get("prompt_tokens"),
                            "completion_tokens": usage.get("completion_tokens"),
                        }
                    choices = chunk.get("choices")
                    if choices:
                        choice = choices[0]
                        finished = finished or choice.get("finish_reason") is not None
                        delta = choice.get("delta")
                        text = delta.get("content") if delta else None
                        if text and isinstance(text, str):
                            yield storable(text)
                if not finished:
                    # A connection closed without finish_reason or [DONE] ends
                    # the iteration quietly: that is a cut, not an answer.
                    raise StreamCut("The model's stream ended before the reply was finished.")
            finally:
                response.close()

        token_stream._tokens = tokens()
        return token_stream

    def _open(self, **request):
        """Send the request; while the server refuses connections or answers
        503 (a llama.cpp server loading its model), retry with backoff for up
        to ``retry_seconds``. Nothing has streamed yet, so a retry is safe."""
        import openai

        deadline = time.monotonic() + self.retry_seconds
        delay = 0.25
        while True:
            try:
                # The raw response: its body is read by ``sse_chunks`` as
                # plain dicts, not typed per chunk by the SDK (which cost far
                # more CPU than the JSON itself). HTTP errors still raise here.
                return self.client.chat.completions.with_streaming_response.create(**request).__enter__()
            except (openai.APIConnectionError, openai.APIStatusError) as exc:
                # A timeout is a server that is up but slow: not worth waiting again.
                starting = (
                    getattr(exc, "status_code", 503) == 503 and not isinstance(exc, openai.APITimeoutError)
                )
                left = deadline - time.monotonic()
                if not starting or self.retry_seconds <= 0:
                    raise
                if left <= 0:
                    raise ModelNotReady(self.retry_seconds) from exc
            gevent.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)


_DEMO_REPLIES = [
    """Good question, {name}! Here is how I would think about it.

Streaming a reply token by token feels fast, but storing every token would be wasteful. So this chat **persists whole sentences** and pushes each one to everyone watching.

A few things make that work:

- the asker reads tokens straight from the generator
- observers get one small fragment per committed sentence
- a reload shows what is stored and follows the rest

```python
for chunk in chunker.feed(token):
    commit(chunk)
    hub.publish(chunk)
```

That keeps bandwidth linear in the length of the reply. Anything else you would like to know?""",
    """Happy to help, {name}. Let me break it down.

The short answer is *it depends on what you measure*. Latency, throughput and cost pull in different directions, so pick the one that matters most first.

1. Measure the baseline before changing anything
2. Change one thing at a time
3. Keep the numbers in a table you can compare

```sql
SELECT status, count(*) FROM message GROUP BY status;
```

If the numbers still surprise you, look at where the time goes with a profiler. Does that answer it?""",
    """Sure thing, {name}. Here is a quick overview.

A websocket keeps one connection open per page, so the server can push a fragment the moment a sentence is stored. Server-Sent Events do the same in one direction over a normal response.

Things to keep in mind:

- proxies close idle connections, so send a keep-alive now and then
- a reconnect replays nothing, so send a snapshot on every connect
- one writer per socket keeps frames in order

```js
htmx.on("htmx:ws:after:connection", () => console.log("live"));
```

Both are plain HTTP underneath, which is why they deploy anywhere. What are you building?""",
]

_TOKEN = re.compile(r"\s*\S+|\s+")


def demo_tokens(text):
    """Split text into word-sized tokens that keep their leading whitespace,
    with punctuation as its own token, the way real models emit them."""
    tokens = []
    for piece in _TOKEN.findall(text):
        core = piece.rstrip(".,!?;:")
        if core and core != piece and core.strip():
            tokens.extend([core, piece[len(core):]])
        else:
            tokens.append(piece)
    return tokens


class DemoProvider:
    """An offline model: plausible Markdown at a realistic pace, no key needed."""

    model = "demo"

    def __init__(self, token_delay=0.03, first_token_delay=0.4):
        self.token_delay = token_delay
        self.first_token_delay = first_token_delay

    def stream(self, messages):
        asker = "there"
        question = ""
        for message in reversed(messages):
            if message["role"] == "user":
                asker, _, question = message["content"].partition(": ")
                break
        rng = random.Random(question)
        text = rng.choice(_DEMO_REPLIES).format(name=asker)
        tokens = demo_tokens(text)
        stream = TokenStream(None)
        closed = []

        def generate():
            gevent.sleep(self.first_token_delay)
            for token in tokens:
                if closed:
                    return
                yield token
                gevent.sleep(self.token_delay * rng.uniform(0.5, 1.5))
            prompt = sum(len(m["content"].split()) for m in messages)
            stream.usage = {"prompt_tokens": prompt, "completion_tokens": len(tokens)}

        stream._tokens = generate()
        stream._close = lambda: closed.append(True)
        return stream


def make_provider(config):
    """The provider the configuration asks for: the local model's server with
    ``LLM=local``, else OpenAI with a key, else the demo."""
    llm = config.get("LLM") or None
    if llm is not None and llm not in LLM_CHOICES:
        raise ValueError("LLM must be one of {} or unset, not {!r}".format(", ".join(LLM_CHOICES), llm))
    retry = config.get("LLM_RETRY_SECONDS")
    if llm == "local":
        # The Procfile's llm process: llama.cpp's OpenAI-compatible server on
        # loopback, serving the model LLM_LOCAL_MODEL names. It wants no key,
        # but the SDK needs one.
        model = local_model.chosen(config.get("LLM_LOCAL_MODEL"))
        return OpenAIProvider(
            api_key="local",
            model=model.alias,
            base_url="http://127.0.0.1:{}/v1".format(config["LLM_PORT"]),
            timeout=config["LLM_TIMEOUT"],
            connect_timeout=config["LLM_CONNECT_TIMEOUT"],
            max_tokens=config.get("MAX_TOKENS") or LOCAL_MAX_TOKENS,
            retry_seconds=LOCAL_RETRY_SECONDS if retry is None else retry,
            context_tokens=config.get("LLM_CONTEXT_TOKENS") or LOCAL_CONTEXT_TOKENS,
            system_role=model.system_role,
            temperature=model.temperature,
        )
    if config.get("OPENAI_API_KEY"):
        return OpenAIProvider(
            api_key=config["OPENAI_API_KEY"],
            model=config["OPENAI_MODEL"],
            base_url=config.get("OPENAI_BASE_URL"),
            timeout=config["LLM_TIMEOUT"],
            connect_timeout=config["LLM_CONNECT_TIMEOUT"],
            max_tokens=config.get("MAX_TOKENS") or MAX_TOKENS,
            retry_seconds=retry or 0.0,
            context_tokens=config.get("LLM_CONTEXT_TOKENS") or 0,
        )
    return DemoProvider(token_delay=config["DEMO_TOKEN_DELAY"], first_token_delay=config["DEMO_FIRST_TOKEN_DELAY"])


def build_context(history, system_prompt=SYSTEM_PROMPT):
    """Chat Completions messages from a room's recent history (oldest first)."""
    messages = [{"role": "system", "content": system_prompt}]
    for message in history:
        if message.role == "assistant":
            if message.body:
                messages.append({"role": "assistant", "content": message.body})
        else:
            messages.append({"role": "user", "content": "{}: {}".format(message.author, message.body)})
    return messages


def fold_system_prompt(messages):
    """The messages with the system prompt moved to the front of the first
    user turn, for chat formats that have no system role."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], list(messages[1:])
    for i, message in enumerate(rest):
        if message["role"] == "user":
            rest[i] = {"role": "user", "content": "{}\n\n{}".format(system, message["content"])}
            return rest
    return [{"role": "user", "content": system}] + rest


def estimate_tokens(message):
    """A cheap, deliberately high guess at the tokens a chat message takes: one
    per three bytes of UTF-8 (tokenizers average about four characters per
    token in English and close to one per character in CJK scripts), plus the
    turn's own markers."""
    return len(message["content"].encode("utf-8")) // 3 + 4


def fit_context(messages, budget):
    """Drop the oldest history until ``messages`` fit ``budget`` tokens (by
    ``estimate_tokens``); the system prompt (first) and the question (last)
    always stay. Returns (messages, how many were dropped)."""
    if budget <= 0 or len(messages) <= 2:
        return messages, 0
    head, history, question = messages[:1], list(messages[1:-1]), messages[-1:]
    total = sum(estimate_tokens(m) for m in messages)
    dropped = 0
    while history and total > budget:
        total -= estimate_tokens(history.pop(0))
        dropped += 1
    return head + history + question, dropped
