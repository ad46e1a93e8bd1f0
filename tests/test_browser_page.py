"""Browser tests of reading the page: scrolling that follows new text only at
the bottom, the new-messages button, relative timestamps, what screen readers
are told, keyboard use and focus, contrast in light and dark, and the phone
layout."""
import datetime
import re
import sqlite3
import time
import urllib.request

import pytest

from conftest import fake_model_server
from support.browser import LONG_REPLY
from support.browser import SENTENCES
from support.browser import assert_consistent
from support.browser import assert_no_errors
from support.browser import expected_text
from support.browser import streaming_texts
from support.browser import words_to_tokens

# -- helpers ---------------------------------------------------------------------

# Installed before the page's scripts: a screen reader's view of the live
# regions, by the ARIA rules. Every node added (or text changed) is "heard" if
# its nearest aria-live ancestor (or implicit live role) is polite or
# assertive, that region's aria-relevant covers the change, and no element
# between the node and the region is aria-busy. Evaluated after the current
# task's other observers have run, as a browser hands changes to the
# accessibility tree after scripts.
SCREEN_READER = """
(() => {
  const heard = window.__heard = [];
  const IMPLICIT = {status: 'polite', log: 'polite', alert: 'assertive'};
  function region(el) {
    for (; el; el = el.parentElement) {
      const live = el.getAttribute('aria-live');
      if (live) return {el, live};
      const role = el.getAttribute('role');
      if (role && IMPLICIT[role]) return {el, live: IMPLICIT[role]};
    }
    return null;
  }
  function busy(el, root) {
    for (; el; el = el.parentElement) {
      if (el.getAttribute('aria-busy') === 'true') return true;
      if (el === root) return false;
    }
    return false;
  }
  function relevant(root) {
    const r = (root.getAttribute('aria-relevant') || 'additions text').split(/\\s+/);
    return r.includes('all') ? ['additions', 'removals', 'text'] : r;
  }
  function consider(node, kind) {
    if (!node.isConnected) return;
    const el = node.nodeType === 1 ? node : node.parentElement;
    const text = (node.textContent || '').replace(/\\s+/g, ' ').trim();
    if (!el || !text) return;
    const r = region(el);
    if (!r || r.live === 'off' || !relevant(r.el).includes(kind) || busy(el, r.el)) return;
    heard.push({region: r.el.id || r.el.getAttribute('role') || r.el.tagName, text: text});
  }
  function start() {
    new MutationObserver((records) => queueMicrotask(() => records.forEach((rec) => {
      if (rec.type === 'characterData') consider(rec.target, 'text');
      else rec.addedNodes.forEach((n) => consider(n, 'additions'));
    }))).observe(document.documentElement, {subtree: true, childList: true, characterData: true});
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
"""

SCROLL = """() => {
  const el = document.scrollingElement;
  const articles = document.querySelectorAll('#messages > article.message');
  const last = articles[articles.length - 1];
  return {
    top: el.scrollTop,
    fromBottom: el.scrollHeight - el.scrollTop - el.clientHeight,
    lastBottom: last ? last.getBoundingClientRect().bottom : null,
    composerTop: document.getElementById('composer').getBoundingClientRect().top,
    button: !document.getElementById('new-messages').hidden,
  };
}"""

# Every scroll position the page takes from now on.
WATCH_SCROLL = """() => {
  window.__scrolls = [];
  if (!window.__watching) {
    window.__watching = true;
    window.addEventListener('scroll', () => window.__scrolls.push(document.scrollingElement.scrollTop));
  }
}"""

# Posts through the app's own endpoint as htmx does, without naming a page, so
# the messages reach every page (the poster's too) over its socket.
POST = """async (texts) => {
  const token = document.querySelector('meta[name="csrf-token"]').content;
  for (const body of texts) {
    const response = await fetch('/messages', {
      method: 'POST',
      headers: {'X-CSRF-Token': token, 'HX-Request': 'true'},
      body: new URLSearchParams({body: body, csrf_token: token}),
    });
    if (!response.ok) throw new Error('post failed: ' + response.status);
  }
}"""

FILLER = [
    "Message {} of the morning.\nA second line to make it taller.\nAnd a third one.".format(n) for n in range(1, 15)
]


