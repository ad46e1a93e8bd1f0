"""Room names: what a room may be called, and the one spelling its URL uses.

A room is its URL (``/r/<name>``); the default room ``lobby`` lives at ``/``.
Names are short lowercase ASCII slugs so that a URL read aloud or typed on a
phone finds the same room: what people type is folded to that spelling
(``Book Club`` and ``#book_club`` both mean ``book-club``) and refused with
a readable reason when nothing sensible is left.
"""
import re

from flask import url_for

from chat.web.limits import Refused

DEFAULT_ROOM = "lobby"
MAX_LENGTH = 32
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_SEPARATORS = re.compile(r"[\s_.]+")
RULES = (
    "Room names are 1 to {} characters: lowercase letters a–z, digits and hyphens,"
    " starting and ending with a letter or digit.".format(MAX_LENGTH)
)


def fold(raw):
    """What someone typed (or put in a URL) in the one spelling rooms use:
    trimmed, without a leading ``#``, lowercase, with spaces, dots and
    underscores as single hyphens. May still be invalid: see ``clean``."""
    text = (raw or "").strip().lstrip("#").strip().lower()
    return _SEPARATORS.sub("-", text)


def clean(raw):
    """The room named by ``raw``, or raise ``Refused`` saying why not."""
    name = fold(raw)
    if not name:
        raise Refused("Give the room a name. " + RULES, 400)
    if len(name) > MAX_LENGTH:
        raise Refused("“{}…” is too long for a room name. {}".format(name[:MAX_LENGTH], RULES), 400)
    if not _NAME.fullmatch(name):
        raise Refused("“{}” cannot be a room name. {}".format(name, RULES), 400)
    return name


def is_valid(name):
    """True when ``name`` is already in the spelling rooms use."""
    return bool(name) and len(name) <= MAX_LENGTH and _NAME.fullmatch(name) is not None


def room_url(name, **kwargs):
    """The page of room ``name`` (the default room's is ``/``)."""
    if name == DEFAULT_ROOM:
        return url_for("chat.index", **kwargs)
    return url_for("chat.room", name=name, **kwargs)
