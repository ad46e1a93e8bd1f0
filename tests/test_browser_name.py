"""Changing one's name in a real browser: the top bar's form by keyboard, the
name on new and old messages on both people's pages, "(you)" by session, the
colour each name gets, a refused name, and the same without JavaScript."""
from chat.render.rendering import name_hue
from support.browser import TIMEOUT_MS
from support.browser import assert_consistent
from support.browser import assert_no_errors

ADA = "Ada Lovelace"
BOB = "Bob Marley"


def hue_class(name):
    return "hue-{}".format(name_hue(name) % 12)


def shown_name(person):
    return person.page.locator("#whoami .me").text_content()


def rename_by_keyboard(person, name):
    """Open the form from the keyboard, type the name and press Enter."""
    summary = person.page.locator("#whoami summary")
    summary.focus()
    summary.press("Enter")
    field = person.page.get_by_label("New name")
    field.wait_for(state="visible")
    field.fill(name)
    field.press("Enter")


def authors(person):
    """Per article: (id, author text, hue class, the "(you)" marker drawn after the name)."""
    return person.page.evaluate(
        """() => Array.from(document.querySelectorAll('#messages > article.message')).map((a) => {
             const el = a.querySelector('.message-author');
             const hue = Array.from(el.classList).find((c) => c.startsWith('hue-'));
             const after = getComputedStyle(el, '::after').content;
             return [a.id, el.textContent, hue, after === 'none' || after === 'normal' ? '' : after];
           })"""
    )


def test_a_new_name_shows_in_the_top_bar_and_on_new_messages_only(live_server, people):
    assert hue_class(ADA) != hue_class(BOB), "the test's two names must differ in colour"
    ada = people(live_server).open()
    bob = people(live_server).open()
    old = shown_name(ada)

    rename_by_keyboard(bob, BOB)
    bob.wait_for("(n) => document.querySelector('#whoami .me').textContent === n", arg=BOB, what="Bob's name")
    first = ada.send("Hello before my new name")
    bob_says = bob.send("Hi, I am Bob")

    rename_by_keyboard(ada, ADA)
    ada.wait_for("(n) => document.querySelector('#whoami .me').textContent === n", arg=ADA, what="Ada's name")
    # The form closed and the focus went back to the control that opens it.
    assert ada.page.locator("#whoami details").get_attribute("open") is None
    assert ada.page.evaluate("document.activeElement.matches('#whoami summary')")
    second = ada.send("Hello after it")
    bob.wait_article(second)

    expected = {
        first: (old, hue_class(old)),
        bob_says: (BOB, hue_class(BOB)),
        second: (ADA, hue_class(ADA)),
    }
    mine = {ada: {first, second}, bob: {bob_says}}
    seen = {}
    for reloaded in (False, True):
        if reloaded:
            for person in (ada, bob):
                person.reload()
                person.wait_live()
            assert shown_name(ada) == ADA and shown_name(bob) == BOB
        for person in (ada, bob):
            rows = authors(person)
            assert [r[0] for r in rows] == [first, bob_says, second]
            for article_id, author, hue, you in rows:
                assert (author, hue) == expected[article_id], (reloaded, article_id, author, hue)
                # "(you)" marks this page's own messages only, whatever name they carry.
                assert you == ('" (you)"' if article_id in mine[person] else ""), (article_id, you)
                seen.setdefault(article_id, set()).add(hue)
    # One colour per name on both pages and across reloads; different names, different colours.
    assert all(len(hues) == 1 for hues in seen.values()), seen
    assert seen[bob_says] != seen[second]
    assert_consistent(ada, bob)
    assert_no_errors(ada, bob)


