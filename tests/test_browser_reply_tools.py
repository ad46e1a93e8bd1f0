"""What people do with replies, in a real browser on two pages: a Copy
button over every code block of a finished reply and one for the reply's
Markdown, reachable by keyboard, drawn by the page's own script outside the
body the server drew (so the body stays exactly a fresh load's); the room's
exports downloaded from its menu; and math drawn as MathML while it streams."""
import json
import pathlib
import time

from support.browser import assert_consistent
from support.browser import assert_no_errors
from support.browser import render_markdown
from support.browser import words_to_tokens

REPLY = (
    "Two ways to say hello.\n\n"
    "```python\ndef hello(name):\n    return f\"Hello, {name}! <3 & more\"\n```\n\n"
    "Or in the shell:\n\n"
    "```\necho 'hi'   # keeps   its spaces\n```\n\n"
    "That is **all**."
)
CLIPBOARD = {"permissions": ["clipboard-read", "clipboard-write"]}


def clipboard(person):
    return person.page.evaluate("() => navigator.clipboard.readText()")


def ask(server, people, question, reply, delay=0.03):
    server.llm.enqueue(words_to_tokens(reply), delay=delay)
    asker = people(server, **CLIPBOARD).open()
    observer = people(server, **CLIPBOARD).open()
    user_id = asker.send(question)
    reply_id = asker.reply_after(user_id)
    observer.wait_article(reply_id)
    return asker, observer, reply_id


def copy_buttons(person, reply_id):
    return person.page.locator("#{} .copy-tools > button".format(reply_id))


def test_copy_code_blocks_and_the_reply_on_both_pages(live_server, people):
    asker, observer, reply_id = ask(live_server, people, "@gpt say hello in code", REPLY, delay=0.05)
    # While the reply streams there is nothing to copy yet.
    observer.wait_text(reply_id, 10)
    assert observer.status(reply_id) == "streaming"
    assert copy_buttons(observer, reply_id).count() == 0
    for person in (asker, observer):
        person.wait_status(reply_id)
        person.wait_for("(id) => document.querySelectorAll('#' + id + ' .copy-tools > button').length === 3",
                        arg=reply_id, what="the copy buttons")

    python_code = 'def hello(name):\n    return f"Hello, {name}! <3 & more"\n'
    shell_code = "echo 'hi'   # keeps   its spaces\n"
    for person in (asker, observer):
        buttons = copy_buttons(person, reply_id)
        names = [buttons.nth(i).get_attribute("aria-label") for i in range(3)]
        assert names == ["Copy code block 1 (python)", "Copy code block 2", "Copy this reply as Markdown"]
        # Each code button sits over the top right corner of its own block.
        for n in range(2):
            block = person.page.locator("#{} .message-body pre".format(reply_id)).nth(n).bounding_box()
            box = buttons.nth(n).bounding_box()
            assert block["y"] <= box["y"] <= block["y"] + 12, (block, box)
            assert block["x"] + block["width"] - 60 <= box["x"] + box["width"] <= block["x"] + block["width"], (block, box)

    # The observer copies the second block by mouse, the first by keyboard.
    copy_buttons(observer, reply_id).nth(1).click()
    observer.wait_for("(id) => document.querySelectorAll('#' + id + ' .copy-code')[1].textContent === 'Copied'",
                      arg=reply_id, what="Copied")
    assert clipboard(observer) == shell_code
    observer.wait_for("() => document.getElementById('copy-status').textContent === 'Code copied to the clipboard.'",
                      what="the copy said to screen readers")
    copy_buttons(observer, reply_id).nth(0).focus()
    observer.page.keyboard.press("Enter")
    observer.wait_for("(text) => navigator.clipboard.readText().then((t) => t === text)", arg=python_code,
                      what="the first block on the clipboard")
    # The asker copies the whole reply: its Markdown source, not the drawn text.
    copy_buttons(asker, reply_id).nth(2).focus()
    asker.page.keyboard.press("Space")
    asker.wait_for("(text) => navigator.clipboard.readText().then((t) => t === text)", arg=REPLY,
                   what="the reply's Markdown on the clipboard")

    # Tab reaches them in order, after the reply's text.
    observer.page.locator("#{} .copy-code".format(reply_id)).first.focus()
    observer.page.keyboard.press("Tab")
    assert observer.page.evaluate("() => document.activeElement.getAttribute('aria-label')") == "Copy code block 2"

    # The body is still exactly what a fresh load draws; the buttons are outside it.
    time.sleep(0.3)
    fresh = people(live_server).open()
    expected = str(render_markdown(REPLY))
    for person in (asker, observer, fresh):
        assert person.body_html(reply_id) == expected
        assert person.page.locator("#{} .message-body button".format(reply_id)).count() == 0
    assert copy_buttons(fresh, reply_id).count() == 3
    assert_consistent(asker, observer, fresh)
    assert_no_errors(asker, observer, fresh)


