"""Markdown as a list of top-level blocks, so a reply can be drawn while it streams.

A reply's body is the concatenation of its blocks' sanitized HTML, one element
per block (a paragraph, a list, a heading, a code block, a table, a quote). The
same function draws a finished message and every state of a streaming one, so
a page that followed a reply to its end holds exactly what a fresh load draws.

While text arrives, only the end of it is parsed again: a block is *stable*
once a later block starts on a complete line and the line after that is
complete too (the last line may still change what the one above it starts: a
table needs its delimiter row, ``#`` becomes a heading, ``#x`` then joins the
paragraph above), and stable blocks never change. Link reference definitions are off, since a
definition at the end would change a link drawn at the start.

``diff`` (diff.py) turns two states into the few operations that take a page
from one to the other; ``grow`` draws the common case, text added at the end
of the last line, without parsing again. markdown.py draws each block.
"""
import re
from collections import OrderedDict

from chat.render.diff import diff
from chat.render.markdown import CLOSING_FENCE
from chat.render.markdown import MD
from chat.render.markdown import normalize
from chat.render.markdown import sanitize
from chat.render.math import unsettled_from


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
    tokens = MD.parse(src)
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
                    found = CLOSING_FENCE.match(closing)
                    token.meta["closed"] = bool(
                        found and found.group(1)[0] == token.markup[0] and len(found.group(1)) >= len(token.markup)
                    )
            # No newline after the block: a dropped block must leave no text
            # node behind (a piece removes elements, not the text between them).
            html = sanitize(MD.renderer.render(part, MD.options, {})).rstrip("\n")
            _block_html.put(source, html)
        spans.append((start, end, html))
    return spans


class Blocks:
    """The blocks of one text: ``stable`` ones (final) and the ``tail`` (may change).

    ``offset`` is where the tail's source starts in ``text``, ``last`` where
    its last block's source starts; ``point`` is ``grow``'s own (None until it
    looks).
    """

    __slots__ = ("text", "offset", "stable", "tail", "last", "point")

    def __init__(self, text, offset, stable, tail, last=0, point=None):
        self.text = text
        self.offset = offset
        self.stable = stable
        self.tail = tail
        self.last = last
        self.point = point

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
    # The last block that starts on a complete line followed by another
    # complete line, other than the first, closes every block before it for
    # good. (One complete line is not enough: "| a |" then "|-|" is a table
    # that closes the paragraph above, until "|-|x" makes both lines join it.)
    closed = src.rfind("\n", 0, max(src.rfind("\n"), 0))
    cut = 0
    for i in range(len(spans) - 1, 0, -1):
        if spans[i][0] <= closed:
            cut = i
            break
    # A display-math ``$$`` not yet closed may still end the paragraph it is in
    # and take in the blocks after it: keep them all in the tail.
    unsettled = unsettled_from(src, spans[cut][0]) if cut else None
    while cut and unsettled is not None and spans[cut][0] >= unsettled:
        cut -= 1
    stable = stable + tuple(html for _, _, html in spans[:cut])
    last = offset + spans[-1][0] if spans else len(text)
    if cut:
        offset += spans[cut][0]
    state = Blocks(text, offset, stable, tuple(html for _, _, html in spans[cut:]), last)
    return _grow_blank(state, text, state.tail[-1]) if state.tail else state


def blocks_of(text, base=None, remember=True):
    """The blocks of ``text``; ``base`` (the blocks of a prefix of it) saves
    parsing the stable part again. Results are remembered for the next call
    (``remember=False`` for states nobody will ask for again: a reply's own
    running state, kept by its caller)."""
    text = normalize(text)
    found = _states.get(text)
    if found is not None:
        return found
    if base is None or not text.startswith(base.text):
        base = None
    result = _build(text, base.offset, base.stable) if base else _build(text, 0, ())
    if remember:
        _states.put(text, result)
    return result


def remember(state):
    """Keep ``state`` for ``blocks_of`` to find by its text."""
    _states.put(state.text, state)


