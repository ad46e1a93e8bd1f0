"""Split a token stream into sentence-sized chunks worth a database commit.

A chunk ends where a sentence ends (``.``, ``!``, ``?`` followed by
whitespace, CJK full stops, or a blank line), or when the pending text passes a
size cap, or when it has waited longer than a time cap -- so code blocks and
lists without punctuation are persisted too. A chunk is never whitespace only:
htmx drops empty swaps, so whitespace waits for the next visible text.
"""
import re
import time
import unicodedata

# Terminal punctuation, optional closing quotes/brackets, then whitespace.
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u2019\u201d)\]]*\s+")
# Full-width terminators end a sentence without a following space.
_CJK_END = re.compile(r"[\u3002\uff01\uff1f]+[\u300d\u300f\uff09]*")
_BLANK_LINE = re.compile(r"\n[ \t]*\n\s*")
# "1. " at the start of a line is a list marker, not the end of a sentence.
_LIST_MARKER = re.compile(r"(?:^|\n)[ \t]*\d{1,3}\.\s+$")


def _boundary(text):
    """Index just past the last sentence boundary in ``text``, or 0."""
    best = 0
    for pattern in (_SENTENCE_END, _CJK_END, _BLANK_LINE):
        for match in pattern.finditer(text):
            end = match.end()
            if pattern is _SENTENCE_END and _LIST_MARKER.search(text[:end]):
                continue
            if end > best and text[:end].strip():
                best = end
    return best


def _safe_cut(text, limit):
    """A cut point at or before ``limit`` that splits no word or combining mark."""
    space = max(text.rfind(" ", 0, limit), text.rfind("\n", 0, limit))
    cut = space + 1 if space > limit // 2 else limit
    while 0 < cut < len(text) and unicodedata.combining(text[cut]):
        cut -= 1
    return cut or limit


class Chunker:
    """Accumulates tokens and says when a chunk is ready to commit."""

    def __init__(self, size_cap=300, time_cap=1.0, clock=time.monotonic):
        self.size_cap = size_cap
        self.time_cap = time_cap
        self.clock = clock
        self.pending = ""
        self._since = None  # when the oldest pending visible text arrived

    def feed(self, token):
        """Add a token; return the list of chunks that are now complete."""
        if not token:
            return []
        if self._since is None and token.strip():
            self._since = self.clock()
        self.pending += token
        ready = []
        cut = _boundary(self.pending)
        if cut:
            ready.append(self._take(cut))
        while len(self.pending) > self.size_cap and self.pending.strip():
            ready.append(self._take(_safe_cut(self.pending, self.size_cap)))
        if self.due():
            ready.append(self._take(len(self.pending)))
        return [c for c in ready if c]

    def due(self):
        """True when visible pending text has waited at least the time cap."""
        return self._since is not None and self.clock() - self._since >= self.time_cap

    def seconds_left(self):
        """Seconds until the time cap forces a commit, or None if nothing waits."""
        if self._since is None:
            return None
        return max(0.0, self.time_cap - (self.clock() - self._since))

    def flush(self):
        """Everything still pending (may be whitespace only at the very end)."""
        return self._take(len(self.pending))

    def flush_due(self):
        """The pending text if the time cap has passed, else ''."""
        return self._take(len(self.pending)) if self.due() else ""

    def _take(self, cut):
        head, self.pending = self.pending[:cut], self.pending[cut:]
        if not head.strip():
            # Never hand out whitespace alone: keep it in front of what follows.
            self.pending = head + self.pending
            return ""
        self._since = self.clock() if self.pending.strip() else None
        return head
