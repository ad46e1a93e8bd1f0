"""Edit and resend in a real browser, on two pages: the Edit button on the
asker's last message only, the composer editing it (Up in an empty composer
too, Escape giving the draft back), the question changed in place and marked
"edited" on both pages, its answer streamed again token by token to the asker
and sentence by sentence to the other page; and without JavaScript, a link to
a form that does the same."""
from support.browser import assert_consistent
from support.browser import assert_no_errors
from support.browser import expected_text
from support.browser import streaming_texts
from support.browser import words_to_tokens

FIRST = "Paris is the capital of France. It is on the Seine."
SECOND = (
    "Rome is the capital of Italy. It was founded, the story goes, in 753 BC."
    " It is on the Tiber. Many call it the eternal city."
)


def edit_buttons(person):
    return person.page.locator("#messages .edit-control")


def test_the_asker_edits_the_question_and_both_pages_get_the_new_answer(live_server, people):
    live_server.llm.enqueue(words_to_tokens(FIRST), delay=0.01)
    asker = people(live_server).open()
    observer = people(live_server).open()
    question = asker.send("@gpt what is the capital of France?")
    reply = asker.reply_after(question)
    asker.wait_status(reply)
    observer.wait_status(reply)
    # Only the asker's page offers the edit, on that message.
    asker.wait_for("() => document.querySelectorAll('#messages .edit-control').length === 1", what="the Edit button")
    assert edit_buttons(asker).first.evaluate("(b) => b.closest('article').id") == question
    assert edit_buttons(observer).count() == 0

    # A draft typed meanwhile is put aside, and given back after the save.
    asker.textarea.fill("a draft for later")
    edit_buttons(asker).first.click()
    assert asker.textarea.input_value() == "@gpt what is the capital of France?"
    assert asker.page.locator("#edit-banner").is_visible()
    assert asker.page.locator("#composer button[type=submit]").text_content() == "Save"
    live_server.llm.enqueue(words_to_tokens(SECOND), delay=0.05)
    asker.textarea.fill("@gpt and of Italy?")
    asker.textarea.press("Enter")

    for person in (asker, observer):
        person.wait_for(
            "([id, text]) => document.querySelector('#' + id + ' .message-body').textContent === text",
            arg=[question, "@gpt and of Italy?"], what="the edited question",
        )
        assert person.page.locator("#{} .message-edited".format(question)).text_content() == "edited"
    for person in (asker, observer):
        person.wait_for("(id) => (window.__replyStates[id] || []).some((s) => s.text.startsWith('Rome'))",
                        arg=reply, what="the new answer")
        person.wait_status(reply)
        assert person.body_text(reply) == expected_text(person, SECOND)
        assert "Paris" not in person.page.locator("#messages").text_content()
    # The asker read the new answer token by token, over the edit's own
    # response; the observer sentence by sentence.
    asker_steps = len(streaming_texts(asker.states(reply)))
    observer_steps = len(streaming_texts(observer.states(reply)))
    assert asker_steps > observer_steps >= 2, (asker_steps, observer_steps)
    assert asker.textarea.input_value() == "a draft for later"
    assert not asker.page.locator("#edit-banner").count()
    assert asker.page.locator("#messages > article").count() == 2
    assert_consistent(asker, observer)
    assert_no_errors(asker, observer)


def test_up_edits_escape_cancels_and_the_button_goes_when_the_room_moves_on(live_server, people):
    ada = people(live_server).open()
    bob = people(live_server).open()
    first = ada.send("helo everyone")
    ada.wait_for("() => document.querySelectorAll('#messages .edit-control').length === 1", what="the Edit button")
    # Up in the empty composer edits the last message; Escape gives the composer back.
    ada.textarea.focus()
    ada.textarea.press("ArrowUp")
    assert ada.textarea.input_value() == "helo everyone"
    ada.textarea.press("Escape")
    assert ada.textarea.input_value() == ""
    assert not ada.page.locator("#edit-banner").count()
    # Fixed: the typo is gone on both pages, nothing is asked of the model.
    ada.textarea.press("ArrowUp")
    ada.textarea.fill("hello everyone")
    ada.textarea.press("Enter")
    bob.wait_for("(id) => document.querySelector('#' + id + ' .message-body').textContent === 'hello everyone'",
                 arg=first, what="the fixed message")
    assert bob.page.locator("#{} .message-edited".format(first)).count() == 1
    assert bob.page.locator("#messages > article[data-role=assistant]").count() == 0
    # Bob writes: Ada's message is no longer the last, and cannot be edited.
    bob.send("hi Ada")
    ada.wait_for("() => document.querySelectorAll('#messages .edit-control').length === 0", what="no Edit button")
    ada.textarea.focus()
    ada.textarea.press("ArrowUp")
    assert ada.textarea.input_value() == ""
    assert_no_errors(ada, bob)


def test_an_edit_refused_by_the_server_keeps_the_text_and_says_why(live_server, people):
    live_server.llm.enqueue(words_to_tokens(FIRST), delay=0.01)
    ada = people(live_server).open()
    question = ada.send("@gpt capital of France?")
    ada.wait_status(ada.reply_after(question))
    ada.wait_for("() => document.querySelectorAll('#messages .edit-control').length === 1", what="the Edit button")
    edit_buttons(ada).first.click()
    ada.textarea.fill("capital of France, without asking")
    ada.textarea.press("Enter")
    ada.wait_for("() => document.getElementById('composer-error').textContent.includes('Keep @gpt')", what="the refusal")
    ada.errors = [e for e in ada.errors if "400" not in e]  # the refusal's own status, logged by the browser
    assert ada.textarea.input_value() == "capital of France, without asking"
    assert ada.page.locator("#edit-banner").is_visible(), "still editing"
    assert ada.body_text(question) == "@gpt capital of France?"
    assert_no_errors(ada)


def test_editing_without_javascript(live_server, browser):
    live_server.llm.enqueue(words_to_tokens(FIRST), delay=0.01)
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(live_server.url + "/")
        page.fill("#composer textarea[name=body]", "@gpt capital of France?")
        page.click("#composer button[type=submit]")
        page.locator("#messages > article[data-role=assistant]").last.wait_for()
        for _ in range(100):
            if page.locator("#messages > article[data-role=assistant][data-status=complete]").count():
                break
            page.wait_for_timeout(100)
            page.reload()
        link = page.locator("#messages a[data-action=edit]")
        assert link.count() == 1 and link.is_visible()
        link.click()
        assert page.locator("h1").text_content() == "Edit your message"
        assert page.locator("textarea[name=body]").input_value() == "@gpt capital of France?"
        live_server.llm.enqueue(words_to_tokens(SECOND), delay=0.01)
        page.fill("textarea[name=body]", "@gpt capital of Italy?")
        page.click("button[type=submit]")
        assert "/#message-" in page.url
        for _ in range(100):
            if "Rome" in page.text_content("#messages") and page.locator("article[data-status=complete]").count() == 1:
                break
            page.wait_for_timeout(100)
            page.reload()
        text = page.text_content("#messages")
        assert "capital of Italy?" in text and "Rome is the capital" in text and "Paris" not in text
        assert page.locator("#messages .message-edited").count() == 1
    finally:
        context.close()
