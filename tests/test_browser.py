"""Headless-browser tests: two people (two browser contexts) in one room, the
asker streaming token by token and the observer sentence by sentence."""
import time

from support.browser import HTMX_ORDER
from support.browser import HTMX_SETTLED
from support.browser import LONG_REPLY
from support.browser import SENTENCE_PREFIX
from support.browser import SENTENCES
from support.browser import TIMEOUT_MS
from support.browser import assert_consistent
from support.browser import assert_no_errors
from support.browser import drawn_texts
from support.browser import expected_text
from support.browser import playwright_sync
from support.browser import raced
from support.browser import render_markdown
from support.browser import streaming_texts
from support.browser import words_to_tokens

# -- 1. token-level for the asker, sentence-level for the observer --------------


def test_asker_streams_tokens_observer_streams_sentences(live_server, people):
    tokens = words_to_tokens(LONG_REPLY)
    live_server.llm.enqueue(tokens, delay=0.05)
    asker = people(live_server).open()
    observer = people(live_server).open()

    question = "@gpt how does streaming work here?"
    user_id = asker.send(question)
    reply_id = asker.reply_after(user_id)

    # The question shows on the observer's page too, and so does the reply.
    observer.wait_article(user_id)
    assert observer.body_text(user_id) == question
    assert observer.page.locator("#{} .message-author".format(user_id)).text_content() == asker.page.locator(
        "#{} .message-author".format(user_id)
    ).text_content()
    observer.wait_article(reply_id)
    assert observer.page.locator("#{} .message-author".format(reply_id)).text_content().strip() == "gpt"

    asker.wait_status(reply_id)
    observer.wait_status(reply_id)

    # Both end with the same rendered Markdown, equal to the whole reply.
    final = expected_text(asker, LONG_REPLY)
    assert asker.body_text(reply_id) == final
    assert observer.body_text(reply_id) == final
    assert asker.body_html(reply_id) == observer.body_html(reply_id)
    for person in (asker, observer):
        assert person.page.locator("#{} .message-body strong".format(reply_id)).text_content() == "bandwidth low"
        assert "**" not in person.body_text(reply_id)

    # Asker: token-level growth, every step a prefix of the reply drawn as Markdown.
    drawn = drawn_texts(LONG_REPLY)
    asker_texts = streaming_texts(asker.states(reply_id))
    for text in asker_texts:
        assert text in drawn, "asker showed a non-prefix: {!r}".format(text)
    asker_lengths = {len(t) for t in asker_texts}
    assert len(asker_lengths) >= len(tokens) // 4, (len(asker_lengths), len(tokens))

    # Observer: sentence-level growth, every step a prefix ending a sentence.
    observer_texts = streaming_texts(observer.states(reply_id))
    for text in observer_texts:
        assert text in drawn, "observer showed a non-prefix: {!r}".format(text)
        assert SENTENCE_PREFIX.search(text), "observer showed a partial sentence: {!r}".format(text)
    observer_lengths = {len(t) for t in observer_texts}
    assert SENTENCES - 2 <= len(observer_lengths) <= SENTENCES, (observer_lengths, SENTENCES)
    assert len(observer_lengths) < len(asker_lengths) / 3

    assert_consistent(asker, observer)
    assert len(asker.article_ids()) == 2
    assert_no_errors(asker, observer)


# -- 2. a reload mid-reply shows what is stored, then follows the rest ----------