def render(text):
    """Markdown to sanitized HTML, block by block."""
    return str(blocks_of(text))


# -- growing the last line without parsing again --------------------------------

# Added text that cannot open, close or escape inline markup, nor complete an
# entity, a link or an autolink: letters, digits, spaces and punctuation that
# Markdown only ever shows as itself in the middle of a line (not ``$``: it may
# open or close math).
_PLAIN_RUN = re.compile(r"(?:[^\W_]|[ ,.?!'\"/%@^{}|:=+#-])*\Z")
# A line of prose under way has a letter: what decides the kind of block a
# line is comes before its first letter (a heading's, a list item's or a
# quote's marker) or is a whole line without letters (a thematic break, a
# setext underline, a table's delimiter row), so text added after it cannot
# change that.
_LETTER = re.compile(r"[^\W\d_]")
_BLOCK_CLOSERS = ("</p>", "</li>", "</ul>", "</ol>", "</blockquote>")
_INLINE_CLOSERS = ("</a>", "</code>", "</em>", "</strong>", "</del>", "</s>")
_FENCE_OPEN = re.compile(r"( {0,3})(?:`{3,}|~{3,})")
_TEXT_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\u00a0": "&nbsp;"}
_NEEDS_ESCAPE = re.compile("[&<>\u00a0]")


def _escape_text(text):
    """Text as the sanitizer writes it inside an element."""
    return _NEEDS_ESCAPE.sub(lambda m: _TEXT_ESCAPES[m.group(0)], text)


def grow(state, text):
    """The quick way from ``state`` to the blocks of ``text``, when ``text`` only
    adds to the line ``state.text`` ends with, and that only adds text at the
    end of the last block: prose past a line's first letter, or a line of an
    open code fence. Returns (blocks, depth, html): the new state, and what to
    add at the end of the last element ``depth`` levels down the last block
    (``html`` may be '' or whitespace). None when ``text`` must be parsed again
    (``blocks_of``), which draws the same.

    Without it every token of a long paragraph or code block would parse the
    whole block again: quadratic in the block's length. Each step here costs
    about what the added text does (and copies of the text).
    """
    old = state.text
    if not state.tail or len(text) <= len(old) or not text.startswith(old):
        return None
    added = text[len(old):]
    if "\r" in added or "\0" in added:
        return None
    html = state.tail[-1]
    if not added.strip(" \t\n") and "<pre" not in html:
        return _grow_blank(state, text, html), 0, ""
    if "\n" in added:
        return None
    if html.startswith("<pre><code") and html.endswith("</code></pre>"):
        if state.point is None:
            state.point = _code_point(old, state.last)
        point = state.point
        grown = _grow_code(point, old, added, len(html) - len("</code></pre>")) if point else None
    else:
        if state.point is None:
            state.point = _prose_point(old, html)
        point = state.point
        grown = _grow_prose(point, old, text, added, len(html)) if point else None
    if grown is None:
        return None
    depth, at, piece = grown
    tail = state.tail[:-1] + (html[:at] + piece + html[at:],)
    return Blocks(text, state.offset, state.stable, tail, state.last, point), depth, piece


def step(state, raw_before, raw_text):
    """From ``state``, the blocks of ``raw_before``, to those of ``raw_text``
    (which goes on from it): (the new blocks, ``diff``'s operations between
    the two). Takes the quick way (``grow``) where it can."""
    # Line endings are normalized, so a bare "\r" at the end could still
    # become half of a "\r\n": only then is the added text not just appended.
    if raw_text.startswith(raw_before) and not raw_before.endswith("\r"):
        text = state.text + raw_text[len(raw_before):]
        grown = grow(state, text)
        body = len(text.rstrip(" \t\n"))
        if grown is None and len(state.text) < body < len(text):
            # A sentence that ends its paragraph: its text, then the blank.
            first = grow(state, text[:body])
            blank = first and grow(first[0], text)
            if blank and not blank[2]:
                grown = blank[0], first[1], first[2]
        if grown is not None:
            after, depth, html = grown
            return after, [("extend", depth, html)] if html else []
    after = blocks_of(raw_text, base=state, remember=False)
    return after, diff(state.html, after.html)


