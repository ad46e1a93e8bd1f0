"""The model's side of one reply: its request read in a greenlet of its own
(``Upstream``), and the words a person sees when it fails (``describe_error``)
or when history was left out to fit the model's window (``left_out_note``)."""
from chat.llm.tokens import ModelNotReady
from chat.llm.tokens import StreamCut

# Put after the last token: the model said the reply is finished.
DONE = object()


class Upstream:
    """The model request of one reply, read in its own greenlet."""

    def __init__(self, provider, messages, model=None):
        self.provider = provider
        self.messages = messages
        # The room's own model, when it is not the provider's.
        self.model = model if model != getattr(provider, "model", None) else None
        self.stream = None

    def read_into(self, queue):
        """Open the stream and pull its tokens into ``queue``, then DONE (or
        the exception that ended it)."""
        try:
            if self.model is None:
                self.stream = self.provider.stream(self.messages)
            else:
                self.stream = self.provider.stream(self.messages, model=self.model)
            for token in self.stream:
                queue.put(token)
            queue.put(DONE)
        except Exception as exc:
            queue.put(exc)

    @property
    def usage(self):
        return (self.stream.usage if self.stream is not None else None) or {}

    def close(self):
        """Close the upstream response: the model stops spending tokens."""
        if self.stream is not None:
            self.stream.close()


def left_out_note(dropped):
    """What a reply says when history was left out to fit the model's context."""
    if not dropped:
        return None
    if dropped == 1:
        return "The oldest message was left out to fit the model's context."
    return "The {} oldest messages were left out to fit the model's context.".format(dropped)


def describe_error(exc):
    """A human-readable reason for a failed reply, with no keys or internals."""
    if isinstance(exc, ModelNotReady):
        return "The model's server did not answer for {:g} s: it may still be starting. Try again in a moment.".format(
            exc.seconds
        )
    status = getattr(exc, "status_code", None)
    if status == 401:
        return "The model provider rejected the API key."
    if status == 404:
        return "The model's server does not offer the model asked for. Choose another in the room's menu."
    if status == 429:
        return "The model provider is rate limiting us. Try again in a moment."
    if status is not None and status >= 500:
        return "The model provider had an error ({}). Try again.".format(status)
    if isinstance(exc, StreamCut):
        return "The connection to the model broke mid-reply."
    name = type(exc).__name__
    if "Timeout" in name:
        return "The model took too long to answer."
    if "Connection" in name:
        return "Could not reach the model provider."
    return "The reply was cut off by an error."
