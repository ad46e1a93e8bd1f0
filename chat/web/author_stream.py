"""The asker's event stream: the reply drawn on the asker's page as it grows.

``stream_reply`` reads the generation's tokens, coalesces a burst into events
of a few characters each (``STREAM_FRAME_TIME``, ``STREAM_FRAME_TEXT``), and
``AuthorBody`` turns the text into the fewest events that move the page on:
mostly the HTML added at the end of the last paragraph, list item or code
line. ``sse_event`` frames one Server-Sent Event."""
import time

from gevent.queue import Empty

from chat.render import blocks
from chat.render.diff import diff
from chat.render.rendering import PIECE
from chat.render.rendering import ops_fragment


def _data_line(line):
    # A parser drops one space after "data:"; it is only needed when the line
    # itself starts with one (most tokens do, the others save a byte).
    return ("data: " if line[:1] == " " else "data:") + line + "\n"


def sse_event(data, event=None):
    """One Server-Sent Event; multi-line data becomes several ``data:`` lines."""
    lines = str(data).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    head = "event:{}\n".format(event) if event else ""
    return head + "".join(_data_line(line) for line in lines) + "\n"


class AuthorBody:
    """What the author's page shows of its reply, and the events that move it on.

    The page's stream swaps plain events ``beforeend`` into the element named
    by its last ``reply-at`` event (a depth below the reply body, see
    ``static/js/stream.js``); most events are just the HTML added at the end of the
    last paragraph, list item or code line. Anything else goes as a piece, the
    same one observers get.
    """

    def __init__(self, message_id):
        self.message_id = message_id
        self.shown = blocks.blocks_of("")
        self.raw = ""  # the text ``shown`` is drawn from, as it came
        self.depth = None  # where plain events land, once told to the page

    def advance(self, text, final=False):
        """Events that take the page to ``text``; '' while nothing visible changed.
        Whitespace added at the end waits for visible text (htmx drops
        whitespace-only swaps) unless ``final``, when it goes as a piece.

        Text that only extends the last line's prose or code is drawn without
        parsing the block again (``blocks.grow``); the events are the same."""
        if final:
            after = blocks.blocks_of(text, base=self.shown, remember=False)
            ops = diff(self.shown.html, after.html)
        else:
            after, ops = blocks.step(self.shown, self.raw, text)
        if not ops:
            self.shown, self.raw = after, text
            return ""
        if len(ops) == 1 and ops[0][0] == "extend":
            _, depth, html = ops[0]
            if html.strip():
                self.shown, self.raw = after, text
                head = ""
                if depth != self.depth:
                    self.depth = depth
                    head = sse_event(depth, event="reply-at")
                if html[0] == PIECE:  # text, not a piece: the same character by reference
                    html = "&#43;" + html[1:]
                return head + sse_event(html)
            if not final:
                return ""
        self.shown, self.raw = after, text
        return sse_event(ops_fragment(self.message_id, ops))

    def shows(self, text):
        """True when the page shows ``text`` drawn in full."""
        return self.shown.html == blocks.blocks_of(text, base=self.shown, remember=False).html


def stream_reply(first, generator, generation, queue, keepalive, frame=0.0, frame_text=10):
    """The author's event stream: the two new articles at once, then the reply
    drawn as it grows, then the final article.

    A token after a pause (none in the ``frame`` seconds before it) goes at
    once. In a burst, a token waits up to ``frame`` for more, so that one event
    carries ``frame_text`` characters of text or more (each event costs about
    8 bytes of framing, "data:" and a blank line); tokens already queued always
    go together. When the page already shows the final body, the last event
    leaves it in place and only changes the article around it.

    Runs after the request context is gone: everything it needs is passed in.
    """
    finished = False
    body = AuthorBody(generation.reply_id)
    text = ""
    arrived = float("-inf")  # when the last token was taken from the queue
    try:
        yield sse_event(first)
        held = None
        while True:
            if held is not None:
                item, held = held, None
            else:
                try:
                    item = queue.get(timeout=keepalive)
                except Empty:
                    if generation.finished and queue.empty():
                        return  # the generation died without a last word
                    yield ": keep-alive\n\n"
                    continue
            kind = item[0]
            if kind == "final":
                finished = True
                _, html, flip, final_body = item
                if flip is not None and final_body is not None:
                    catch_up = body.advance(final_body, final=True)
                    if body.shows(final_body):
                        yield catch_up + sse_event(flip)
                        return
                yield sse_event(html)
                return
            if kind == "whole":  # the benchmark's per-token baseline
                yield sse_event(item[1])
                continue
            now = time.monotonic()
            burst = now - arrived < frame
            arrived = now
            deadline = now + frame if burst else now
            text += item[1]
            size = len(item[1])
            while True:  # what already arrived, or arrives while the burst is held
                wait = deadline - time.monotonic() if size < frame_text else 0
                try:
                    nxt = queue.get(timeout=wait) if wait > 0 else queue.get_nowait()
                except Empty:
                    break
                if nxt[0] != "tok":
                    held = nxt
                    break
                arrived = time.monotonic()
                text += nxt[1]
                size += len(nxt[1])
            events = body.advance(text)
            if events:
                yield events
    finally:
        if not finished:
            generator.detach(generation, queue)