@pytest.fixture
def person(people):
    """``people`` with a screen reader's view recorded (``person(server, screen_reader=True)``)."""

    def make(server, screen_reader=False, **context_options):
        someone = people(server, **context_options)
        if screen_reader:
            someone.context.add_init_script(SCREEN_READER)
        return someone

    return make


@pytest.fixture
def roomy_server(tmp_path, fake_llm):
    """A server on the fake model that lets one person post a lot."""
    server = fake_model_server(tmp_path, fake_llm, POSTS_PER_MINUTE="1000", ASKS_PER_MINUTE="100")
    yield server
    server.stop()


def post(someone, texts):
    before = len(someone.article_ids())
    someone.page.evaluate(POST, list(texts))
    someone.wait_for(
        "(n) => document.querySelectorAll('#messages > article.message').length >= n",
        arg=before + len(texts),
        what="{} posted messages".format(len(texts)),
    )


def scroll_state(someone):
    return someone.page.evaluate(SCROLL)


def settle_scroll(someone):
    """Wait until the page stops scrolling (a wheel scroll may be animated)."""
    last = None
    for _ in range(50):
        top = someone.page.evaluate("document.scrollingElement.scrollTop")
        if top == last:
            return top
        last = top
        someone.page.wait_for_timeout(100)
    raise AssertionError("the page kept scrolling")


def wheel(someone, dy):
    """Scroll with the mouse wheel over the messages; the position it settles at."""
    size = someone.page.viewport_size
    someone.page.mouse.move(size["width"] / 2, 200)
    someone.page.mouse.wheel(0, dy)
    return settle_scroll(someone)


def wait_at_bottom(someone):
    someone.wait_for(
        """() => { const el = document.scrollingElement;
                   return el.scrollHeight - el.scrollTop - el.clientHeight <= 2; }""",
        what="the page at its bottom",
    )


def wait_last_text(someone, text):
    someone.wait_for(
        """(text) => { const all = document.querySelectorAll('#messages > article.message');
                       const last = all[all.length - 1];
                       return last && last.querySelector('.message-body').textContent === text; }""",
        arg=text, what="the last message to be {!r}".format(text),
    )


def assert_last_clear(someone):
    """Scrolled to the end, the last message ends above the composer."""
    state = scroll_state(someone)
    assert state["fromBottom"] <= 2, state
    assert state["lastBottom"] <= state["composerTop"] + 0.5, state


# -- 1. scrolling ------------------------------------------------------------------


def test_follows_new_text_only_at_the_bottom(roomy_server, person):
    writer = person(roomy_server).open()
    post(writer, FILLER)
    # The writer stayed at the bottom while messages arrived over its socket.
    wait_at_bottom(writer)
    assert_last_clear(writer)

    # A page opens at the newest message, the last one clear of the composer.
    reader = person(roomy_server).open()
    assert reader.page.evaluate("document.scrollingElement.scrollHeight") > 2 * reader.page.viewport_size["height"]
    assert_last_clear(reader)
    assert not scroll_state(reader)["button"]

    # At the bottom, a new message is followed.
    post(writer, ["Still there?"])
    wait_last_text(reader, "Still there?")
    wait_at_bottom(reader)
    assert_last_clear(reader)

    # Scrolled up, the reader stays put while a reply streams in: not the
    # socket's sentences, not the final swap. For the asker, not its own
    # tokens either (it scrolls up once the reply is under way).
    reader_top = wheel(reader, -600)
    assert scroll_state(reader)["fromBottom"] > 300
    reader.page.evaluate(WATCH_SCROLL)
    roomy_server.llm.enqueue(words_to_tokens(LONG_REPLY), delay=0.05)
    user_id = writer.send("@gpt tell us how it works")
    reply_id = writer.reply_after(user_id)
    reader.wait_for(
        "() => !document.getElementById('new-messages').hidden", what="the new-messages button"
    )
    writer.wait_text(reply_id, 40)
    assert writer.status(reply_id) == "streaming", "the reply ended before the asker scrolled up"
    wait_at_bottom(writer)  # sending took the asker to its message
    writer_top = wheel(writer, -600)
    writer.page.evaluate(WATCH_SCROLL)
    tokens_after = len(streaming_texts(writer.states(reply_id)))
    writer.wait_status(reply_id)
    reader.wait_status(reply_id)
    time.sleep(0.3)  # anything the final swap would set off
    assert len(streaming_texts(writer.states(reply_id))) > tokens_after + 10, "too few tokens after scrolling up"

    for someone, top in ((reader, reader_top), (writer, writer_top)):
        scrolls = someone.page.evaluate("window.__scrolls")
        assert all(abs(t - top) < 1 for t in scrolls), (top, scrolls)
        state = scroll_state(someone)
        assert abs(state["top"] - top) < 1, (top, state)
        assert state["button"], "no new-messages button after text arrived below"

    # The button has a name, and takes the reader to the newest message.
    button = reader.page.get_by_role("button", name="New messages", exact=True)
    assert button.is_visible()
    button.click()
    wait_at_bottom(reader)
    assert_last_clear(reader)
    assert not scroll_state(reader)["button"]
    assert reader.page.evaluate("document.activeElement.id") == "composer-body"

    # Scrolling back to the bottom by hand also hides it and follows again.
    wheel(writer, 20000)
    assert not scroll_state(writer)["button"]
    post(reader, ["One more thing."])
    for someone in (reader, writer):
        wait_last_text(someone, "One more thing.")
        wait_at_bottom(someone)
        assert_last_clear(someone)
    assert_consistent(reader, writer)
    assert_no_errors(reader, writer)


