"""Which model answers: llama.cpp's server with ``LLM=local``, any
OpenAI-compatible server with a key, else the built-in demo; and the limits
each gets. A provider's ``stream(messages)`` returns a ``TokenStream``
(tokens.py)."""
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