def test_reload_mid_reply_resumes(live_server, people):
    text = LONG_REPLY.split(" Then the page")[0]  # five sentences, ~4.5 s at 0.1 s a token
    live_server.llm.enqueue(words_to_tokens(text), delay=0.1)
    asker = people(live_server).open()
    observer = people(live_server).open()

    user_id = asker.send("@gpt tell me slowly")
    reply_id = asker.reply_after(user_id)
    observer.wait_article(reply_id)
    observer.wait_text(reply_id, 1)  # at least one sentence committed
    assert asker.status(reply_id) == "streaming"

    observer.reload()
    # Right after the reload the server-rendered page shows the committed text.
    shown = observer.body_text(reply_id)
    assert shown, "reloaded page shows an empty reply"
    drawn = drawn_texts(text)
    assert shown in drawn, shown
    assert SENTENCE_PREFIX.search(shown), shown
    assert observer.status(reply_id) == "streaming", "reload was too late to test resuming"
    observer.wait_live()

    asker.wait_status(reply_id)
    observer.wait_status(reply_id)
    assert observer.body_text(reply_id) == asker.body_text(reply_id) == expected_text(asker, text)
    assert observer.body_html(reply_id) == asker.body_html(reply_id)

    # After the reload the observer kept growing (no restart from empty, no
    # chunk applied twice): every state a growing prefix of the reply.
    texts = streaming_texts(observer.states(reply_id))
    assert texts and texts[0] == shown
    for before, after in zip(texts, texts[1:]):
        assert after in drawn and len(after) > len(before), (before, after)
    assert len(texts) >= 2, "observer did not follow the reply after the reload"

    assert_consistent(asker, observer)
    assert_no_errors(asker, observer)


# -- 3. closing the asker's page does not stop the reply ------------------------


def test_asker_closing_page_mid_reply_still_completes(live_server, people):
    live_server.llm.enqueue(words_to_tokens(LONG_REPLY), delay=0.05)
    asker = people(live_server).open()
    observer = people(live_server).open()

    user_id = asker.send("@gpt keep going without me")
    reply_id = asker.reply_after(user_id)
    asker.wait_text(reply_id, 10)
    observer.wait_article(reply_id)
    assert asker.status(reply_id) == "streaming"
    assert_no_errors(asker)
    asker.close()

    observer.wait_status(reply_id)
    assert observer.body_text(reply_id) == expected_text(observer, LONG_REPLY)
    assert observer.page.locator("#{} .message-body strong".format(reply_id)).count() == 1
    drawn = drawn_texts(LONG_REPLY)
    for text in streaming_texts(observer.states(reply_id)):
        assert text in drawn, text

    # Someone arriving afterwards sees the same finished reply.
    late = people(live_server).open()
    assert late.status(reply_id) == "complete"
    assert late.body_html(reply_id) == observer.body_html(reply_id)
    assert_consistent(observer, late)
    assert_no_errors(observer, late)


# -- 3b. Markdown is formatted while it streams, for everyone ---------------------

MARKDOWN_REPLY = (
    "Here is the plan.\n\n"
    "- first item\n- second item\n- third item\n\n"
    "And some code:\n\n"
    "```python\ndef add(a, b):\n    return a + b\n```\n\n"
    "That is all for now. Thanks for asking."
)

ARTICLE_HTML = "(id) => document.getElementById(id).outerHTML"


def formatted_while_streaming(states):
    """(saw a list of two items, saw a code block) among the streaming states."""
    streaming = [s["html"] for s in states if s["status"] == "streaming"]
    return (
        any(h.count("<li>") >= 2 and "<ul>" in h for h in streaming),
        any('<pre><code class="language-python">' in h for h in streaming),
    )


def ask_and_watch(live_server, people, question, reply, delay):
    """An asker and an observer on one page each; the asker asks ``question``,
    the model answers ``reply`` a word every ``delay`` seconds, and both pages
    show it complete. Returns (asker, observer, reply's article id)."""
    live_server.llm.enqueue(words_to_tokens(reply), delay=delay)
    asker = people(live_server).open()
    observer = people(live_server).open()
    reply_id = asker.reply_after(asker.send(question))
    asker.wait_status(reply_id)
    observer.wait_status(reply_id)
    return asker, observer, reply_id


