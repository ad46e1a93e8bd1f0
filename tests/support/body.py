"""A model of a reply body in a page, for tests without a browser: it applies
the pieces and out-of-band swaps of ``rendering.ops_fragment`` and the
author's stream events the way static/js/stream.js, static/js/pieces.js and htmx do, on the body's HTML
as a string."""
import re

OOB_RE = re.compile(r'<(i|template) hx-swap-oob="(\w+):([^"]*)">(.*?)</\1>', re.S)
TAG_RE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)[^>]*>")
VOID = {"br", "hr"}
# What follows the body's id in a target: the last element ``depth`` levels
# down (" >:last-child>:last-child"), or the children from the k-th on.
LAST = re.compile(r"(?: >:last-child(?:>:last-child)*)?\Z")
NTH = re.compile(r" >:nth-child\(n\+(\d+)\)\Z")


def elements(html):
    """(start, end) of each top-level element of ``html``."""
    spans, depth, start = [], 0, None
    for match in TAG_RE.finditer(html):
        name = match.group(2).lower()
        if depth == 0 and not match.group(1):
            start = match.start()
        if name in VOID and not match.group(1):
            if depth == 0:
                spans.append((start, match.end()))
            continue
        depth += -1 if match.group(1) else 1
        if depth == 0:
            spans.append((start, match.end()))
    return spans


def element_ends(html):
    """Offsets just past each top-level element of ``html``."""
    return [end for _, end in elements(html)]


class Body:
    """One reply body: ``html`` is its inner HTML."""

    def __init__(self, message_id, html=""):
        self.selector = "#message-{}-body".format(message_id)
        self.html = html

    def insert(self, depth, content):
        """``beforeend`` into the last element ``depth`` levels down."""
        if depth == 0:
            self.html += content
            return
        closings = [m.start() for m in re.finditer("</", self.html)]
        run_start = re.search(r"(?:\s|</[a-zA-Z0-9]+>)+\Z", self.html).start()
        at = [c for c in closings if c >= run_start][-depth]
        self.html = self.html[:at] + content + self.html[at:]

    def apply(self, fragment):
        """Apply a chunk's fragment: a piece, or out-of-band swaps."""
        if fragment.startswith("+"):
            self.apply_piece(fragment)
        else:
            self.apply_oob(fragment)

    def apply_piece(self, piece):
        """Apply a piece ("+id", then per operation U+001F and "depth html" or "-k ")."""
        head, *ops = piece.split("\x1f")
        assert "#message-{}-body".format(head[1:]) == self.selector, head
        assert ops, "a piece with no operation"
        for op in ops:
            code, space, content = op.partition(" ")
            assert space, "an operation without its space: {!r}".format(op)
            if code.startswith("-"):
                assert content == "", op
                for start, end in reversed(elements(self.html)[int(code[1:]):]):
                    self.html = self.html[:start] + self.html[end:]
            else:
                self.insert(int(code), content)

    def apply_oob(self, fragment):
        """Apply every out-of-band swap of a fragment; the rest must be empty."""
        rest = OOB_RE.sub("", fragment)
        assert not rest.strip(), "stray content outside out-of-band swaps: {!r}".format(rest)
        for _, style, selector, content in OOB_RE.findall(fragment):
            assert selector.startswith(self.selector), selector
            path = selector[len(self.selector):]
            if style == "delete":
                # htmx removes the elements; text between them stays.
                keep = int(NTH.match(path).group(1)) - 1
                for start, end in reversed(elements(self.html)[keep:]):
                    self.html = self.html[:start] + self.html[end:]
            else:
                assert style == "append", style
                assert LAST.match(path), path
                self.insert(path.count(":last-child"), content)


def apply_author_stream(body, events):
    """Apply an author's event stream (a list of (event name, data)) to ``body``
    the way static/js/ and hx-sse do; returns the article events."""
    depth = None
    articles = []
    for name, data in events:
        if name == "reply-at":
            depth = int(data)
        elif "<hx-upsert" in data:
            articles.append(data)
        elif data.startswith("+") or "hx-swap-oob" in data:
            body.apply(data)
        else:
            assert data.strip(), "a whitespace-only swap would be dropped"
            assert depth is not None, "a plain event before any reply-at"
            if data.startswith("&#43;"):  # a "+" the page reads as text, not as a piece
                data = "+" + data[5:]
            body.insert(depth, data)
    return articles


def parse_sse(raw):
    """(event name, data) for each event of an event-stream body."""
    events = []
    for block in raw.split("\n\n"):
        name, lines = "", []
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                lines.append(value)
        if lines or name:
            events.append((name, "\n".join(lines)))
    return events
