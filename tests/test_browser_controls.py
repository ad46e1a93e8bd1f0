"""Reply controls in a real browser: Stop, Retry and Regenerate clicked on the
page by the asker, what an observer's page shows meanwhile, and the footer
and status badges of finished replies."""
from support.browser import LONG_REPLY
from support.browser import assert_consistent
from support.browser import assert_no_errors
from support.browser import drawn_texts
from support.browser import expected_text
from support.browser import playwright_sync
from support.browser import streaming_texts
from support.browser import words_to_tokens
from support.live import message_row
from support.live import wait_until

FIRST = "The first answer says one thing. It is short."
SECOND = (
    "The second answer says another thing. It comes slowly, a word at a time."
    " Everyone sees it grow. Then it ends here."
)


def control(person, reply_id, action):
    return person.page.locator("#{} .message-control[data-action={}]".format(reply_id, action))


def badge(person, reply_id):
    """The status badge's text on a page, or None."""
    found = person.page.locator("#{} .message-meta .message-badge".format(reply_id))
    return found.text_content().strip() if found.count() else None


def notice(person, reply_id):
    return person.page.locator("#{} .message-notice".format(reply_id)).text_content().strip()


def footer(person, reply_id):
    """{part: text} of a reply's footer as the page shows it."""
    return person.page.evaluate(
        """(id) => Object.fromEntries(Array.from(document.querySelectorAll('#' + id + ' .message-usage > span'))
             .map((s) => [s.className.replace('usage-', ''), s.textContent]))""",
        reply_id,
    )


def duration(ms):
    """A time as the footer writes it."""
    return "{} ms".format(ms) if ms < 1000 else "{:.1f} s".format(ms / 1000)


def ask(asker, observer, question):
    """The asker sends a question; the reply's id once both pages show it."""
    user_id = asker.send(question)
    reply_id = asker.reply_after(user_id)
    observer.wait_article(reply_id)
    return reply_id


def test_asker_stops_a_reply_from_the_page(live_server, people):
    live_server.llm.enqueue(words_to_tokens(LONG_REPLY), delay=0.1)
    asker = people(live_server).open()
    observer = people(live_server).open()
    reply_id = ask(asker, observer, "@gpt tell me slowly")
    observer.wait_text(reply_id, 1)  # a sentence reached everyone
    assert not control(observer, reply_id, "stop").is_visible(), "only the asker may stop it"
    assert asker.status(reply_id) == "streaming"

    control(asker, reply_id, "stop").click()
    for person in (asker, observer):
        person.wait_status(reply_id, "stopped")
    kept = asker.body_text(reply_id)
    assert kept and kept in drawn_texts(LONG_REPLY) and kept != expected_text(asker, LONG_REPLY)
    for person in (asker, observer):
        assert badge(person, reply_id) == "Stopped"
        assert notice(person, reply_id) == "Stopped before the reply was finished."
        assert person.body_text(reply_id) == kept
        assert not control(person, reply_id, "stop").is_visible()
    assert control(asker, reply_id, "retry").is_visible()
    assert not control(observer, reply_id, "retry").is_visible()
    # The fake model learns of the hang-up on its next write after it.
    wait_until(lambda: live_server.llm.client_closed_early[-1] is not None, 6, message="the upstream request to end")
    assert live_server.llm.client_closed_early == [True], "the model's request was closed"

    observer.reload()
    observer.wait_live()
    assert observer.body_text(reply_id) == kept and badge(observer, reply_id) == "Stopped"
    assert_consistent(asker, observer)
    assert_no_errors(asker, observer)


def test_asker_retries_a_failed_reply_from_the_page(live_server, people):
    live_server.llm.enqueue([], status=500)
    asker = people(live_server).open()
    observer = people(live_server).open()
    reply_id = ask(asker, observer, "@gpt are you there?")
    for person in (asker, observer):
        person.wait_status(reply_id, "failed")
        assert badge(person, reply_id) == "Failed"
        assert notice(person, reply_id) == "The model provider had an error (500). Try again."
    assert control(asker, reply_id, "retry").is_visible()
    assert not control(observer, reply_id, "retry").is_visible()

    live_server.llm.enqueue(words_to_tokens(FIRST), delay=0.05)
    control(asker, reply_id, "retry").click()
    for person in (asker, observer):
        person.wait_status(reply_id, "complete")
        assert person.body_text(reply_id) == expected_text(person, FIRST)
        assert badge(person, reply_id) is None
        assert person.page.locator("#{} .message-notice".format(reply_id)).count() == 0
    # The observer's page followed the new attempt as it streamed.
    assert streaming_texts(observer.states(reply_id)), observer.states(reply_id)
    assert_consistent(asker, observer)
    assert_no_errors(asker, observer)


