"""A model of a reply body in a page, for tests without a browser: it applies
the out-of-band swaps of ``rendering.ops_fragment`` and the author's stream
events the way htmx does, on the body's HTML as a string."""
import re

OOB_RE = re.compile(r'<(i|template) hx-swap-oob="(\w+):([^"]*)">(.*?)</\1>', re.S)
TAG_RE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)[^>]*>")
VOID = {"br", "hr"}
LAST = " > :last-child"
NTH = re.compile(r" > :nth-child\(n\+(\d+)\)\Z")


def element_ends(html):
    """Offsets just past each top-level element of ``html`` (and its newline)."""
    ends, depth = [], 0
    for match in TAG_RE.finditer(html):
        if match.group(2).lower() in VOID and depth == 0:
            end = match.end()
        elif match.group(1):
            depth -= 1
            if depth:
                continue
            end = match.end()
        else:
            if match.group(2).lower() not in VOID:
                depth += 1
            continue
        if html[end:end + 1] == "\n":
            end += 1
        ends.append(end)
    return ends


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

    def apply_oob(self, fragment):
        """Apply every out-of-band swap of a fragment; the rest must be empty."""
        rest = OOB_RE.sub("", fragment)
        assert not rest.strip(), "stray content outside out-of-band swaps: {!r}".format(rest)
        for _, style, selector, content in OOB_RE.findall(fragment):
            assert selector.startswith(self.selector), selector
            path = selector[len(self.selector):]
            if style == "delete":
                keep = int(NTH.match(path).group(1)) - 1
                ends = element_ends(self.html)
                self.html = self.html[: ends[keep - 1]] if keep else ""
            else:
                assert style == "beforeend", style
                depth = path.count(LAST)
                assert path == LAST * depth, path
                self.insert(depth, content)


def apply_author_stream(body, events):
    """Apply an author's event stream (a list of (event name, data)) to ``body``
    the way static/app.js and hx-sse do; returns the article events."""
    depth = None
    articles = []
    for name, data in events:
        if name == "reply-at":
            depth = int(data)
        elif "<hx-upsert" in data:
            articles.append(data)
        elif "hx-swap-oob" in data:
            body.apply_oob(data)
        else:
            assert data.strip(), "a whitespace-only swap would be dropped"
            assert depth is not None, "a plain event before any reply-at"
            body.insert(depth, data)
    return articles


def parse_sse(raw):
    """(event name, data) for each event of an event-stream body."""
    events = []
    for block in raw.split("\n\n"):
        name, lines = "", []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                lines.append(line[6:])
            elif line == "data:":
                lines.append("")
        if lines or name:
            events.append((name, "\n".join(lines)))
    return events
