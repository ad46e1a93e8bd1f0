"""The asker's event stream (chat/web/author_stream.py) on its own: the
framing of one event; how tokens are grouped into events (a token after a
pause goes at once, a burst is held just long enough for an event to carry
more text than framing, and the body drawn is the same); keep-alive comments
while the model is silent; the end (the final article, or only the article's
status when the page already shows the whole body); and what happens when the
page goes away or the generation dies without a last word."""
import re
import time

import gevent
from gevent.queue import Queue

from chat.render.rendering import render_markdown
from chat.web.author_stream import AuthorBody
from chat.web.author_stream import sse_event
from chat.web.author_stream import stream_reply
from support.body import Body
from support.body import apply_author_stream
from support.body import parse_sse


class Generation:
    reply_id = 9
    finished = False


class Generator:
    def __init__(self):
        self.detached = []

    def detach(self, generation, queue):
        self.detached.append(generation)


FRAME_TEXT = 8


def run(script, frame):
    """Feed ``script`` [(seconds to wait, token)] to a stream with ``frame``;
    returns [(time, event text)] of every event after the first, and the
    times each token was put."""
    queue = Queue()
    put_at = []

    def feed():
        for wait, token in script:
            if wait:
                gevent.sleep(wait)
            put_at.append(time.monotonic())
            queue.put(("tok", token))
        gevent.sleep(0.05)
        queue.put(("final", "<hx-upsert>final</hx-upsert>", None, None))

    feeder = gevent.spawn(feed)
    got = []
    stream = stream_reply("<hx-upsert>first</hx-upsert>", Generator(), Generation(), queue, 5, frame, FRAME_TEXT)
    for chunk in stream:
        got.append((time.monotonic(), chunk))
    feeder.join()
    text = "".join(token for _, token in script)
    body = Body(9)
    apply_author_stream(body, parse_sse("".join(chunk for _, chunk in got[1:-1])))
    assert body.html == str(render_markdown(text)), "the events draw the text"
    return got[1:-1], put_at


def plain(events):
    """The text each event adds (reply-at events left out, tags and a piece's
    framing dropped)."""
    return [re.sub(r"<[^>]*>|\A\+\d+|\x1f-?\d+ ", "", data) for _, chunk in events
            for name, data in parse_sse(chunk) if name != "reply-at"]


def test_tokens_after_a_pause_go_at_once():
    script = [(0.06, " w{}".format(n)) for n in range(8)]
    events, put_at = run(script, frame=0.02)
    assert plain(events) == ["w0"] + [token for _, token in script[1:]], "one event per token"
    for (sent, _), put in zip(events, put_at[1:]):
        assert sent < put, "each token went before the next one came"


def test_tokens_already_queued_go_together():
    script = [(0.05, " w0")] + [(0, " w{}".format(n)) for n in range(1, 30)]
    events, _ = run(script, frame=0.0)
    assert len(plain(events)) < 5, "a backlog is one event, not one per token"


def test_a_burst_is_held_until_an_event_carries_enough_text():
    # Tokens of 2 bytes every 5 ms; a frame long enough for several.
    script = [(0.1, " a")] + [(0.005, " b")] * 40
    events, put_at = run(script, frame=0.5)
    texts = plain(events)
    assert texts[0] == "a", "the first token, after a pause, goes at once"
    assert events[0][0] < put_at[1]
    assert all(len(t) >= FRAME_TEXT - 2 for t in texts[1:-1]), texts
    assert len(texts) <= 1 + 41 * 2 // FRAME_TEXT + 1
    # ... and no longer: enough text goes without waiting out the frame.
    assert len(texts) >= 5, texts


def test_sse_events_split_lines_and_escape_tokens():
    assert sse_event("a\nb") == "data:a\ndata:b\n\n"
    assert sse_event("x\r\ny", event="done") == "event:done\ndata:x\ndata:y\n\n"
    # A parser drops one space after the colon: a line that starts with one keeps it.
    assert sse_event(" &lt;i&gt;") == "data:  &lt;i&gt;\n\n"
    assert sse_event(" a\n b\n") == "data:  a\ndata:  b\ndata:\n\n"
    events = parse_sse(sse_event(" a\nb\n  c") + sse_event("x", event="e"))
    assert events == [("", " a\nb\n  c"), ("e", "x")]


def test_author_text_that_starts_with_a_plus_is_not_taken_for_a_piece():
    author = AuthorBody(3)
    raw = author.advance("Use C")
    raw += author.advance("Use C++")
    raw += author.advance("Use C++ and")
    events = parse_sse(raw)
    assert [data for name, data in events if name != "reply-at"][1:] == ["&#43;+", " and"]
    body = Body(3)
    apply_author_stream(body, events)
    assert body.html == "<p>Use C++ and</p>"


def events_of(stream):
    return [e for chunk in stream for e in parse_sse(chunk)]


def test_the_first_event_carries_the_articles_and_silence_gets_keep_alives():
    queue = Queue()
    generator = Generator()
    stream = stream_reply("<hx-upsert>both</hx-upsert>", generator, Generation(), queue, 0.05)
    assert next(stream) == "data:<hx-upsert>both</hx-upsert>\n\n"
    assert next(stream) == ": keep-alive\n\n"  # no token within SSE_KEEPALIVE
    queue.put(("tok", "Hello."))
    # The first text opens a paragraph: a piece that appends it to the empty body.
    assert parse_sse(next(stream)) == [("", "+9\x1f0 <p>Hello.</p>")]
    queue.put(("final", "<hx-upsert>final</hx-upsert>", None, None))
    assert list(stream) == ["data:<hx-upsert>final</hx-upsert>\n\n"]
    assert generator.detached == [], "a stream that ended has nothing to detach"


def test_a_page_that_shows_the_whole_body_only_gets_the_status_flip():
    queue = Queue()
    for token in ("Done", " here."):
        queue.put(("tok", token))
    queue.put(("final", "<hx-upsert>whole</hx-upsert>", "<hx-upsert>flip</hx-upsert>", "Done here."))
    events = events_of(stream_reply("first", Generator(), Generation(), queue, 5))
    assert events[-1] == ("", "<hx-upsert>flip</hx-upsert>")
    assert ("", "<hx-upsert>whole</hx-upsert>") not in events
    # A page behind the final text gets the catch-up, then the flip.
    queue = Queue()
    queue.put(("tok", "Done"))
    queue.put(("final", "<hx-upsert>whole</hx-upsert>", "<hx-upsert>flip</hx-upsert>", "Done here, and more."))
    events = events_of(stream_reply("first", Generator(), Generation(), queue, 5))
    assert events[-1] == ("", "<hx-upsert>flip</hx-upsert>")
    body = Body(9)
    apply_author_stream(body, events[1:-1])
    assert body.html == str(render_markdown("Done here, and more."))


def test_a_page_that_goes_away_detaches_its_queue():
    queue = Queue()
    generator = Generator()
    generation = Generation()
    stream = stream_reply("first", generator, generation, queue, 5)
    next(stream)
    queue.put(("tok", "Half"))
    next(stream)
    stream.close()  # the asker closed the tab: the server closes the response
    assert generator.detached == [generation]


def test_a_generation_that_died_without_a_last_word_ends_the_stream():
    generation = Generation()
    generation.finished = True
    generator = Generator()
    assert list(stream_reply("first", generator, generation, Queue(), 0.01)) == ["data:first\n\n"]
    assert generator.detached == [generation]