def test_markdown_is_formatted_while_streaming_and_ends_as_a_fresh_load(live_server, people):
    asker, observer, reply_id = ask_and_watch(
        live_server, people, "@gpt show me a list and some code", MARKDOWN_REPLY, 0.06
    )

    for person in (asker, observer):
        states = person.states(reply_id)
        assert formatted_while_streaming(states) == (True, True), states
        assert all("```" not in s["html"] and "- first" not in s["html"] for s in states), (
            "raw Markdown was shown"
        )
        # Highlighted once the fence closed, still while the reply streamed.
        streaming = [s["html"] for s in states if s["status"] == "streaming"]
        assert any('<span class="k">def</span>' in h for h in streaming), streaming[-1]

    # The pages that followed the reply hold exactly what a fresh load draws:
    # the body, and the whole article around it.
    time.sleep(0.3)  # htmx's settle step removes its transient classes
    fresh = people(live_server).open()
    expected_body = str(render_markdown(MARKDOWN_REPLY))
    for person in (asker, observer, fresh):
        assert person.body_html(reply_id) == expected_body
    article = fresh.page.evaluate(ARTICLE_HTML, reply_id)
    assert asker.page.evaluate(ARTICLE_HTML, reply_id) == article
    assert observer.page.evaluate(ARTICLE_HTML, reply_id) == article
    assert 'data-status="complete"' in article and "hx-preserve" not in article
    assert fresh.page.locator("#{} .message-usage".format(reply_id)).count() == 1

    # An observer that reloads mid-reply, then follows the rest, ends the same.
    live_server.llm.enqueue(words_to_tokens(MARKDOWN_REPLY), delay=0.06)
    user_id = asker.send("@gpt again please")
    reply_id = asker.reply_after(user_id)
    observer.wait_for(
        "(id) => { const b = document.querySelector('#' + id + ' .message-body'); return b && b.querySelector('li'); }",
        arg=reply_id, what="the list on the observer's page",
    )
    observer.reload()
    assert observer.status(reply_id) == "streaming", "reload was too late to test resuming"
    observer.wait_live()
    asker.wait_status(reply_id)
    observer.wait_status(reply_id)
    time.sleep(0.3)
    fresh.reload()
    fresh.wait_live()
    article = fresh.page.evaluate(ARTICLE_HTML, reply_id)
    assert observer.page.evaluate(ARTICLE_HTML, reply_id) == article
    assert asker.page.evaluate(ARTICLE_HTML, reply_id) == article
    assert_consistent(asker, observer, fresh)
    assert_no_errors(asker, observer, fresh)


TABLE_REPLY = (
    "Here are the numbers.\n\n"
    "| Name | Count |\n|---|---:|\n| apples | 3 |\n| pears | 5 |\n| plums | 8 |\n| figs | 13 |\n\n"
    "> Quoted for the record. It spans two sentences.\n\n"
    "1. one\n2. two\n   - nested\n   - more\n3. three\n\n"
    "That is the table."
)


def test_table_rows_quotes_and_nested_lists_grow_in_place(live_server, people):
    # Each committed sentence reaches the observer as a piece that the page
    # applies itself: table rows must be parsed inside the table's body (an
    # HTML parser drops a <tr> anywhere else), nested items inside their list.
    asker, observer, reply_id = ask_and_watch(live_server, people, "@gpt table please", TABLE_REPLY, 0.05)
    time.sleep(0.3)

    for person in (asker, observer):
        streaming = [s["html"] for s in person.states(reply_id) if s["status"] == "streaming"]
        rows = [h.count("<tr>") for h in streaming if "<table>" in h]
        assert rows and max(rows) >= 4, "the table grew while the reply streamed: {}".format(rows)
        assert any("<blockquote>" in h for h in streaming), streaming[-1]
    fresh = people(live_server).open()
    expected = str(render_markdown(TABLE_REPLY))
    assert "<td>figs</td>" in expected and "<blockquote>" in expected and "<li>nested</li>" in expected
    for person in (asker, observer, fresh):
        assert person.body_html(reply_id) == expected
    assert_consistent(asker, observer, fresh)
    assert_no_errors(asker, observer, fresh)


APPLY_PIECES = """([id, pieces]) => {
  const body = document.querySelector('#' + id + ' .message-body');
  return pieces.map((data) => {
    const before = body.innerHTML;
    const detail = {message: {data: data}, cancelled: false};
    document.dispatchEvent(new CustomEvent('htmx:ws:before:message:incoming', {detail: detail}));
    return {changed: body.innerHTML !== before, cancelled: detail.cancelled};
  });
}"""