def _grow_blank(state, text, html):
    """Blank space after a block without code draws nothing (a block's text is
    stripped at its end). A paragraph that a blank line ends is final: no text
    after it can change it, so it joins the stable blocks and the next text is
    parsed without it."""
    trailing = text[len(text.rstrip(" \t\n")):]
    if html.startswith("<p>") and trailing.count("\n") >= 2:
        line = text.rfind("\n") + 1  # the next block's indentation starts here
        return Blocks(text, line, state.stable + state.tail, (), line)
    return Blocks(text, state.offset, state.stable, state.tail, state.last)


def _prose_point(old, html):
    """Where prose added to the last line goes, while that line goes on:
    (the line's start, depth, length of the closing tags after the text), or
    False when it cannot be added without parsing again."""
    line_start = old.rfind("\n") + 1
    if not _LETTER.search(old, line_start):
        return False
    # The containers around the last line's text: the closing tags the block
    # ends with, innermost a paragraph or a list item, right after text.
    at, depth, innermost = len(html), 0, None
    while True:
        while at and html[at - 1] in " \n":
            at -= 1
        closer = next((tag for tag in _BLOCK_CLOSERS if html.endswith(tag, 0, at)), None)
        if closer is None:
            break
        at -= len(closer)
        depth += 1
        innermost = at
    if innermost is None or not html.startswith(("</p>", "</li>"), innermost):
        return False
    if html[innermost - 1] in " \n" or (
        html[innermost - 1] == ">" and not any(html.endswith(tag, 0, innermost) for tag in _INLINE_CLOSERS)
    ):
        return False
    return line_start, depth, len(html) - innermost


def _grow_prose(point, old, text, added, size):
    if old[-1] in "*_~\\" or not _PLAIN_RUN.match(added):
        return None
    line_start, depth, closers = point
    # A block's text is stripped at its end: trailing whitespace shows once
    # text follows it.
    shown = len(old)
    while shown > line_start and old[shown - 1].isspace():
        shown -= 1
    piece = text[shown:].rstrip()
    if not _PLAIN_RUN.match(piece.replace("\t", " ").replace("\u00a0", " ")):
        return None
    return depth, size - closers, _escape_text(piece)


_FENCE_LINE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})[ \t]*$", re.M)


def _code_point(old, start):
    """(indentation of the opening fence, whether an open ``$$`` is before it)
    when the last block, from ``start``,
    is a fenced code block still open; False otherwise (an indented code block,
    the fence's own first line, or a fence closed already)."""
    fence = _FENCE_OPEN.match(old, start)
    first_line_end = old.find("\n", start)
    if fence is None or first_line_end < 0:
        return False
    marker = fence.group(0).lstrip(" ")
    for line in _FENCE_LINE.finditer(old, first_line_end + 1):
        if line.group(1)[0] == marker[0] and len(line.group(1)) >= len(marker):
            return False
    # After a display-math ``$$`` still open, a line of this block ending in
    # ``$$`` would close the math instead, and take the fence in.
    return len(fence.group(1)), unsettled_from(old, start) is not None


def _grow_code(point, old, added, at):
    line_start = old.rfind("\n") + 1
    # The fence stays open: its last line cannot become a closing fence.
    line = old[line_start:] + added
    if line.lstrip(" \t")[:1] in ("`", "~"):
        return None
    # An indented fence takes up to as many spaces off each line's start.
    blank = not old[line_start:].strip(" \t")
    if point[0] and blank:
        return None
    if not all(ch.isprintable() or ch == "\t" for ch in added):
        return None
    if point[1] and "$" in added:
        return None
    # A last line of only whitespace is not drawn until text follows it.
    if not line.strip(" \t"):
        return 2, at, ""
    return 2, at, _escape_text(line if blank else added)


# -- from one state to the next ------------------------------------------------
