"""Headless-browser plumbing shared by the browser tests: Debian's Chromium
(/usr/bin/chromium; playwright's own browsers are never installed), a
``Person`` per browser context (its own session cookie, so its own name) and
assertions about what every page shows.

Every page records, through a MutationObserver installed before any page
script runs, each distinct state (text and status) of every assistant reply's
body, so tests see every intermediate render without polling.
"""
import html
import re

import pytest

playwright_sync = pytest.importorskip("playwright.sync_api")

from chat.render.rendering import render_markdown  # noqa: E402  (conftest puts the app on sys.path)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000

# Installed in every page before its own scripts: records the order in which
# htmx initializes and its extensions register (window.__htmxOrder), by
# wrapping the two methods as soon as the htmx global is assigned. htmx must
# not initialize before every extension has registered, or the page never
# connects its socket (section 7 tests that; diagnose() shows the order).
HTMX_ORDER = """
(() => {
  const order = window.__htmxOrder = [];
  let current;
  Object.defineProperty(window, 'htmx', {
    configurable: true,
    get() { return current; },
    set(value) {
      current = value;
      if (!value || value.__wrapped) return;
      value.__wrapped = true;
      const initialize = value.initialize.bind(value);
      const register = value.registerExtension.bind(value);
      value.initialize = function () { order.push('initialize'); return initialize(...arguments); };
      value.registerExtension = function (name) { order.push('register:' + name); return register(...arguments); };
    },
  });
})();
"""
HTMX_SETTLED = """() => {
  const order = window.__htmxOrder || [];
  const wanted = document.querySelectorAll('script[src*="/vendor/hx-"]').length;
  return order.includes('initialize') && order.filter((o) => o.startsWith('register:')).length >= wanted;
}"""


def raced(order):
    """True when htmx initialized before every extension had registered."""
    return order.index("initialize") != len(order) - 1


# Installed in every page before its own scripts: records each distinct
# (text, status) of every assistant reply body after every DOM mutation, and
# any element in a message body that should never be there.
RECORDER = """
(() => {
  const rec = window.__replyStates = {};
  const unsafe = window.__unsafeSeen = [];  // markup that must never be in a message body
  function scan() {
    document.querySelectorAll('#messages .message-body').forEach((b) => {
      b.querySelectorAll('img, script, iframe, object, embed, svg, style, [onerror], [onload]').forEach((e) => {
        unsafe.push(b.id + ': ' + e.outerHTML);
      });
    });
    document.querySelectorAll('#messages > article.message[data-role="assistant"]').forEach((a) => {
      const body = a.querySelector('.message-body');
      const text = body ? body.textContent : '';
      const status = a.dataset.status;
      const list = rec[a.id] || (rec[a.id] = []);
      const last = list[list.length - 1];
      if (!last || last.text !== text || last.status !== status) {
        list.push({text: text, status: status, t: performance.now(), html: body ? body.innerHTML : ''});
      }
    });
  }
  function start() {
    scan();
    new MutationObserver(scan).observe(document.documentElement, {
      subtree: true, childList: true, characterData: true,
      attributes: true, attributeFilter: ['data-status'],
    });
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
"""


def words_to_tokens(text):
    """Word-sized tokens keeping their leading whitespace, with trailing
    punctuation as its own token (the way real models emit them)."""
    tokens = []
    for piece in re.findall(r"\s*\S+|\s+", text):
        core = piece.rstrip(".,!?;:")
        if core.strip() and core != piece:
            tokens += [core, piece[len(core):]]
        else:
            tokens.append(piece)
    assert "".join(tokens) == text
    return tokens


# Short sentences (at most 12 tokens, well under the 1 s chunk time cap at
# 0.05 s a token) so every committed chunk ends at a sentence boundary.
LONG_REPLY = (
    "Streaming works like this. The asker sees every token as it arrives."
    " Everyone else sees whole sentences, which keeps **bandwidth low**."
    " Each sentence is stored before it is pushed to others."
    " A reload shows what was stored so far."
    " Then the page follows the rest of the reply live."
    " Closing a tab does not stop the reply for anyone else."
    " Is that not a neat trick?"
)
SENTENCES = len(re.findall(r"[.!?](?:\s|$)", LONG_REPLY))
SENTENCE_PREFIX = re.compile(r"[.!?][\"')\]*]*\s*$", re.S)


# -- browser plumbing -----------------------------------------------------------


def launch(p):
    """Debian's Chromium, headless, through a running ``sync_playwright()``."""
    return p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