def test_a_piece_the_page_cannot_place_changes_nothing(live_server, people):
    asker, observer, reply_id = ask_and_watch(live_server, people, "@gpt hi", "Hello there.", 0.01)
    n = reply_id[len("message-"):]
    body = observer.body_html(reply_id)
    results = observer.page.evaluate(APPLY_PIECES, [reply_id, [
        "+{}\x1f9 <b>deeper than the body goes</b>".format(n),
        "+{}\x1fx <b>not a depth</b>".format(n),
        "+{}\x1f1<b>no space</b>".format(n),
        "+999999\x1f0 <b>no such reply</b>",
        "+{}\x1f1  Again.".format(n),
    ]])
    # Every piece is taken from hx-ws (never swapped as HTML into the page);
    # only the one that names an element the body has changes it.
    assert [r["cancelled"] for r in results] == [True] * 5
    assert [r["changed"] for r in results] == [False, False, False, False, True]
    assert observer.body_html(reply_id) == body.replace("</p>", " Again.</p>")
    assert_no_errors(asker, observer)


# -- 4. no markup or script from people or the model runs -----------------------

XSS_USER = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
XSS_REPLY = (
    'Here is raw HTML: <img src=x onerror="window.__pwned=3"> and <script>window.__pwned=4</script>.'
    " And a [link](javascript:alert(1)) plus <a href=\"javascript:window.__pwned=5\">another</a>."
    ' Also <iframe src="javascript:window.__pwned=6"></iframe> done.'
)

BODY_PROBE = """(id) => {
  const body = document.querySelector('#' + id + ' .message-body');
  return {
    pwned: typeof window.__pwned,
    bad: body.querySelectorAll('img, script, iframe, object, embed, svg, [onerror], [onload], [style]').length,
    hrefs: Array.from(body.querySelectorAll('a')).map((a) => a.getAttribute('href')),
    text: body.textContent,
  };
}"""


def test_markup_from_people_and_model_is_inert(live_server, people):
    live_server.llm.enqueue(words_to_tokens(XSS_REPLY), delay=0.01)
    asker = people(live_server).open()
    observer = people(live_server).open()

    message = "@gpt " + XSS_USER
    user_id = asker.send(message)
    reply_id = asker.reply_after(user_id)
    observer.wait_article(user_id)
    asker.wait_status(reply_id)
    observer.wait_status(reply_id)

    def check(person):
        assert person.page.evaluate("window.__unsafeSeen") == [], "unsafe markup was in the page while streaming"
        user = person.page.evaluate(BODY_PROBE, user_id)
        reply = person.page.evaluate(BODY_PROBE, reply_id)
        assert user["pwned"] == "undefined" and reply["pwned"] == "undefined"
        assert user["bad"] == 0 and reply["bad"] == 0
        assert user["text"] == message, "the message is not shown as the text typed"
        assert user["hrefs"] == []
        for href in reply["hrefs"]:
            assert href is None or not href.strip().lower().startswith("javascript"), reply["hrefs"]
        assert "<img" in reply["text"] and "<script>" in reply["text"], "raw HTML not shown as text"

    check(asker)
    check(observer)
    # The server-rendered page (a reload) is just as inert.
    observer.reload()
    observer.wait_live()
    check(observer)
    assert_consistent(asker, observer)
    assert_no_errors(asker, observer)


# -- 5. the built-in demo model ----------------------------------------------------


def test_demo_model_streams_markdown(demo_server, people):
    person = people(demo_server).open()
    assert person.page.locator(".model-name").text_content().strip() == "demo"

    user_id = person.send("@gpt hello")
    reply_id = person.reply_after(user_id)
    person.wait_text(reply_id, 20)
    person.wait_status(reply_id, "complete")

    assert person.page.locator("#{} .message-model".format(reply_id)).text_content().strip() == "demo"
    body = person.page.locator("#{} .message-body".format(reply_id))
    assert body.locator("ul li, ol li").count() >= 2
    assert body.locator("pre code").count() == 1
    texts = streaming_texts(person.states(reply_id))
    assert len({len(t) for t in texts}) >= 20, "the demo reply did not stream"
    assert_consistent(person)
    assert_no_errors(person)


# -- 6. the composer -----------------------------------------------------------------


