"""Markdown as a list of top-level blocks, so a reply can be drawn while it streams.

A reply's body is the concatenation of its blocks' sanitized HTML, one element
per block (a paragraph, a list, a heading, a code block, a table, a quote). The
same function draws a finished message and every state of a streaming one, so
a page that followed a reply to its end holds exactly what a fresh load draws.

While text arrives, only the end of it is parsed again: a block is *stable*
once a later block starts on a complete line (the last line may still change
what it is: ``#`` becomes a heading, ``#x`` then joins the paragraph above), and
stable blocks never change. Link reference definitions are off, since a
definition at the end would change a link drawn at the start.

``diff`` turns two states into the few operations that take a page from one to
the other: append new blocks, extend the last block in place (most tokens only
add text at the end of the last paragraph, list item or code block), or drop
the blocks that changed and append their new form.
"""
import re
from collections import OrderedDict

import nh3
from markdown_it import MarkdownIt
from markdown_it.utils import OptionsDict
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

# Code longer than this is shown without colours (highlighting is CPU bound).
HIGHLIGHT_LIMIT = 20_000

_ALLOWED_TAGS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "li", "ol", "p", "pre", "s", "span", "strong", "table", "tbody", "td", "th",
    "thead", "tr", "ul",
}
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "code": {"class"},
    "ol": {"start"},
    "td": {"style"},
    "th": {"style"},
}
# Only the token classes Pygments writes may reach the page on a span
# (nh3 then adds "class" to the span's allowed attributes itself).
_TOKEN_CLASSES = {name for name in STANDARD_TYPES.values() if name}
_FORMATTER = HtmlFormatter(nowrap=True)


def _highlight(code, lang, attrs):
    """Pygments spans for a fenced block with a known language, else '' (plain)."""
    if not lang or len(code) > HIGHLIGHT_LIMIT:
        return ""
    try:
        lexer = get_lexer_by_name(lang, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return ""
    return highlight(code, lexer, _FORMATTER)


_md = MarkdownIt(
    "commonmark", {"html": False, "linkify": False, "typographer": False, "highlight": _highlight}
)
_md.enable(["table", "strikethrough"])
_md.disable(["reference"])

_default_fence = _md.renderer.rules["fence"]
_plain_options = OptionsDict(dict(_md.options.items()))
_plain_options["highlight"] = None
_CLOSING_FENCE = re.compile(r"[ ]{0,3}(`{3,}|~{3,})[ \t]*\n?\Z")


def _fence(self, tokens, idx, options, env):
    """Highlight a code block only once its closing fence is there: while it is
    open, its last line grows as plain text (cheap to extend in place)."""
    if not tokens[idx].meta.get("closed"):
        options = _plain_options
    return _default_fence(tokens, idx, options, env)


_md.add_render_rule("fence", _fence)


def sanitize(html):
    """No raw HTML, only http(s)/mailto links, only Pygments' classes on spans."""
    return nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="nofollow noopener noreferrer",
        filter_style_properties={"text-align"},
        allowed_classes={"span": _TOKEN_CLASSES},
    )


def normalize(text):
    """Line endings as the parser sees them (a prefix stays a prefix)."""
    return (text or "").replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")


class _Cache(OrderedDict):
    """A small least-recently-used map."""

    def __init__(self, size):
        super().__init__()
        self.size = size

    def get(self, key):
        value = super().get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


_block_html = _Cache(1024)  # block source -> sanitized HTML
_states = _Cache(256)  # whole text -> Blocks


def _parse(src):
    """[(start, end, html)] for the top-level blocks of ``src`` (character offsets)."""
    tokens = _md.parse(src)
    starts = [0]
    starts.extend(m.end() for m in re.finditer("\n", src))
    groups = []
    for i, token in enumerate(tokens):
        if token.level == 0 and token.nesting >= 0 and token.map is not None:
            groups.append(i)
    spans = []
    for n, first in enumerate(groups):
        last = groups[n + 1] if n + 1 < len(groups) else len(tokens)
        line0, line1 = tokens[first].map
        start = starts[line0]
        end = starts[line1] if line1 < len(starts) else len(src)
        source = src[start:end]
        html = _block_html.get(source)
        if html is None:
            part = tokens[first:last]
            for token in part:
                if token.type == "fence":
                    closing = source.rstrip("\n").rsplit("\n", 1)[-1] if "\n" in source.rstrip("\n") else ""
                    found = _CLOSING_FENCE.match(closing)
                    token.meta["closed"] = bool(
                        found and found.group(1)[0] == token.markup[0] and len(found.group(1)) >= len(token.markup)
                    )
            # No newline after the block: a dropped block must leave no text
            # node behind (htmx deletes elements, not the text between them).
            html = sanitize(_md.renderer.render(part, _md.options, {})).rstrip("\n")
            _block_html.put(source, html)
        spans.append((start, end, html))
    return spans


