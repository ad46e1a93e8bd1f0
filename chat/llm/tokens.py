"""What every model gives back: a ``TokenStream`` of text tokens (with the
token counts the server reported, and a way to stop early), and the two ways
a stream can fail before its end."""
import re

# A reply's length cap in tokens when MAX_TOKENS is not set.
MAX_TOKENS = 1024

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


# What a JSON string can carry and no database or page can: NUL (PostgreSQL
# refuses it in text) and a surrogate on its own ("\ud83d" with no partner
# cannot be encoded as UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text):
    """``text`` with NUL and lone surrogates as U+FFFD, the replacement character."""
    if text.isascii() and "\x00" not in text:
        return text
    return _UNSTORABLE.sub("\ufffd", text)