# -- 2. what screen readers hear ----------------------------------------------------

SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")


def test_screen_readers_hear_whole_sentences(live_server, person):
    live_server.llm.enqueue(words_to_tokens(LONG_REPLY), delay=0.05)
    asker = person(live_server, screen_reader=True).open()
    observer = person(live_server, screen_reader=True).open()
    question = "@gpt how does streaming work here?"
    user_id = asker.send(question)
    reply_id = asker.reply_after(user_id)

    # While the reply streams, its article is busy and reads as one piece
    # only through the announcer.
    observer.wait_text(reply_id, 10)
    for someone in (asker, observer):
        assert someone.status(reply_id) == "streaming", "the reply ended too soon to look at it streaming"
        assert someone.page.get_attribute("#" + reply_id, "aria-busy") == "true"
    asker.wait_status(reply_id)
    observer.wait_status(reply_id)
    time.sleep(0.3)
    assert asker.page.get_attribute("#" + reply_id, "aria-busy") is None

    # The asker really was shown the reply token by token.
    assert len({len(t) for t in streaming_texts(asker.states(reply_id))}) > 3 * SENTENCES

    text = " ".join(expected_text(asker, LONG_REPLY).split())
    first_words = LONG_REPLY.split(".")[0]
    for someone in (asker, observer):
        heard = someone.page.evaluate("window.__heard")
        # The list announces the question once, as a whole message, and
        # nothing of the reply.
        from_list = [h["text"] for h in heard if h["region"] == "messages"]
        assert len(from_list) == 1 and question in from_list[0], heard
        assert not any(first_words in h for h in from_list), heard
        # The reply is heard through the announcer, whole sentences at a
        # time, named once, all of it and nothing twice.
        said = [h["text"] for h in heard if h["region"] == "announcer"]
        assert len(heard) == len(from_list) + len(said), heard
        assert said and said[0].startswith("gpt: "), said
        said[0] = said[0][len("gpt: "):]
        for line in said:
            assert SENTENCE_END.search(line), "not a whole sentence: {!r} in {}".format(line, said)
        assert " ".join(said) == text, said
        assert len(said) >= SENTENCES - 2, said
    # The asker got a sentence at a time although its page grew by tokens.
    assert len([h for h in asker.page.evaluate("window.__heard") if h["region"] == "announcer"]) >= SENTENCES - 1
    assert_no_errors(asker, observer)


