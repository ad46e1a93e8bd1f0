"""Who is asking: the generated name a browser session gets on its first
visit, the key that marks its own messages, and the id a page sends."""

import hashlib
import re
import secrets

from faker import Faker
from flask import session

_faker = None


PAGE_ID = re.compile(r"[0-9a-f]{1,32}")


def current_name():
    """This browser session's generated name, made on first visit."""
    global _faker
    name = session.get("name")
    if not name:
        if _faker is None:
            _faker = Faker()
        name = session["name"] = _faker.name()
    return name


def session_key():
    """A digest of this browser session's random id: marks its own messages."""
    sid = session.get("sid")
    if sid is None:
        sid = session["sid"] = secrets.token_hex(16)
    return hashlib.sha256(sid.encode()).hexdigest()[:24]


def page_id(value):
    """A page's id as pages send it (hex, as ``render_page`` makes it), or None."""
    return value if value and PAGE_ID.fullmatch(value) else None