def test_composer_keys_focus_and_errors(live_server, people):
    person = people(live_server).open()
    field = person.textarea

    # Sending clears the field and keeps it focused.
    first = person.send("hello everyone")
    assert field.input_value() == ""
    assert person.page.evaluate("document.activeElement === document.querySelector('#composer textarea')")

    # Shift+Enter adds a line; Enter then sends both lines as one message.
    field.press_sequentially("line one")
    field.press("Shift+Enter")
    field.press_sequentially("line two")
    assert field.input_value() == "line one\nline two"
    assert person.article_ids() == [first]
    before = person.article_ids()
    field.press("Enter")
    person.page.wait_for_function(
        "(n) => document.querySelectorAll('#messages > article.message').length > n", arg=len(before)
    )
    ids = person.article_ids()
    assert len(ids) == 2
    assert person.body_text(ids[-1]) == "line one\nline two"
    assert field.input_value() == ""
    assert person.page.evaluate("document.activeElement === document.querySelector('#composer textarea')")

    # An empty (or blank) message is refused with a visible error, and no article.
    error = person.page.locator("#composer-error")
    for blank in ("", "   \n  "):
        person.page.evaluate("document.querySelector('#composer-error').textContent = ''")
        field.fill(blank)
        field.press("Enter")
        person.page.wait_for_function("() => document.querySelector('#composer-error').textContent.trim() !== ''")
        assert "empty" in error.text_content().lower()
        assert person.article_ids() == ids
    # Chromium logs every 4xx response as a console error; the app answers an
    # empty message with 400 on purpose (chat.web.messages.composer_error), so those two
    # entries, and only those, are expected.
    refused = [e for e in person.errors if "status of 400" in e and e.endswith("/messages")]
    assert len(refused) == 2, person.errors
    person.errors = [e for e in person.errors if e not in refused]

    # The next good message clears the error.
    person.send("after the error")
    assert error.text_content().strip() == ""
    assert len(person.article_ids()) == 3
    assert_consistent(person)
    assert_no_errors(person)


# -- 7. htmx must not initialize before its extensions ---------------------------
#
# A regression test. When templates/base.html loaded htmx and its extensions
# with ``defer``, they ran once the document was parsed (readyState
# "interactive"), so htmx 4 scheduled its initialize() with setTimeout(0)
# instead of waiting for DOMContentLoaded, and that timer could fire before the
# following deferred scripts (hx-sse, hx-ws, hx-upsert, app.js) had run. htmx
# then processed the page without them: #live never opened its socket
# (body[data-live] never set), nothing retried, and the page showed no one
# else's messages. About 1 load in 4, and most reloads (scripts cached), hit it.


def _check_load(page, navigate):
    """Navigate; (went live?, htmx init order) for the page that loaded."""
    navigate()
    page.wait_for_function(HTMX_SETTLED, timeout=TIMEOUT_MS)
    order = page.evaluate("window.__htmxOrder")
    try:
        page.wait_for_function("() => document.body.dataset.live === 'true'", timeout=1500)
        return True, order
    except playwright_sync.TimeoutError:
        return False, order


def test_page_goes_live_when_an_extension_script_arrives_late(live_server, browser):
    """Deterministic reproduction: hx-sse arrives 300 ms later than the rest
    (slow network, cache miss), so htmx's init timer fires first."""

    def slow(route):
        time.sleep(0.3)
        route.continue_()

    context = browser.new_context()
    try:
        context.add_init_script(HTMX_ORDER)
        page = context.new_page()
        page.route("**/vendor/hx-sse-*.js", slow)
        live, order = _check_load(page, lambda: page.goto(live_server.url + "/"))
    finally:
        context.close()
    assert live, "the page never connected its socket; htmx init order: {}".format(order)
    assert not raced(order), order


def test_page_goes_live_on_every_load_and_reload(live_server, browser):
    """The same race with nothing slowed down: a few first visits and reloads."""
    results = []
    for _ in range(2):
        context = browser.new_context()
        try:
            context.add_init_script(HTMX_ORDER)
            page = context.new_page()
            results.append(_check_load(page, lambda: page.goto(live_server.url + "/")))
            for _ in range(2):
                results.append(_check_load(page, lambda: page.reload(wait_until="domcontentloaded")))
        finally:
            context.close()
    dead = [order for live, order in results if not live]
    assert not dead, "{} of {} page loads never connected their socket; htmx init order: {}".format(
        len(dead), len(results), dead
    )