def test_a_refused_name_shows_why_and_keeps_what_was_typed(live_server, people):
    ada = people(live_server).open()
    old = shown_name(ada)
    ada.page.locator("#whoami summary").click()
    field = ada.page.get_by_label("New name")
    field.fill("Ada: the admin")
    ada.page.locator("#whoami button[type=submit]").click()
    error = ada.page.locator("#rename-error")
    error.wait_for(state="visible")
    assert error.text_content() == "A name can only have letters, digits, spaces and . ' - _ (not “:”)."
    field = ada.page.get_by_label("New name")
    assert field.input_value() == "Ada: the admin"
    assert field.get_attribute("aria-invalid") == "true"
    assert ada.page.evaluate("document.activeElement.id") == "rename-name", "the field takes the focus back"
    assert shown_name(ada) == old
    assert ada.page.title() == "#lobby · Streaming chat"

    # Fixing it from there works, and the error goes away.
    field.fill("gpt")
    field.press("Enter")
    ada.wait_for(
        "() => document.querySelector('#rename-error').textContent.includes('assistant')", what="the gpt refusal"
    )
    assert ada.page.get_by_label("New name").input_value() == "gpt"
    ada.page.get_by_label("New name").fill(ADA)
    ada.page.get_by_label("New name").press("Enter")
    ada.wait_for("(n) => document.querySelector('#whoami .me').textContent === n", arg=ADA, what="the new name")
    assert ada.page.locator("#rename-error").is_hidden()
    assert ada.send("it worked") and authors(ada)[-1][1] == ADA
    # The browser logs each refused request; those two and nothing else.
    refused = [e for e in ada.errors if "status of 400" in e and e.endswith("/name")]
    assert len(refused) == 2, ada.errors
    ada.errors = [e for e in ada.errors if e not in refused]
    assert_no_errors(ada)


def test_an_expired_form_says_so_inside_the_form(live_server, people):
    ada = people(live_server).open()
    old = shown_name(ada)
    ada.page.evaluate("document.querySelector('meta[name=csrf-token]').content = 'stale'")
    ada.page.locator("#whoami summary").click()
    field = ada.page.get_by_label("New name")
    field.fill(ADA)
    field.press("Enter")
    ada.wait_for("() => document.querySelector('#rename-error').textContent.length > 0", what="the refusal")
    assert ada.page.locator("#rename-error").text_content() == (
        "This form had expired, so your name was not changed. Press Save again."
    )
    assert ada.page.get_by_label("New name").input_value() == ADA
    assert shown_name(ada) == old
    assert ada.page.title() == "#lobby · Streaming chat"
    refused = [e for e in ada.errors if "status of 403" in e and e.endswith("/name")]
    assert len(refused) == 1, ada.errors  # the browser logs the refused request
    ada.errors = [e for e in ada.errors if e not in refused]
    # The refusal brought a fresh token: pressing Save again works.
    ada.page.get_by_label("New name").press("Enter")
    ada.wait_for("(n) => document.querySelector('#whoami .me').textContent === n", arg=ADA, what="the new name")
    assert_no_errors(ada)


def test_without_javascript_the_form_posts_and_comes_back(live_server, browser):
    context = browser.new_context(java_script_enabled=False)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(live_server.url + "/")
        old = page.locator("#whoami .me").text_content()
        page.locator("#whoami summary").click()
        page.get_by_label("New name").fill("Ada: <b>")
        with page.expect_navigation():
            page.locator("#whoami button[type=submit]").click()
        assert page.url == live_server.url + "/"
        assert page.locator("#rename-error").text_content() == (
            "A name can only have letters, digits, spaces and . ' - _ (not “:”)."
        )
        assert page.get_by_label("New name").input_value() == "Ada: <b>"
        assert page.locator("#whoami details").get_attribute("open") is not None
        assert page.locator("#whoami .me").text_content() == old

        page.get_by_label("New name").fill(ADA)
        with page.expect_navigation():
            page.get_by_label("New name").press("Enter")
        assert page.locator("#whoami .me").text_content() == ADA
        assert page.locator("#rename-error").text_content() == ""
        page.locator("#composer textarea").fill("posted without scripts")
        with page.expect_navigation():
            page.locator("#composer button[type=submit]").click()
        assert page.locator("#messages article .message-author").last.text_content() == ADA
    finally:
        context.close()
