"""What crossed the wire: the parts of an asker's event stream and of an
observer's frames, and when each token's text arrived."""
import html
import os
import re
import sys

from bench import ROOT

sys.path.insert(0, os.path.join(ROOT, "tests"))

# The same model of a reply body, and the same event parser, the tests use.
from support.body import Body  # noqa: E402
from support.body import parse_sse  # noqa: E402

_ARTICLE_RE = re.compile(r'<article class="message" id="message-(\d+)"([^>]*)>')
_STATUS_RE = re.compile(r'data-status="(\w+)"')
_BODY_RE = re.compile(r'id="message-(\d+)-body">(.*?)</div>', re.S)
# A chunk's fragment (``rendering.ops_fragment``): a piece ("+id", then per
# operation U+001F and "depth " or "-k "), or out-of-band swaps into a reply's
# body where it cannot be one.
APPEND_ID_RE = re.compile(rb'\A(?:\+(\d+)\x1f|<(?:i|template) hx-swap-oob="\w+:#message-(\d+)-body)')
# What frames a fragment's HTML: a piece's id and operation codes, or the swaps' tags.
_OOB_TAG_RE = re.compile(rb'\A\+\d+|\x1f-?\d+ |</?(?:i|template)(?: hx-swap-oob="[^"]*")?>')


def is_fragment(payload):
    """True for a chunk's fragment (a piece or out-of-band swaps), as text."""
    return payload.startswith("+") or "hx-swap-oob" in payload


def append_id(data):
    """The reply id a chunk's fragment (bytes) applies to, or None."""
    m = APPEND_ID_RE.match(data)
    return int(m.group(1) or m.group(2)) if m else None
_TAG_RE = re.compile(r"<[^>]*>")


def text_of(fragment):
    """The text an HTML fragment shows (tags dropped, entities decoded)."""
    return html.unescape(_TAG_RE.sub("", fragment))


def alnum(text):
    """Letters and digits in ``text``: what progress is counted in, since
    Markdown markup (``**``, line breaks) and HTML tags do not travel as such."""
    return sum(ch.isalnum() for ch in text)


def articles_of(text):
    """[(id, status)] of the articles in an upsert fragment."""
    out = []
    for m in _ARTICLE_RE.finditer(text):
        status = _STATUS_RE.search(m.group(2))
        out.append((int(m.group(1)), status.group(1) if status else "?"))
    return out


def sse_events(chunks):
    """(time of the read that completed it, raw event with its blank line) for
    each whole event of an event stream read as timed ``chunks``."""
    buf = b""
    for t, data in chunks:
        buf += data
        while True:
            cut = buf.find(b"\n\n")
            if cut < 0:
                break
            raw, buf = buf[:cut + 2], buf[cut + 2:]
            yield t, raw


