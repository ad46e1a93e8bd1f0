"""Any OpenAI-compatible server (OpenAI itself, llama.cpp, vLLM, Ollama...)
through the ``openai`` SDK: Chat Completions streamed, the event stream read
line by line, retries while a local server is still loading."""
import json
import re
import time

import gevent

from chat.llm.context import fold_system_prompt
from chat.llm.tokens import MAX_TOKENS
from chat.llm.tokens import ModelNotReady
from chat.llm.tokens import StreamCut
from chat.llm.tokens import TokenStream
from chat.llm.tokens import storable

_LINE_END = re.compile(rb"\r\n|\r|\n")


def _transport_errors():
    """The HTTP library's (timeout errors, other request errors), as the SDK
    maps them to ``APITimeoutError`` and ``APIConnectionError``."""
    try:
        from openai._httpx2 import request_exceptions
        from openai._httpx2 import timeout_exceptions
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

    def models(self):
        """The names of the models the server offers (``GET /models``)."""
        page = self.client.with_options(timeout=5.0).models.list()
        return [model.id for model in page.data]

    def stream(self, messages, model=None):
        """Stream a reply to ``messages`` from ``model`` (None: this provider's)."""
        if not self.system_role:
            messages = fold_system_prompt(messages)
        response = self._open(
            model=model or self.model,
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