def test_a_reply_without_code_has_one_copy_button_and_it_follows_a_regenerate(live_server, people):
    asker, observer, reply_id = ask(live_server, people, "@gpt one line", "Just *one* line.")
    for person in (asker, observer):
        person.wait_status(reply_id)
        person.wait_for("(id) => document.querySelectorAll('#' + id + ' .copy-tools > button').length === 1",
                        arg=reply_id, what="one copy button")
    live_server.llm.enqueue(words_to_tokens("A new line, with `code`:\n\n```\nx = 1\n```"), delay=0.05)
    asker.page.locator("#{} .message-control[data-action=regenerate]".format(reply_id)).click()
    # Streaming again: no buttons; finished: the new reply's.
    observer.wait_status(reply_id, "streaming")
    observer.wait_for("(id) => !document.querySelector('#' + id + ' .copy-tools')", arg=reply_id, what="no buttons")
    for person in (asker, observer):
        person.wait_status(reply_id)
        person.wait_for("(id) => document.querySelectorAll('#' + id + ' .copy-tools > button').length === 2",
                        arg=reply_id, what="the new reply's buttons")
    copy_buttons(observer, reply_id).nth(1).click()
    observer.wait_for("(text) => navigator.clipboard.readText().then((t) => t === text)",
                      arg="A new line, with `code`:\n\n```\nx = 1\n```", what="the new reply's Markdown")
    assert_no_errors(asker, observer)


def test_the_room_menu_downloads_its_exports(live_server, people):
    asker, observer, reply_id = ask(live_server, people, "@gpt what is *this*?", "It is a **test**.")
    asker.wait_status(reply_id)
    observer.wait_status(reply_id)
    page = observer.page
    page.locator(".room-menu > summary").click()
    with page.expect_download() as download:
        page.get_by_role("link", name="Markdown").click()
    assert download.value.suggested_filename == "lobby.md"
    text = pathlib.Path(download.value.path()).read_text(encoding="utf-8")
    assert "> @gpt what is *this*?" in text
    assert "### gpt (fake-model) · " in text and "It is a **test**." in text
    with page.expect_download() as download:
        page.get_by_role("link", name="JSON").click()
    data = json.loads(pathlib.Path(download.value.path()).read_text(encoding="utf-8"))
    assert [m["body"] for m in data["messages"]] == ["@gpt what is *this*?", "It is a **test**."]
    assert data["messages"][1]["id"] == int(reply_id.split("-")[1])
    assert_no_errors(asker, observer)


MATH_REPLY = (
    "Euler's identity is $e^{i\\pi} + 1 = 0$, the neatest of all. It links five constants.\n\n"
    "The sum of the first n numbers:\n$$\n\\sum_{i=1}^{n} i = \\frac{n(n+1)}{2}\n$$\n"
    "A copy costs $5 and two cost $10."
)


def test_math_is_drawn_as_mathml_on_both_pages_while_it_streams(live_server, people):
    asker, observer, reply_id = ask(live_server, people, "@gpt some math please", MATH_REPLY, delay=0.05)
    for person in (asker, observer):
        person.wait_status(reply_id)
    expected = str(render_markdown(MATH_REPLY))
    assert expected.count("<math ") == 2
    for person in (asker, observer):
        # The first formula was drawn while the rest was still on its way.
        streaming = [s["html"] for s in person.states(reply_id) if s["status"] == "streaming"]
        assert any("<math " in h for h in streaming), streaming[-1:]
        assert person.body_html(reply_id) == expected
        shown = person.page.evaluate(
            """(id) => Array.from(document.querySelectorAll('#' + id + ' .message-body math')).map((m) => {
                 const box = m.getBoundingClientRect();
                 return [m.namespaceURI, m.getAttribute('display'), box.width > 10 && box.height > 5];
               })""",
            reply_id,
        )
        assert shown == [
            ["http://www.w3.org/1998/Math/MathML", "inline", True],
            ["http://www.w3.org/1998/Math/MathML", "block", True],
        ]
        assert "$5 and two cost $10" in person.body_text(reply_id)
    # The reply's Copy gives the LaTeX back as it was written.
    copy_buttons(observer, reply_id).last.click()
    observer.wait_for("(text) => navigator.clipboard.readText().then((t) => t === text)", arg=MATH_REPLY,
                      what="the reply's Markdown with its LaTeX")
    assert_consistent(asker, observer)
    assert_no_errors(asker, observer)
