"""Turning messages into HTML: sanitized Markdown, escaped text, and the
fragments that travel over the author's stream and the observers' sockets.

Every article is drawn by one partial, ``_message.html``; the functions here
only wrap its output for the way it travels.
"""
import hashlib

from flask import render_template
from markupsafe import Markup

from chat.render import blocks


def render_markdown(text):
    """Markdown to sanitized HTML: no raw HTML, only http(s)/mailto links, code
    highlighted. Drawn block by block (``blocks.py``), the same way whether the
    message is finished or still streaming."""
    return Markup(blocks.render(text))


def name_hue(name):
    """A stable hue (0-359) for a person's name, so everyone sees the same colour."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:2], "big") % 360


def render_message(message, body_text=None, me=None, keep_body=False):
    """The article for one message via the shared partial.

    ``body_text`` is the committed text of a streaming reply (defaults to the
    stored body). With ``keep_body`` the body is an empty placeholder that
    htmx replaces with the body the page already shows (``hx-preserve``): the
    article's status, controls and footer change, the body is not sent again.
    """
    text = message.body if body_text is None else body_text
    return Markup(
        render_template("_message.html", message=message, body_text=text, me=me, keep_body=keep_body)
    )


def upsert(*articles):
    """Wrap articles so htmx inserts new ones in id order and replaces known ones."""
    return Markup('<hx-upsert hx-target="#messages" sort>') + Markup("").join(articles) + Markup(
        "</hx-upsert>"
    )


def body_selector(message_id):
    return "#message-{}-body".format(message_id)


def _target(message_id, depth):
    """The body, or the last element ``depth`` levels down its last block.
    (htmx splits "style:selector" at the last colon of its first word: the
    space before the first ">" keeps the selector's own colons out of it.)"""
    if not depth:
        return body_selector(message_id)
    return body_selector(message_id) + " >" + ">".join([":last-child"] * depth)


def _oob(swap, selector, html, tag="i"):
    return '<{0} hx-swap-oob="{1}:{2}">{3}</{0}>'.format(tag, swap, selector, html)


# Table parts are dropped by the HTML parser outside a table (and so inside an
# <i>); a <template> keeps them.
_TABLE_PARTS = ("<tr", "<td", "<th", "<tbody", "<thead")


def _wrapper(html):
    return "template" if any(p in html for p in _TABLE_PARTS) else "i"


# A piece: the compact frame that grows a reply's body, applied by
# static/js/pieces.js (``applyPiece``) wherever it arrives, socket or stream.
# "+" and the reply's id, then each operation after a U+001F: "<depth> <html>"
# adds ``html`` at the end of the last element ``depth`` levels below the body
# (0: the body itself); "-<k> " removes the body's blocks from the k-th
# (0-based) on. The same operations as out-of-band swaps cost about 50 bytes
# each in selectors and wrappers; a piece's framing is the id and 3 bytes an
# operation. Other socket messages start with "<"; a plain author event that
# starts with "+" sends it as "&#43;" (``AuthorBody.advance``).
PIECE = "+"
PIECE_SEP = "\x1f"


def piece(message_id, ops):
    """The piece that applies ``diff.diff`` operations to a reply's body,
    or None when some HTML holds the separator itself (``ops_fragment`` then
    uses out-of-band swaps, which htmx applies without the page's help)."""
    parts = [PIECE, str(message_id)]
    for op in ops:
        if op[0] == "drop":
            parts.append("{}-{} ".format(PIECE_SEP, op[1]))
            continue
        depth, html = (0, op[1]) if op[0] == "append" else (op[1], op[2])
        if PIECE_SEP in html:
            return None
        parts.append("{}{} {}".format(PIECE_SEP, depth, html))
    if len(parts) == 2:
        parts.append(PIECE_SEP + "0 ")
    return "".join(parts)


def oob_fragment(message_id, ops):
    """Out-of-band swaps that apply ``diff.diff`` operations to a reply's
    body (``append`` is htmx's short name for ``beforeend``; an ``<i>``
    carries the HTML). Never empty: with nothing to change it appends nothing."""
    parts = []
    for op in ops:
        if op[0] == "extend":
            _, depth, html = op
            parts.append(_oob("append", _target(message_id, depth), html, _wrapper(html)))
        elif op[0] == "append":
            parts.append(_oob("append", body_selector(message_id), op[1], _wrapper(op[1])))
        elif op[0] == "drop":
            selector = "{} >:nth-child(n+{})".format(body_selector(message_id), op[1] + 1)
            parts.append(_oob("delete", selector, ""))
    if not parts:
        parts.append(_oob("append", body_selector(message_id), ""))
    return "".join(parts)


def ops_fragment(message_id, ops):
    """What applies ``diff.diff`` operations to a reply's body on a page:
    a piece (out-of-band swaps in the rare case it cannot be one).

    Every observer gets one per committed chunk, so it is lean. Never empty:
    with nothing to change it appends nothing (a chunk that only closes a code
    fence, say), so every committed chunk still has its event.
    """
    fragment = piece(message_id, ops)
    return Markup(fragment if fragment is not None else oob_fragment(message_id, ops))


def chunk_fragment(message_id, text_before, chunk_text):
    """What every observer of reply ``message_id`` receives for one committed
    chunk: the operations that take a body drawn from ``text_before`` to one
    drawn from ``text_before + chunk_text``.

    A pure function of its arguments (caches aside), so any process can
    rebuild it from the stored chunks.
    """
    fragment, after = grow_fragment(message_id, blocks.blocks_of(text_before), text_before, text_before + chunk_text)
    blocks.remember(after)  # the next chunk's text before
    return fragment


def grow_fragment(message_id, before, text_before, text):
    """``chunk_fragment`` from the blocks ``before`` of ``text_before`` (kept by
    the caller from the last chunk) to ``text``, the whole text so far; returns
    (fragment, blocks of ``text``). A sentence that only continues the last
    paragraph is drawn without parsing the paragraph again."""
    after, ops = blocks.step(before, text_before, text)
    return ops_fragment(message_id, ops), after


def append_fragment(message_id, text):
    """Out-of-band append of a piece of escaped text to a reply's body (the
    benchmark's baselines parse this shape; the app sends ``chunk_fragment``)."""
    return Markup('<i hx-swap-oob="beforeend:#message-{}-body">{}</i>').format(message_id, text)
