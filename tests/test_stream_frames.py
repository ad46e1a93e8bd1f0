"""How the author's stream groups tokens into events (``views.stream_reply``):
a token after a pause goes at once, a burst is held just long enough for an
event to carry more text than framing, and the body drawn is the same."""
import re
import time

import gevent
from gevent.queue import Queue

from body_model import Body
from body_model import apply_author_stream
from body_model import parse_sse
from chat.render.rendering import render_markdown
from chat.web.views import stream_reply


class Generation:
    reply_id = 9
    finished = False


class Generator:
    def detach(self, generation, queue):
        pass


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