def test_asker_regenerates_the_last_reply_in_place(live_server, people):
    live_server.llm.enqueue(words_to_tokens(FIRST), delay=0.02)
    asker = people(live_server).open()
    observer = people(live_server).open()
    reply_id = ask(asker, observer, "@gpt say something")
    for person in (asker, observer):
        person.wait_status(reply_id, "complete")
    old = expected_text(asker, FIRST)
    assert observer.body_text(reply_id) == old

    button = control(asker, reply_id, "regenerate")
    assert button.is_visible() and button.text_content().strip() == "Regenerate"
    # It says what it does: the old answer goes.
    playwright_sync.expect(button).to_have_accessible_name("Regenerate")
    playwright_sync.expect(button).to_have_accessible_description("Replace this answer with a new one")
    assert not control(observer, reply_id, "regenerate").is_visible(), "only the asker may regenerate"
    ids = asker.article_ids()

    live_server.llm.enqueue(words_to_tokens(SECOND), delay=0.08)
    button.click()
    # Every page shows the same article emptied and streaming again ...
    for person in (asker, observer):
        person.wait_for(
            "([id, old]) => { const a = document.getElementById(id);"
            " return a.dataset.status === 'streaming' && !a.textContent.includes(old); }",
            arg=[reply_id, old], what="the reply to restart",
        )
    # ... and then the new answer growing, never mixed with the old one.
    new = expected_text(asker, SECOND)
    for person in (asker, observer):
        person.wait_status(reply_id, "complete")
        assert person.body_text(reply_id) == new
        assert person.article_ids() == ids, "the answer was replaced, not added"
        states = person.states(reply_id)
        first_done = next(i for i, s in enumerate(states) if s["status"] == "complete")
        assert states[first_done]["text"] == old
        restart = next(i for i, s in enumerate(states) if s["status"] == "streaming" and i > first_done)
        assert all(old not in s["text"] for s in states[restart:]), states
        grown = streaming_texts(states[restart:])
        assert len(grown) >= 2 and all(t in drawn_texts(SECOND) for t in grown), grown
    assert old not in asker.page.text_content("#messages")

    observer.reload()
    observer.wait_live()
    assert observer.body_text(reply_id) == new and old not in observer.page.text_content("#messages")
    assert not control(observer, reply_id, "regenerate").is_visible()
    assert control(asker, reply_id, "regenerate").is_visible()

    # Once anyone writes after it, it is no longer the last word: no button.
    user_id = observer.send("thanks, that helps")
    asker.wait_article(user_id)
    assert not control(asker, reply_id, "regenerate").is_visible()
    asker.reload()
    asker.wait_live()
    assert not control(asker, reply_id, "regenerate").is_visible()
    assert asker.body_text(reply_id) == new
    assert_consistent(asker, observer)
    assert_no_errors(asker, observer)


def test_footer_shows_model_tokens_first_token_and_pace(live_server, people):
    tokens = words_to_tokens(SECOND)
    live_server.llm.enqueue(tokens, delay=0.05, first_token_delay=0.3)
    asker = people(live_server).open()
    observer = people(live_server).open()
    reply_id = ask(asker, observer, "@gpt how fast are you?")
    assert asker.page.locator("#{} .message-usage".format(reply_id)).count() == 0, "no footer while streaming"
    for person in (asker, observer):
        person.wait_status(reply_id, "complete")

    row = message_row(live_server.database_url, int(reply_id.split("-")[1]))
    prompt = sum(len(m["content"].split()) for m in live_server.llm.requests[-1]["messages"])
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, len(tokens))
    assert row["ttft_ms"] >= 300
    pace = len(tokens) * 1000 / row["generation_ms"]
    # A token every 50 ms is about 20 a second; a busy machine reads some in
    # bursts, so only the unit is checked here (per second, not per ms).
    assert 2 < pace < 200, pace
    expected = {
        "model": "fake-model",
        "prompt": "{} prompt tokens".format(prompt),
        "completion": "{} completion tokens".format(len(tokens)),
        "ttft": "first token in " + duration(row["ttft_ms"]),
        "rate": "{:.1f} tokens/s".format(pace),
    }
    fresh = people(live_server).open()
    for person in (asker, observer, fresh):
        assert footer(person, reply_id) == expected
        assert person.page.locator("#{} .message-usage".format(reply_id)).is_visible()
    assert_consistent(asker, observer, fresh)
    assert_no_errors(asker, observer, fresh)


def test_regenerate_without_javascript(live_server, browser):
    """With scripting off, the asker's page has the controls as plain forms:
    Regenerate posts, redirects back, and the new answer replaces the old."""
    live_server.llm.enqueue(words_to_tokens(FIRST), delay=0.01)
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(live_server.url + "/")
        page.fill("#composer textarea[name=body]", "@gpt without scripts")
        page.click("#composer button[type=submit]")
        reply = page.locator("#messages > article[data-role=assistant]").last
        reply_id = reply.get_attribute("id")

        def settled(text):
            for _ in range(100):
                if reply.get_attribute("data-status") == "complete" and text in reply.text_content():
                    return True
                page.wait_for_timeout(100)
                page.reload()
            return False

        assert settled("first answer")
        button = page.locator("#{} form button[data-action=regenerate]".format(reply_id))
        assert button.is_visible() and button.text_content() == "Regenerate"
        live_server.llm.enqueue(words_to_tokens(SECOND), delay=0.01)
        button.click()
        assert page.url.endswith("/#" + reply_id)
        assert settled("second answer")
        assert "first answer" not in page.text_content("#messages")
        assert len(page.locator("#messages > article").all()) == 2
    finally:
        context.close()
