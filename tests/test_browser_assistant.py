"""A room's own assistant in a real browser, on two pages: one person sets
its instructions and model from the room's menu, the other page shows them
at once without a reload, and a question there goes to that model with those
instructions (the real SDK against the fake server, which lists its models)."""
from support.browser import assert_no_errors
from support.browser import words_to_tokens


def test_setting_a_rooms_assistant_reaches_every_page_and_its_questions(live_server, people):
    ada = people(live_server).open("/r/pirates")
    bob = people(live_server).open("/r/pirates")
    assert bob.page.locator("#room-model").text_content() == "fake-model"
    page = ada.page
    page.locator(".room-menu > summary").click()
    options = page.locator("#assistant-model option").all_text_contents()
    assert options == ["fake-model (the server's default)", "fake-model-large"]
    page.get_by_label("Instructions for gpt in #pirates").fill("Talk like a pirate.")
    page.get_by_label("Model").select_option("fake-model-large")
    page.locator("#assistant-form button[type=submit]").press("Enter")
    ada.wait_for("() => document.getElementById('assistant-status').textContent.startsWith('Saved')", what="saved")
    assert page.locator("#assistant-form").is_visible(), "the menu stays open on the new form"

    # Bob's page shows the new assistant without a reload.
    bob.wait_for("() => document.getElementById('room-model').textContent === 'fake-model-large'", what="the model")
    assert bob.page.locator("#room-instructions").text_content() == "Talk like a pirate."

    # Bob asks: the fake server gets the room's model and instructions.
    live_server.llm.enqueue(words_to_tokens("Arr, ahoy there."), delay=0.01)
    question = bob.send("@gpt hello?")
    reply = bob.reply_after(question)
    bob.wait_status(reply)
    request = live_server.llm.requests[-1]
    assert request["model"] == "fake-model-large"
    assert request["messages"][0]["content"].endswith("Talk like a pirate.")
    for person in (ada, bob):
        person.wait_status(reply)
        assert person.page.locator("#{} .message-model".format(reply)).first.text_content() == "fake-model-large"

    # Another room is not touched.
    lobby = people(live_server).open("/")
    assert lobby.page.locator("#room-model").text_content() == "fake-model"
    assert_no_errors(ada, bob, lobby)


def test_a_refused_setting_says_why_in_the_menu(live_server, people):
    ada = people(live_server).open("/r/quiz")
    page = ada.page
    page.locator(".room-menu > summary").click()
    page.get_by_label("Instructions for gpt in #quiz").fill("x" * 2000)
    page.evaluate("() => document.getElementById('assistant-instructions').removeAttribute('maxlength')")
    page.get_by_label("Instructions for gpt in #quiz").fill("x" * 2100)
    page.locator("#assistant-form button[type=submit]").click()
    ada.wait_for("() => document.getElementById('assistant-status').textContent.includes('the limit is 2,000')",
                 what="the refusal")
    ada.errors = [e for e in ada.errors if "413" not in e]  # the refusal's own status, logged by the browser
    assert page.get_by_label("Instructions for gpt in #quiz").input_value() == "x" * 2100, "the text is kept"
    assert page.locator("#room-model").text_content() == "fake-model"
    assert_no_errors(ada)
