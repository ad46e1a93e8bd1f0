"""Which model answers: llama.cpp's server with ``LLM=local``, any
OpenAI-compatible server with a key, else the built-in demo; and the limits
each gets. A provider's ``stream(messages)`` returns a ``TokenStream``
(tokens.py)."""
import logging
import time

import gevent

from chat.llm import local_model
from chat.llm.demo import DemoProvider
from chat.llm.openai_compat import OpenAIProvider
from chat.llm.tokens import MAX_TOKENS

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
# How long the list of models a server offers is kept (it changes rarely).
MODELS_TTL = 300.0

log = logging.getLogger(__name__)


def offered_models(provider, ttl=MODELS_TTL, wait=True):
    """The models ``provider``'s server offers (its ``/models``), its own
    default first; only that default when the server cannot say. Kept for
    ``ttl`` seconds, a failure too. Without ``wait`` (a page being drawn) it
    never waits on the server: what is known (at first only the default)
    comes back at once, and the list is read again in the background."""
    known = getattr(provider, "offered", None)  # (monotonic time read, [model names])
    if known is not None and time.monotonic() - known[0] < ttl:
        return known[1]
    if wait:
        return _read_models(provider)
    reading = getattr(provider, "offered_reading", None)
    if reading is None or reading.dead:
        provider.offered_reading = gevent.spawn(_read_models, provider)
    default = getattr(provider, "model", None)
    return known[1] if known is not None else ([default] if default else [])


def _read_models(provider):
    default = getattr(provider, "model", None)
    try:
        names = [n for n in provider.models() if isinstance(n, str) and 0 < len(n) <= 120]
    except Exception as exc:  # noqa: BLE001 - any server that cannot list its models
        log.warning("could not list the models the server offers (%s); offering %s only", exc, default)
        names = []
    names = ([default] if default else []) + sorted(set(names) - {default})
    provider.offered = (time.monotonic(), names)
    return names


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