def test_a_failed_reply_is_announced_with_its_notice(live_server, person):
    live_server.llm.enqueue([], status=500)
    asker = person(live_server, screen_reader=True).open()
    observer = person(live_server, screen_reader=True).open()
    user_id = asker.send("@gpt are you there?")
    reply_id = asker.reply_after(user_id)
    for someone in (asker, observer):
        someone.wait_status(reply_id, "failed")
    time.sleep(0.3)
    notice = observer.page.locator("#{} .message-notice".format(reply_id)).text_content().strip()
    assert notice
    for someone in (asker, observer):
        said = [h["text"] for h in someone.page.evaluate("window.__heard") if h["region"] == "announcer"]
        assert said == ["gpt: " + " ".join(notice.split())], said
    # Chromium logs nothing for the model's failure: the page's own requests succeeded.
    assert_no_errors(asker, observer)


def insert_history(database_url, room, n):
    """``n`` old messages in ``room``, every third a reply, written straight
    into the server's database."""
    start = datetime.datetime(2026, 1, 1, 9, 0)
    rows = [
        (room, "gpt" if i % 3 == 2 else "Old Timer", "assistant" if i % 3 == 2 else "user", "complete",
         "History line {}. It is old news.".format(i), start + datetime.timedelta(minutes=i), False)
        for i in range(n)
    ]
    sql = ("INSERT INTO message (room, author, role, status, body, created_at, stop_requested)"
           " VALUES (?, ?, ?, ?, ?, ?, ?)")
    room_sql = "INSERT INTO room (name, created_at, active_at, messages) VALUES (?, ?, ?, ?)"
    if database_url.startswith("sqlite:///"):
        con = sqlite3.connect(database_url[len("sqlite:///"):])
        with con:
            con.executemany(sql, rows)
            con.execute(room_sql, (room, start, start, n))
        con.close()
        return
    import psycopg

    with psycopg.connect(database_url) as con:
        with con.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), rows)
            cur.execute(room_sql.replace("?", "%s"), (room, start, start, n))


def test_older_messages_loaded_above_are_not_announced(live_server, person):
    urllib.request.urlopen(live_server.url + "/rooms", timeout=10).close()  # the worker has made the tables
    insert_history(live_server.database_url, "long", 80)
    reader = person(live_server, screen_reader=True).open("/r/long")
    assert len(reader.article_ids()) == 50
    reader.page.evaluate("window.scrollTo(0, 0)")
    reader.wait_for("() => document.querySelectorAll('#messages > article').length === 80", what="older messages")
    reader.page.wait_for_timeout(300)
    assert reader.page.evaluate("window.__heard") == []
    # Scrolled to the top, the reader is not pulled down by what arrives.
    assert not reader.page.evaluate("document.documentElement.classList.contains('pinned')")
    top = reader.page.evaluate("document.scrollingElement.scrollTop")
    writer = person(live_server).open("/r/long")
    writer.send("Anyone here?")
    reader.wait_for(
        "() => !document.getElementById('new-messages').hidden", what="the new-messages button"
    )
    assert abs(reader.page.evaluate("document.scrollingElement.scrollTop") - top) < 1
    heard = reader.page.evaluate("window.__heard")
    assert len(heard) == 1 and "Anyone here?" in heard[0]["text"], heard
    assert_no_errors(reader, writer)


# -- 3. timestamps -----------------------------------------------------------------

# A clock on 10 March 2026 at 15:00 in Berlin (14:00 UTC).
FIXED_NOW = datetime.datetime(2026, 3, 10, 14, 0, tzinfo=datetime.timezone.utc)
TIME_CASES = [
    ("2026-03-10T13:59:30Z", "just now"),
    ("2026-03-10T13:57:00Z", "3 min ago"),
    ("2026-03-10T11:50:00Z", "2 h ago"),
    # 00:10 on the 10th in Berlin, though still the 9th in UTC.
    ("2026-03-09T23:10:00Z", "14 h ago"),
    ("2026-03-09T13:05:00.123456Z", "yesterday 14:05"),
    ("2026-03-01T08:30:00Z", "Mar 1, 09:30"),
    ("2025-12-24T18:00:00Z", "Dec 24, 2025, 19:00"),
]

