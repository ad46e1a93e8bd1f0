"""Turning messages into HTML: sanitized Markdown, escaped text, and the
fragments that travel over the author's stream and the observers' sockets.

Every article is drawn by one partial, ``_message.html``; the functions here
only wrap its output for the way it travels.
"""
import hashlib

import nh3
from flask import render_template
from markdown_it import MarkdownIt
from markupsafe import Markup
from markupsafe import escape

# Raw HTML in the model's output is never passed through as markup.
_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
_md.enable(["table", "strikethrough"])

_ALLOWED_TAGS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead",
    "tr", "ul",
}
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "code": {"class"},
    "ol": {"start"},
    "td": {"style"},
    "th": {"style"},
}


def render_markdown(text):
    """Markdown to sanitized HTML: no raw HTML, only http(s)/mailto links."""
    html = _md.render(text or "")
    clean = nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="nofollow noopener noreferrer",
        filter_style_properties={"text-align"},
    )
    return Markup(clean)


def name_hue(name):
    """A stable hue (0-359) for a person's name, so everyone sees the same colour."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:2], "big") % 360


def render_message(message, body_text=None, me=None):
    """The article for one message via the shared partial.

    ``body_text`` is the committed text of a streaming reply (defaults to the
    stored body).
    """
    text = message.body if body_text is None else body_text
    return Markup(render_template("_message.html", message=message, body_text=text, me=me))


def upsert(*articles):
    """Wrap articles so htmx inserts new ones in id order and replaces known ones."""
    return Markup('<hx-upsert hx-target="#messages" sort>') + Markup("").join(articles) + Markup(
        "</hx-upsert>"
    )


def append_fragment(message_id, text):
    """Out-of-band append of a piece of escaped text to a reply's body."""
    return Markup('<i hx-swap-oob="beforeend:#message-{}-body">{}</i>').format(message_id, text)


def sse_event(data, event=None):
    """One Server-Sent Event; multi-line data becomes several ``data:`` lines."""
    lines = str(data).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    head = "event: {}\n".format(event) if event else ""
    return head + "".join("data: {}\n".format(line) for line in lines) + "\n"


def sse_text(text):
    """An escaped token fragment for the author's stream (lean: no wrapper)."""
    return sse_event(escape(text))