def parse_asker(asker):
    """What the asker's stream carried, and when its text grew.

    Returns bytes (total, by part), event counts, and ``progress``: a list of
    (time of the read, characters of reply text received so far)."""
    out = dict(bytes=0, first_bytes=0, token_bytes=0, whole_bytes=0, final_bytes=0, other_bytes=0,
               token_escaped_bytes=0, token_wrapper_bytes=0, token_text_bytes=0, text=[],
               token_events=0, whole_events=0, final=None, final_t=None, progress=[], question_id=None)
    out["bytes"] = sum(len(data) for _, data in asker.chunks)
    received = 0
    first = True
    body = Body(asker.reply_id or 0)
    depth = 0
    for t, raw in sse_events(asker.chunks):
        events = parse_sse(raw.decode("utf-8"))  # one event, or none (a keep-alive comment)
        if not events:
            out["other_bytes"] += len(raw)
            continue
        name, payload = events[0]
        if name == "reply-at":  # where the next plain events go: framing
            depth = int(payload)
            out["token_bytes"] += len(raw)
            continue
        if first:
            first = False
            out["first_bytes"] += len(raw)
            ids = [a for a in articles_of(payload)]
            users = [i for i, _ in ids if i != asker.reply_id]
            out["question_id"] = users[0] if users else None
            continue
        if payload.startswith("<hx-upsert"):
            arts = dict(articles_of(payload))
            status = arts.get(asker.reply_id)
            if status == "streaming":
                out["whole_bytes"] += len(raw)
                out["whole_events"] += 1
                found = _BODY_RE.search(payload)
                if found:
                    body = Body(asker.reply_id, found.group(2))
                    received = alnum(text_of(body.html))
                out["progress"].append((t, received))
            else:
                out["final_bytes"] += len(raw)
                out["final"] = status
                out["final_t"] = t
            continue
        out["token_bytes"] += len(raw)
        out["token_events"] += 1
        plain = text_of(payload)
        inner = _OOB_TAG_RE.sub(b"", payload.encode("utf-8")) if is_fragment(payload) else None
        if inner is not None:
            plain = text_of(inner.decode("utf-8"))
        out["token_escaped_bytes"] += len(payload.encode("utf-8"))
        out["token_wrapper_bytes"] += len(payload.encode("utf-8")) - len(inner) if inner is not None else 0
        out["token_text_bytes"] += len(plain.encode("utf-8"))
        if inner is not None:  # a block drawn again: count what the body shows now
            body.apply(payload)
            received = alnum(text_of(body.html))
        else:
            body.insert(depth, payload)
            received += alnum(plain)
        out["progress"].append((t, received))
    out["text"] = [text_of(body.html)]  # the text the asker's page shows
    return out


def token_latencies(tokens, sent, progress, visible_only=True):
    """Per token: time its text was first fully received minus the time the
    fake model sent it. Tokens that are whitespace only are skipped by default:
    the server holds them until visible text follows (htmx ignores empty swaps)."""
    return [received - at for at, received, visible in token_pairs(tokens, sent, progress)
            if visible or not visible_only]


def observer_reply(frames, question_id, reply_id, t0):
    """Everything an observer received for one exchange after ``t0``: bytes by
    part, the times of appends (in order) and of streaming articles with text."""
    out = dict(bytes=0, article_bytes=0, append_bytes=0, whole_bytes=0, final_bytes=0, stray_bytes=0,
               append_escaped_bytes=0, append_text_bytes=0, appends=[], wholes=[], final_t=None, frames=0)
    ids = {question_id, reply_id}
    for t, data in frames:
        if t < t0:
            continue
        target = append_id(data)
        if target is not None:
            if target == reply_id:
                inner = _OOB_TAG_RE.sub(b"", data)
                out["append_escaped_bytes"] += len(inner)
                out["append_text_bytes"] += len(text_of(inner.decode("utf-8")).encode("utf-8"))
                out["append_bytes"] += len(data)
                out["bytes"] += len(data)
                out["frames"] += 1
                out["appends"].append(t)
            else:
                out["stray_bytes"] += len(data)
            continue
        arts = articles_of(data.decode("utf-8"))
        if not any(i in ids for i, _ in arts):
            out["stray_bytes"] += len(data)
            continue
        out["bytes"] += len(data)
        out["frames"] += 1
        status = dict(arts).get(reply_id)
        if status is None or (status == "streaming" and not out["wholes"] and not out["appends"]
                              and _empty_body(data, reply_id)):
            out["article_bytes"] += len(data)  # the question, and the reply's empty article
        elif status == "streaming":
            out["whole_bytes"] += len(data)
            out["wholes"].append(t)
        else:
            out["final_bytes"] += len(data)
            out["final_t"] = t
            break
    return out


def _empty_body(data, reply_id):
    return ('id="message-{}-body"></div>'.format(reply_id)).encode() in data


def token_pairs(tokens, sent, progress):
    """[(sent, received, visible)] per token, in order, as far as both are known."""
    out, end, j = [], 0, 0
    for i, token in enumerate(tokens):
        count = alnum(token)
        end += count
        if i >= len(sent):
            break
        while j < len(progress) and progress[j][1] < end:
            j += 1
        if j == len(progress):
            break
        # Progress is counted in letters and digits: a token of only
        # punctuation or whitespace has no arrival of its own.
        out.append((sent[i], progress[j][0], count > 0))
    return out