class Person:
    """One browser context (its own session cookie, so its own name) and a page."""

    def __init__(self, browser, server, **context_options):
        self.server = server
        self.base_url = server.url
        self.context = browser.new_context(**context_options)
        self.context.set_default_timeout(TIMEOUT_MS)
        self.context.add_init_script(HTMX_ORDER)
        self.context.add_init_script(RECORDER)
        self.errors = []
        self.closed = False
        self.page = self.context.new_page()
        self.sockets = []  # [url, frames received, closed?] per websocket the page opened
        self.page.on("websocket", self._websocket)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append("pageerror: {}".format(exc)))

    def _websocket(self, ws):
        entry = [ws.url, 0, False]
        self.sockets.append(entry)
        ws.on("framereceived", lambda frame: entry.__setitem__(1, entry[1] + 1))
        ws.on("close", lambda _: entry.__setitem__(2, True))

    def diagnose(self):
        """What the page looks like, for a failure message."""
        if self.closed:
            return "(closed)"
        try:
            state = self.page.evaluate(
                """() => ({live: document.body.dataset.live, order: window.__htmxOrder,
                           articles: Array.from(document.querySelectorAll('#messages article')).map(
                             (a) => [a.id, a.dataset.status, a.querySelector('.message-body').textContent.length]),
                           states: window.__replyStates})"""
            )
        except Exception as exc:  # noqa: BLE001 - best effort only
            state = repr(exc)
        return "url={} sockets={} errors={} state={}\nserver log tail:\n{}".format(
            self.page.url, self.sockets, self.errors, state, self.server.logs()[-3000:]
        )

    def wait_for(self, expression, arg=None, what="condition"):
        try:
            return self.page.wait_for_function(expression, arg=arg)
        except playwright_sync.TimeoutError:
            raise AssertionError("timed out waiting for {}: {}".format(what, self.diagnose())) from None

    def _console(self, msg):
        if msg.type == "error":
            self.errors.append("console.error: {} @ {}".format(msg.text, msg.location.get("url", "")))

    # navigation -----------------------------------------------------------

    def open(self, path="/"):
        self.page.goto(self.base_url + path)
        self.wait_live()
        return self

    def reload(self):
        self.page.reload(wait_until="domcontentloaded")

    def wait_live(self):
        self.wait_for("() => document.body && document.body.dataset.live === 'true'", what="the socket")
        order = self.page.evaluate("window.__htmxOrder")
        assert not raced(order), order

    def close(self):
        if not self.closed:
            self.closed = True
            self.context.close()

    # the composer ---------------------------------------------------------

    @property
    def textarea(self):
        return self.page.locator("#composer textarea[name=body]")

    def send(self, text):
        """Type a message and press Enter; return the id of its article."""
        before = self.article_ids()
        self.textarea.fill(text)
        self.textarea.press("Enter")
        self.page.wait_for_function(
            """([before, text]) => Array.from(document.querySelectorAll(
                 '#messages > article.message[data-role="user"]')).some(
                 (a) => !before.includes(a.id) && a.querySelector('.message-body').textContent === text)""",
            arg=[before, text],
        )
        return self.page.evaluate(
            """([before, text]) => Array.from(document.querySelectorAll(
                 '#messages > article.message[data-role="user"]')).find(
                 (a) => !before.includes(a.id) && a.querySelector('.message-body').textContent === text).id""",
            [before, text],
        )

    # reading the page -----------------------------------------------------

    def article_ids(self):
        return self.page.evaluate(
            "Array.from(document.querySelectorAll('#messages article.message')).map((a) => a.id)"
        )

    def wait_article(self, article_id):
        self.wait_for("(id) => !!document.getElementById(id)", arg=article_id, what=article_id)

    def reply_after(self, user_article_id):
        """Wait for the assistant article that follows a user message; its id."""
        return self.page.wait_for_function(
            """(uid) => {
                 const n = parseInt(uid.slice(8), 10);
                 const a = Array.from(document.querySelectorAll(
                   '#messages > article.message[data-role="assistant"]')).find(
                   (a) => parseInt(a.id.slice(8), 10) > n);
                 return a ? a.id : null;
               }""",
            arg=user_article_id,
        ).json_value()

    def wait_status(self, article_id, status="complete"):
        self.wait_for(
            "([id, s]) => { const a = document.getElementById(id); return a && a.dataset.status === s; }",
            arg=[article_id, status],
            what="{} to be {}".format(article_id, status),
        )

    def wait_text(self, article_id, min_length=1):
        self.wait_for(
            """([id, n]) => { const b = document.querySelector('#' + id + ' .message-body');
                              return b && b.textContent.length >= n; }""",
            arg=[article_id, min_length],
            what="text in {}".format(article_id),
        )

    def body_text(self, article_id):
        return self.page.locator("#{} .message-body".format(article_id)).text_content()

    def body_html(self, article_id):
        return self.page.locator("#{} .message-body".format(article_id)).inner_html()

    def status(self, article_id):
        return self.page.locator("#" + article_id).get_attribute("data-status")

    def states(self, article_id):
        """Every distinct (text, status) the page showed for a reply, in order."""
        return self.page.evaluate("(id) => (window.__replyStates || {})[id] || []", article_id)

    def rendered_text(self, html):
        """The textContent a fragment of HTML has once parsed by this browser."""
        return self.page.evaluate(
            "(html) => { const d = document.createElement('div'); d.innerHTML = html; return d.textContent; }",
            html,
        )


def assert_no_errors(*people):
    errors = [(i, e) for i, p in enumerate(people) for e in p.errors]
    assert not errors, "console/page errors: {}".format(errors)


def assert_consistent(*people):
    """No article twice on any page, and every open page shows the same articles."""
    lists = []
    for person in people:
        ids = person.article_ids()
        assert len(ids) == len(set(ids)), "duplicate articles: {}".format(ids)
        assert person.page.evaluate("document.querySelectorAll('[id]').length") == person.page.evaluate(
            "new Set(Array.from(document.querySelectorAll('[id]')).map((e) => e.id)).size"
        ), "duplicate element ids"
        lists.append(ids)
    for ids in lists[1:]:
        assert ids == lists[0], "pages differ: {}".format(lists)


def expected_text(person, markdown_source):
    return person.rendered_text(str(render_markdown(markdown_source)))


def streaming_texts(states):
    """The non-empty texts a page showed while the reply was still streaming."""
    return [s["text"] for s in states if s["status"] == "streaming" and s["text"]]


def drawn_texts(markdown_source):
    """The text of the rendered Markdown of every prefix of ``markdown_source``:
    what a body may show while the reply streams (formatted, so ``**`` goes
    once the bold closes)."""
    texts = set()
    for n in range(len(markdown_source) + 1):
        rendered = str(render_markdown(markdown_source[:n]))
        texts.add(html.unescape(re.sub(r"<[^>]+>", "", rendered)))
    return texts
