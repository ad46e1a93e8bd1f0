"""Every refusal shown to the person, in a real browser: a paste over the
request cap, a message over the limit (counted before sending), a bad
encoding, an expired page, a rate limit, a server error, a proxy's error page
and a server that is gone each say what happened where the form shows errors,
and keep what was typed; without JavaScript the same come back as pages that
say so and keep the draft."""
import re
import sqlite3

from conftest import fake_model_server
from support.browser import TIMEOUT_MS
from support.browser import assert_no_errors


def error_text(person, selector="#composer-error"):
    return person.page.locator(selector).text_content().strip()


def wait_error(person, selector="#composer-error"):
    person.wait_for(
        "(s) => document.querySelector(s).textContent.trim() !== ''", arg=selector, what="an error in " + selector
    )
    return error_text(person, selector)


def forget_refused(person, status, path):
    """Chromium logs each 4xx/5xx response as a console error: the ones a test
    causes on purpose are expected, and only those."""
    refused = [e for e in person.errors if "status of {}".format(status) in e and e.endswith(path)]
    assert refused, person.errors
    person.errors = [e for e in person.errors if e not in refused]


def execute(database_url, sql):
    """Run one statement on the live server's database (SQLite or PostgreSQL)."""
    if database_url.startswith("sqlite:///"):
        con = sqlite3.connect(database_url[len("sqlite:///"):], timeout=5, isolation_level=None)
        try:
            con.execute(sql)
        finally:
            con.close()
        return
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as con:
        con.execute(sql)


def press_send(person, text):
    person.textarea.fill(text)
    person.textarea.press("Enter")


def test_a_200_kb_paste_is_refused_in_words_and_kept(live_server, people):
    person = people(live_server).open()
    big = "a" * 200_000
    press_send(person, big)
    assert wait_error(person) == "That message is too large to send (195 KB); a message can be up to 4,000 characters."
    assert person.textarea.input_value() == big  # nothing lost
    assert person.article_ids() == []
    forget_refused(person, 413, "/messages")
    # The next message goes, and the error goes with it.
    person.send("a short one")
    assert error_text(person) == ""
    assert_no_errors(person)


def test_the_composer_counts_near_its_limit(live_server, people):
    person = people(live_server).open()
    field, count = person.textarea, person.page.locator("#composer-count")
    assert field.get_attribute("maxlength") is None  # the script's count replaces it: a paste is kept whole
    field.fill("x" * 3000)
    assert count.text_content() == ""
    field.fill("é" * 3500)
    assert count.text_content() == "3,500 / 4,000"
    field.fill("😀" * 4100)  # counted as characters, as the server counts them
    assert count.text_content() == "100 characters over the limit of 4,000"
    assert count.get_attribute("data-over") is not None and field.get_attribute("aria-invalid") == "true"
    assert person.page.locator("#composer-limit").text_content() == "Over the limit of 4,000 characters."
    field.press("Enter")
    assert wait_error(person) == "That message is 4,100 characters long; the limit is 4,000."
    assert field.input_value() == "😀" * 4100
    forget_refused(person, 413, "/messages")
    field.fill("y" * 3999)
    assert count.text_content() == "3,999 / 4,000" and field.get_attribute("aria-invalid") is None
    assert person.page.locator("#composer-limit").text_content() == "Within the limit again."
    person.send("y" * 3999)
    assert count.text_content() == ""
    assert_no_errors(person)


def test_bad_encoding_is_refused_in_words(live_server, people):
    person = people(live_server).open()

    def mangle(route):
        route.continue_(post_data=re.sub(rb"body=[^&]*", b"body=caf%E9", route.request.post_data_buffer))

    person.page.route("**/messages", mangle)
    press_send(person, "café")
    assert wait_error(person) == "The message could not be read: it is not valid UTF-8 text."
    assert person.textarea.input_value() == "café"
    forget_refused(person, 400, "/messages")
    person.page.unroute("**/messages")
    person.send("café")
    assert_no_errors(person)


def test_an_expired_page_sends_on_the_second_press(live_server, people):
    person = people(live_server).open()
    person.page.evaluate(
        """() => { document.querySelector('meta[name="csrf-token"]').content = 'stale';
                   document.querySelectorAll('input[name="csrf_token"]').forEach((i) => { i.value = 'stale'; }); }"""
    )
    press_send(person, "written before lunch")
    assert wait_error(person) == "This page had expired, so your message was not sent. It is still here: press Send again."
    assert person.textarea.input_value() == "written before lunch"
    forget_refused(person, 403, "/messages")
    person.textarea.press("Enter")
    person.wait_for("() => document.querySelectorAll('#messages > article').length === 1", what="the message")
    assert error_text(person) == "" and person.textarea.input_value() == ""
    assert_no_errors(person)