# Adds an article shaped like the server's, with the given time, to the list.
ADD_TIMED = """([id, iso]) => {
  const article = document.createElement('article');
  article.className = 'message';
  article.id = id;
  article.dataset.role = 'user';
  article.dataset.status = 'complete';
  article.innerHTML = '<header class="message-meta"><span class="message-author">Someone</span>'
    + '<time datetime="' + iso + '">server text</time></header><div class="message-body plain">hi</div>';
  document.getElementById('messages').appendChild(article);
}"""


def time_of(someone, article_id):
    time_el = someone.page.locator("#{} time".format(article_id))
    return time_el.text_content(), time_el.get_attribute("title")


def test_timestamps_are_relative_and_kept_current(live_server, person):
    someone = person(live_server, screen_reader=True, timezone_id="Europe/Berlin", locale="en-US")
    someone.page.clock.install()
    someone.open()
    first = someone.send("What time is it?")
    label, title = time_of(someone, first)
    assert label == "just now"
    now = someone.page.evaluate("new Date()")  # in the page's own clock
    assert str(now.year) in title and re.search(r"\d:\d\d", title), title

    # Kept current as time passes, without a reload, and not read out.
    heard = someone.page.evaluate("window.__heard.length")
    someone.page.clock.fast_forward("03:05")
    someone.wait_for(
        "(id) => document.querySelector('#' + id + ' time').textContent === '3 min ago'",
        arg=first, what="the time to read 3 min ago",
    )
    assert someone.page.evaluate("window.__heard.length") == heard

    # Each range, in the reader's time zone, with the local time in the title.
    someone.page.clock.set_system_time(FIXED_NOW)
    for n, (iso, expected) in enumerate(TIME_CASES):
        someone.page.evaluate(ADD_TIMED, ["message-9000{}".format(n), iso])
        assert time_of(someone, "message-9000{}".format(n))[0] == expected, iso
    title = time_of(someone, "message-90004")[1].replace("\u202f", " ")
    assert title == "Monday, March 9, 2026 at 2:05 PM"
    heard = someone.page.evaluate("window.__heard.length")

    # The periodic update moves them on (an hour later, "3 min ago" is "1 h ago").
    someone.page.clock.fast_forward("01:00:00")
    someone.wait_for(
        "() => document.querySelector('#message-90001 time').textContent === '1 h ago'",
        what="the periodic update",
    )
    assert someone.page.evaluate("window.__heard.length") == heard
    assert_no_errors(someone)


def test_without_javascript_the_time_is_absolute(live_server, person):
    writer = person(live_server).open()
    message_id = writer.send("A message to read without scripts")
    plain = person(live_server, java_script_enabled=False)
    plain.page.goto(live_server.url + "/")
    time_el = plain.page.locator("#{} time".format(message_id))
    stamp = time_el.get_attribute("datetime")
    when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert time_el.text_content() == when.strftime("%Y-%m-%d %H:%M") + " UTC"
    assert plain.page.locator("#new-messages").is_hidden()


# -- 4. keyboard and focus -----------------------------------------------------------

FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const style = getComputedStyle(el);
  return {
    id: el.id, tag: el.tagName, text: (el.textContent || '').trim(), action: el.dataset.action || null,
    outline: style.outlineStyle, width: parseFloat(style.outlineWidth), color: style.outlineColor,
    visible: el.matches(':focus-visible'),
  };
}"""


def describe(focus):
    if focus is None:
        return "body"
    if focus["id"] == "composer-body":
        return "composer"
    if focus["id"] == "new-messages":
        return "new messages"
    if focus["action"]:
        return focus["action"]
    return focus["text"] or focus["tag"]


def tab_cycle(someone, key="Tab", limit=80):
    """Press Tab until focus comes back where it started; what had focus."""
    start = describe(someone.page.evaluate(FOCUSED))
    seen = []
    for _ in range(limit):
        someone.page.keyboard.press(key)
        focus = someone.page.evaluate(FOCUSED)
        seen.append(focus)
        if describe(focus) == start:
            return seen
    raise AssertionError("focus never came back: {}".format([describe(f) for f in seen]))


def assert_focus_visible(focus):
    assert focus["visible"], focus
    assert focus["outline"] not in ("none", "hidden") and focus["width"] >= 2, focus


def test_keyboard_reaches_every_control_with_visible_focus(roomy_server, person):
    someone = person(roomy_server).open()
    post(someone, FILLER)
    roomy_server.llm.enqueue(words_to_tokens(" ".join([LONG_REPLY] * 3)), delay=0.1)
    roomy_server.llm.enqueue(words_to_tokens("Second try. Done."), delay=0.05)
    user_id = someone.send("@gpt a long one please")
    reply_id = someone.reply_after(user_id)
    someone.wait_text(reply_id, 10)
    wheel(someone, -800)
    someone.wait_for("() => !document.getElementById('new-messages').hidden", what="the new-messages button")
    assert someone.status(reply_id) == "streaming"

    # From the composer, Shift+Tab goes round every control: the new-messages
    # button just before the composer, the reply's Stop, and back to the
    # composer (Send is disabled while the asker's reply streams), each
    # visibly focused; Tab goes the other way round.
    someone.textarea.focus()
    seen = tab_cycle(someone, "Shift+Tab")
    names = [describe(f) for f in seen]
    assert names[0] == "new messages" and "stop" in names and names[-1] == "composer", names
    for focus in seen:
        if focus is not None:
            assert_focus_visible(focus)
    # (Focusing Stop scrolled it into view at the bottom, so the
    # new-messages button is gone by now.)
    forwards = [describe(f) for f in tab_cycle(someone)]
    assert forwards.index("stop") < forwards.index("composer"), forwards

    # Enter on the new-messages button goes to the newest message and back
    # to the composer.
    wheel(someone, -800)
    someone.wait_for("() => !document.getElementById('new-messages').hidden", what="the new-messages button")
    someone.textarea.focus()
    someone.page.keyboard.press("Shift+Tab")
    assert describe(someone.page.evaluate(FOCUSED)) == "new messages"
    someone.page.keyboard.press("Enter")
    wait_at_bottom(someone)
    assert describe(someone.page.evaluate(FOCUSED)) == "composer"
    assert someone.page.locator("#new-messages").is_hidden()

    # Stop by keyboard; focus moves to the Retry that replaces it; Retry by
    # keyboard starts the reply again.
    someone.page.keyboard.press("Shift+Tab")
    assert describe(someone.page.evaluate(FOCUSED)) == "stop"
    someone.page.keyboard.press("Enter")
    someone.wait_status(reply_id, "stopped")
    someone.wait_for("() => document.activeElement && document.activeElement.dataset.action === 'retry'",
                     what="focus on Retry")
    assert_focus_visible(someone.page.evaluate(FOCUSED))
    # With the reply stopped, Send is enabled and in the round too.
    seen = tab_cycle(someone)
    names = [describe(f) for f in seen]
    assert names.index("composer") < names.index("Send") < names.index("retry"), names
    for focus in seen:
        if focus is not None:
            assert_focus_visible(focus)
    someone.page.keyboard.press("Enter")
    someone.wait_status(reply_id, "complete")
    assert someone.body_text(reply_id) == "Second try. Done."
    assert_no_errors(someone)


# -- 5. contrast -----------------------------------------------------------------------

# WCAG 2 contrast of every piece of visible text against what is behind it
# (background colours composited up the tree), plus the composer's
# placeholder and the "reconnecting" notice.
CONTRAST = """() => {
  function parse(c) {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  }
  function over(top, under) {
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + under[i] * (1 - a)).concat([1]);
  }
  function background(el) {
    const layers = [];
    for (; el; el = el.parentElement) {
      const bg = parse(getComputedStyle(el).backgroundColor);
      if (bg && bg[3] > 0) {
        layers.push(bg);
        if (bg[3] >= 1) break;
      }
    }
    let color = [255, 255, 255, 1];
    for (let i = layers.length - 1; i >= 0; i--) color = over(layers[i], color);
    return color;
  }
  function luminance(c) {
    const [r, g, b] = c.slice(0, 3).map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  }
  function ratio(fg, bg) {
    const a = luminance(fg) + 0.05, b = luminance(bg) + 0.05;
    return Math.max(a, b) / Math.min(a, b);
  }
  function label(el) {
    return el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
      (el.className && typeof el.className === 'string' ? '.' + el.className.trim().split(/\\s+/).join('.') : '');
  }
  const results = [];
  function check(el, colorText, text, what) {
    const bg = background(el);
    const fg = over(parse(colorText), bg);
    results.push({what: what || label(el), text: text.slice(0, 40), ratio: ratio(fg, bg),
                  color: colorText, background: 'rgb(' + bg.slice(0, 3).map(Math.round).join(',') + ')'});
  }
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.data.trim();
    const el = node.parentElement;
    if (!text || !el || el.closest('#announcer, script, style, [hidden], [aria-hidden="true"]')) continue;
    if (el.closest('button:disabled')) continue;  // inactive controls are exempt
    const rect = el.getBoundingClientRect();
    if (!el.getClientRects().length || rect.width < 2 || getComputedStyle(el).visibility !== 'visible') continue;
    check(el, getComputedStyle(el).color, text);
  }
  const field = document.querySelector('#composer textarea');
  check(field, getComputedStyle(field, '::placeholder').color, field.placeholder, 'placeholder');
  const bar = document.querySelector('.topbar');
  const after = getComputedStyle(bar, '::after');
  if (after.content && after.content !== 'none') check(bar, after.color, after.content, 'reconnecting');
  return results;
}"""

CONTRAST_REPLY = (
    "Here is a [link to the docs](https://example.com/docs) and `inline code`.\n\n"
    "> A quoted line.\n\n"
    "```python\ndef add(a, b):\n    return a + b  # sum\n```\n\n"
    "Done."
)

# Copies of the page's first user article and its reply, one per author colour.
ALL_HUES = """() => {
  const user = document.querySelector('#messages > article[data-role="user"]');
  const reply = document.querySelector('#messages > article[data-role="assistant"]');
  for (let hue = 0; hue < 12; hue++) {
    for (const [source, prefix] of [[user, 'hue-user-'], [reply, 'hue-reply-']]) {
      const copy = source.cloneNode(true);
      copy.id = prefix + hue;
      copy.querySelectorAll('[id]').forEach((e) => e.removeAttribute('id'));
      copy.querySelector('.message-author').className = 'message-author hue-' + hue;
      source.parentElement.appendChild(copy);
    }
  }
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_contrast_is_at_least_4_5(live_server, person, scheme):
    live_server.llm.enqueue(words_to_tokens(CONTRAST_REPLY), delay=0.01)
    live_server.llm.enqueue([], status=500)
    asker = person(live_server).open()
    asker.page.emulate_media(color_scheme=scheme)
    assert asker.page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches") == (scheme == "dark")
    other = person(live_server).open()
    other.send("Good morning!")
    reply_id = asker.reply_after(asker.send("@gpt show me a link and some code"))
    asker.wait_status(reply_id)
    # (Send stays disabled until the reply's stream has closed.)
    asker.wait_for("() => !document.querySelector('#composer button').disabled", what="Send enabled")
    failed_id = asker.reply_after(asker.send("@gpt and again?"))
    asker.wait_status(failed_id, "failed")
    asker.page.evaluate(ALL_HUES)
    asker.page.evaluate("document.body.dataset.live = 'false'")
    # The top bar's menus open: the room list and the name form.
    asker.page.evaluate("document.querySelectorAll('.topbar details').forEach((d) => { d.open = true; })")
    # A reply still streaming, with its Stop control.
    asker.page.evaluate(
        """(id) => { const copy = document.getElementById(id).cloneNode(true);
                     copy.id = 'streaming-copy'; copy.dataset.status = 'streaming';
                     copy.insertAdjacentHTML('beforeend',
                       '<button type="button" class="message-control mine-only" data-action="stop">Stop</button>');
                     document.getElementById('messages').appendChild(copy); }""",
        reply_id,
    )

    asker.page.wait_for_timeout(200)  # the page has followed the copies to the bottom
    # The new-messages button, as it shows when something arrives below.
    results = asker.page.evaluate(
        "() => { document.getElementById('new-messages').hidden = false; return (" + CONTRAST + ")(); }"
    )
    failing = [r for r in results if r["ratio"] < 4.5]
    assert not failing, failing
    # What was measured covers what the page shows.
    measured = " ".join(r["what"] for r in results)
    for hue in range(12):
        assert re.search(r"message-author\.hue-{}\b".format(hue), measured), hue
    for part in ("message-body", "a", "code", "time", "usage-model", "usage-rate", "message-model", "message-notice",
                 "message-badge",
                 "button", "new-messages", "placeholder", "reconnecting", "me", "hint", "h1",
                 "summary", "rename-rules"):
        assert re.search(r"(^|[ .#]){}\b".format(re.escape(part)), measured), part
    for action in ("Retry", "Stop", "Send"):
        assert any(r["text"] == action for r in results), action
    assert_no_errors(asker, other)


# -- 6. the phone layout -----------------------------------------------------------------

PHONE_REPLY = (
    "A wide table and a long line follow.\n\n"
    "| name | role | started | finished | tokens | notes |\n"
    "|---|---|---|---|---|---|\n"
    "| alpha | assistant | 2026-03-10 14:00 | 2026-03-10 14:01 | 1234 | streamed sentence by sentence |\n\n"
    "```python\nresult = some_function_with_a_long_name(argument_one, argument_two, argument_three, argument_four)\n```\n\n"
    "See https://example.com/a/very/long/path/that/does/not/break/anywhere/because/it/is/one/word for more."
)

LAYOUT = """() => {
  const vw = document.documentElement.clientWidth;
  const doc = document.scrollingElement;
  function box(el) { const r = el.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, height: r.height}; }
  function scrolls(el) {
    return {box: box(el), overflow: getComputedStyle(el).overflowX,
            scrollWidth: el.scrollWidth, clientWidth: el.clientWidth};
  }
  const topbar = document.querySelector('.topbar');
  return {
    vw: vw, vh: innerHeight,
    pageScrollWidth: doc.scrollWidth,
    pre: scrolls(document.querySelector('.message-body pre')),
    table: scrolls(document.querySelector('.message-body table')),
    topbar: box(topbar),
    topbarParts: Array.from(topbar.children).map(box),
    composerParts: Array.from(document.querySelectorAll('#composer textarea, #composer button')).map(box),
    articles: Array.from(document.querySelectorAll('#messages > article')).map(box),
  };
}"""


@pytest.mark.parametrize("width", [390, 320])
def test_phone_layout(live_server, person, width):
    live_server.llm.enqueue(words_to_tokens(PHONE_REPLY), delay=0.01)
    someone = person(live_server, viewport={"width": width, "height": 844}).open()
    someone.send("A long word: " + "Pneumonoultramicroscopicsilicovolcanoconiosis" * 3)
    reply_id = someone.reply_after(someone.send("@gpt show me a wide table and code"))
    someone.wait_status(reply_id)
    wait_at_bottom(someone)
    layout = someone.page.evaluate(LAYOUT)

    # No horizontal scrolling of the page: everything fits its width.
    assert layout["vw"] == width
    assert layout["pageScrollWidth"] <= width, layout
    for part in layout["articles"] + layout["topbarParts"] + layout["composerParts"]:
        assert part["left"] >= 0 and part["right"] <= width + 0.5, (part, layout)
    # Code and tables scroll inside themselves.
    for name in ("pre", "table"):
        block = layout[name]
        assert block["overflow"] in ("auto", "scroll"), (name, block)
        assert block["scrollWidth"] > block["clientWidth"], (name, block)
        assert block["box"]["right"] <= width, (name, block)
    # The topbar wraps within a modest height.
    assert layout["topbar"]["height"] < 0.2 * layout["vh"], layout["topbar"]
    # Scrolled to the end, the composer covers nothing of the last message;
    # nor after it grows with an error under it.
    assert_last_clear(someone)
    someone.textarea.fill("   ")
    someone.textarea.press("Enter")
    someone.wait_for("() => document.getElementById('composer-error').textContent.trim() !== ''",
                     what="the composer's error")
    someone.page.wait_for_timeout(200)
    assert_last_clear(someone)
    # Chromium logs the refused post (HTTP 400) as a console error.
    someone.errors = [e for e in someone.errors if not ("status of 400" in e and e.endswith("/messages"))]
    assert_no_errors(someone)