class Blocks:
    """The blocks of one text: ``stable`` ones (final) and the ``tail`` (may change).

    ``offset`` is where the tail's source starts in ``text``.
    """

    __slots__ = ("text", "offset", "stable", "tail")

    def __init__(self, text, offset, stable, tail):
        self.text = text
        self.offset = offset
        self.stable = stable
        self.tail = tail

    @property
    def html(self):
        """Every block's HTML, in order."""
        return self.stable + self.tail

    def __str__(self):
        return "".join(self.html)


def _build(text, offset, stable):
    """Parse ``text`` from ``offset`` (a stable boundary) and move the boundary on."""
    src = text[offset:]
    spans = _parse(src)
    last_newline = src.rfind("\n")
    # The last block that starts on a complete line, other than the first,
    # closes every block before it for good.
    cut = 0
    for i in range(len(spans) - 1, 0, -1):
        if spans[i][0] <= last_newline:
            cut = i
            break
    stable = stable + tuple(html for _, _, html in spans[:cut])
    if cut:
        offset += spans[cut][0]
    return Blocks(text, offset, stable, tuple(html for _, _, html in spans[cut:]))


def blocks_of(text, base=None):
    """The blocks of ``text``; ``base`` (the blocks of a prefix of it) saves
    parsing the stable part again. Results are remembered for the next call."""
    text = normalize(text)
    found = _states.get(text)
    if found is not None:
        return found
    if base is None or not text.startswith(base.text):
        base = None
    result = _build(text, base.offset, base.stable) if base else _build(text, 0, ())
    _states.put(text, result)
    return result


def render(text):
    """Markdown to sanitized HTML, block by block."""
    return str(blocks_of(text))


# -- from one state to the next ------------------------------------------------

_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)[^>]*?(/?)>")
_VOID = {"br", "hr", "img", "input", "wbr"}
_CLOSING_RUN = re.compile(r"(?:\s|</[a-zA-Z][a-zA-Z0-9]*>)+\Z")
_CLOSER = re.compile(r"</([a-zA-Z][a-zA-Z0-9]*)>\s*")


def extension(old, new):
    """How ``new`` grows out of ``old`` without changing what ``old`` has: a
    list of (depth, html) to add at the end of the last element ``depth``
    levels down the block (1 = the block's own element), innermost first; or
    None when ``new`` changes something ``old`` already shows.

    ``old`` ends with the closing tags of its last elements; ``new`` must be
    ``old``'s text up to the first of them, then for each closing tag some
    whole elements or text, then that same closing tag.
    """
    run = _CLOSING_RUN.search(old)
    if run is None or len(new) <= len(old):
        return None
    first = old.find("</", run.start())
    head = old[:first]
    segments = [m.group(0) for m in _CLOSER.finditer(old[first:])]
    if "".join(segments) != old[first:] or not new.startswith(head):
        return None
    added, at, depth = [], len(head), 0
    level = len(segments)
    for match in _TAG.finditer(new, at):
        closing, name = match.group(1), match.group(2).lower()
        if name in _VOID or match.group(3):
            continue
        if not closing:
            depth += 1
            continue
        if depth:
            depth -= 1
            continue
        # A closing tag outside what was added: the next of old's closers.
        segment = segments[len(segments) - level]
        if not new.startswith(segment, match.start()):
            return None
        if match.start() > at:
            added.append((level, new[at:match.start()]))
        at = match.start() + len(segment)
        level -= 1
        if level == 0:
            break
    if level or at != len(new) or not added:
        return None
    return added


def diff(old, new):
    """Operations that turn a body showing blocks ``old`` into one showing ``new``.

    ("append", html): add blocks at the end of the body;
    ("extend", depth, html): add to the last element ``depth`` levels down the
    last block (several in a row go innermost first: an item's end, then new
    items); ("drop", k): remove the blocks from the k-th (0-based) on.
    """
    old, new = list(old), list(new)
    common = 0
    while common < len(old) and common < len(new) and old[common] == new[common]:
        common += 1
    if common == len(old):
        return [("append", "".join(new[common:]))] if common < len(new) else []
    ops = []
    grown = None
    if common == len(old) - 1 and common < len(new):
        grown = extension(old[common], new[common])
    if grown is not None:
        ops.extend(("extend", depth, html) for depth, html in grown)
        common += 1
    else:
        ops.append(("drop", common))
    if common < len(new):
        ops.append(("append", "".join(new[common:])))
    return ops