def test_a_rate_limit_is_shown_and_the_text_kept(tmp_path, fake_llm, people):
    server = fake_model_server(tmp_path, fake_llm, POSTS_PER_MINUTE="2")
    try:
        person = people(server).open()
        person.send("one")
        person.send("two")
        press_send(person, "three")
        assert wait_error(person) == "You are sending messages too fast. Wait a few seconds and try again."
        assert person.textarea.input_value() == "three"
        assert len(person.article_ids()) == 2
        forget_refused(person, 429, "/messages")
        assert_no_errors(person)
    finally:
        server.stop()


def test_a_server_error_is_shown_and_the_text_kept(live_server, people):
    person = people(live_server).open()
    execute(live_server.database_url, "ALTER TABLE message RENAME TO message_away")
    try:
        press_send(person, "does this get through?")
        error = wait_error(person)
    finally:
        execute(live_server.database_url, "ALTER TABLE message_away RENAME TO message")
    assert error == "Something went wrong on the server (error 500). If your message does not appear, send it again."
    assert person.textarea.input_value() == "does this get through?"
    forget_refused(person, 500, "/messages")
    person.textarea.press("Enter")
    person.wait_for("() => document.querySelectorAll('#messages > article').length === 1", what="the message")
    assert_no_errors(person)


def test_a_proxy_error_page_is_worded_not_swapped(live_server, people):
    person = people(live_server).open()
    proxy_page = "<html><body><h1 id='proxy'>502 Bad Gateway</h1></body></html>"
    person.page.route("**/messages", lambda route: route.fulfill(status=502, body=proxy_page, content_type="text/html"))
    press_send(person, "behind a proxy")
    assert wait_error(person) == (
        "The server is not answering properly (error 502). Try again in a moment."
        " Your message was not sent; it is still here."
    )
    assert person.textarea.input_value() == "behind a proxy"
    # The name form swaps what it gets: a proxy's page must not land there either.
    person.page.route("**/name", lambda route: route.fulfill(status=504, body=proxy_page, content_type="text/html"))
    person.page.locator("#whoami summary").click()
    person.page.get_by_label("New name").fill("Ada Lovelace")
    person.page.get_by_label("New name").press("Enter")
    assert wait_error(person, "#rename-error") == "The server is not answering properly (error 504). Try again in a moment."
    assert person.page.locator("#proxy").count() == 0
    assert person.page.get_by_label("New name").input_value() == "Ada Lovelace"
    forget_refused(person, 502, "/messages")
    forget_refused(person, 504, "/name")
    assert_no_errors(person)


def test_a_server_that_is_gone_is_said_and_the_text_kept(live_server, people):
    person = people(live_server).open()
    live_server.stop()
    press_send(person, "hello? anyone?")
    assert wait_error(person) == (
        "Could not reach the server. Check your connection and try again. Your message was not sent; it is still here."
    )
    assert person.textarea.input_value() == "hello? anyone?"


# -- without JavaScript ----------------------------------------------------------


def plain_page(browser, server):
    context = browser.new_context(java_script_enabled=False)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(server.url + "/")
    return context, page


def send_plainly(page, text):
    page.fill("#composer textarea[name=body]", text)
    with page.expect_navigation():
        page.click("#composer button[type=submit]")


def test_without_javascript_refusals_are_pages_that_keep_the_draft(live_server, browser):
    context, page = plain_page(browser, live_server)
    try:
        assert page.locator("#composer textarea").get_attribute("maxlength") == "4000"

        # An expired form: the page comes back with the draft and a token that works.
        page.route("**/messages", lambda route: route.continue_(
            post_data=re.sub(rb"csrf_token=[^&]*", b"csrf_token=stale", route.request.post_data_buffer)))
        send_plainly(page, "sent from an old tab")
        assert page.locator("#composer-error").text_content().startswith(
            "This form had expired or did not come from this site, so nothing was sent.")
        assert page.locator("#composer textarea").input_value() == "sent from an old tab"
        page.unroute("**/messages")
        with page.expect_navigation():
            page.click("#composer button[type=submit]")
        assert page.locator("#messages > article .message-body").last.text_content() == "sent from an old tab"

        # A body over the request cap (a crafted one: the field stops at its maxlength).
        page.route("**/messages", lambda route: route.continue_(post_data=route.request.post_data_buffer + b"a" * 100_000))
        send_plainly(page, "too big")
        assert page.locator("#composer-error").text_content().startswith("That message is too large to send (98 KB)")
        page.unroute("**/messages")

        # A server error, and a page that cannot be drawn: the draft comes back in a form that sends it.
        execute(live_server.database_url, "ALTER TABLE message RENAME TO message_away")
        try:
            send_plainly(page, "written while the disk was away")
            assert page.locator("h1").text_content() == "Something went wrong"
            assert page.locator("#error-text").text_content().startswith("Something went wrong on the server (error 500)")
            assert page.get_by_label("Your message").input_value() == "written while the disk was away"
        finally:
            execute(live_server.database_url, "ALTER TABLE message_away RENAME TO message")
        with page.expect_navigation():
            page.get_by_role("button", name="Send again").click()
        assert page.locator("#messages > article .message-body").last.text_content() == "written while the disk was away"
    finally:
        context.close()
