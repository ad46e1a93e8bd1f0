"""Rooms in a real browser: each room's page hears only its own room, the room
menu lists active rooms and joins or creates one by name, and a long room
loads older messages as the reader scrolls up to them."""
import sqlite3
import urllib.request
from datetime import datetime
from datetime import timedelta

from support.browser import assert_consistent
from support.browser import assert_no_errors
from support.browser import words_to_tokens


def insert_messages(database_url, room, n):
    """``n`` old messages in ``room``, written straight into the server's database."""
    start = datetime(2026, 1, 1, 9, 0)
    rows = [
        (room, "Old Timer", "user", "complete", "history line {}".format(i), start + timedelta(minutes=i))
        for i in range(n)
    ]
    sql = "INSERT INTO message (room, author, role, status, body, created_at, stop_requested) VALUES (?, ?, ?, ?, ?, ?, ?)"
    rows = [r + (False,) for r in rows]
    if database_url.startswith("sqlite:///"):
        con = sqlite3.connect(database_url[len("sqlite:///"):])
        with con:
            con.executemany(sql, rows)
            con.execute("INSERT INTO room (name, created_at, active_at, messages) VALUES (?, ?, ?, ?)", (room, start, start, n))
        con.close()
        return
    import psycopg

    with psycopg.connect(database_url) as con:
        with con.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), rows)
            cur.execute(
                "INSERT INTO room (name, created_at, active_at, messages) VALUES (%s, %s, %s, %s)", (room, start, start, n)
            )


def test_each_room_page_hears_only_its_room(live_server, people):
    live_server.llm.enqueue(words_to_tokens("Herons wade. They fish in alpha."), delay=0.03)
    ann = people(live_server).open("/r/alpha")
    cy = people(live_server).open("/r/alpha")
    bo = people(live_server).open("/r/beta")
    assert ann.page.locator("h1").text_content() == "#alpha"

    bo_said = bo.send("a quiet word in beta")
    user_id = ann.send("@gpt tell alpha about herons")
    reply_id = ann.reply_after(user_id)
    ann.wait_status(reply_id)
    cy.wait_status(reply_id)
    assert cy.body_text(reply_id) == ann.body_text(reply_id) == "Herons wade. They fish in alpha."
    assert_consistent(ann, cy)
    assert bo.article_ids() == [bo_said]
    assert bo_said not in ann.article_ids()
    assert "herons" in live_server.llm.requests[-1]["messages"][-1]["content"]
    assert not any("quiet word" in m["content"] for m in live_server.llm.requests[-1]["messages"])
    assert_no_errors(ann, bo, cy)


def test_the_room_menu_lists_rooms_and_joins_by_name(live_server, people):
    ann = people(live_server).open("/r/alpha")
    ann.send("anyone in alpha?")
    bo = people(live_server).open("/")
    page = bo.page

    page.get_by_text("Rooms", exact=True).click()
    menu = page.locator(".rooms-menu nav")
    assert menu.is_visible()
    menu.get_by_role("link", name="#alpha").click()
    page.wait_for_url(live_server.url + "/r/alpha")
    bo.wait_live()
    assert "anyone in alpha?" in page.locator("#messages").text_content()

    # Join (create) a room by name, typed loosely; the keyboard is enough.
    page.locator(".rooms-menu > summary").focus()
    page.keyboard.press("Enter")
    page.get_by_label("Join or create a room").fill("  Book Club")
    page.keyboard.press("Enter")
    page.wait_for_url(live_server.url + "/r/book-club")
    bo.wait_live()
    assert page.locator("h1").text_content() == "#book-club"
    assert page.locator("#empty-room").is_visible()

    # A name that cannot be a room: the rules, and what was typed kept.
    page.locator(".rooms-menu > summary").click()
    page.get_by_label("Join or create a room").fill("no/way")
    page.keyboard.press("Enter")
    page.wait_for_url("**/rooms?name=no%2Fway")
    assert "cannot be a room name" in page.locator("#room-error").text_content()
    assert page.get_by_label("Join or create a room").input_value() == "no/way"
    # The refusal is a 400 page, which Chromium logs; nothing else went wrong.
    assert len(bo.errors) == 1 and "status of 400" in bo.errors[0] and "/rooms?name=" in bo.errors[0]
    assert_no_errors(ann)


def test_older_messages_load_when_scrolled_to_without_moving_the_reader(live_server, people):
    urllib.request.urlopen(live_server.url + "/rooms", timeout=10).close()  # the worker has made the tables
    insert_messages(live_server.database_url, "long", 120)
    reader = people(live_server).open("/r/long")
    page = reader.page
    reader.wait_for("() => window.scrollY > 0", what="the page to open at the newest message")
    page.wait_for_timeout(500)
    assert len(reader.article_ids()) == 50  # the newest page only: nothing older loaded unasked

    for loaded in (100, 120):
        first = page.evaluate("document.querySelector('#messages > article').id")
        page.evaluate("window.scrollTo(0, 0)")
        reader.wait_for(
            "(n) => document.querySelectorAll('#messages > article').length === n", arg=loaded, what="older messages"
        )
        # The message that was at the top is still where the reader left it.
        top = page.evaluate("(id) => document.getElementById(id).getBoundingClientRect().top", first)
        assert 0 <= top < 200, top
    texts = page.evaluate("Array.from(document.querySelectorAll('#messages .message-body')).map((b) => b.textContent)")
    assert texts == ["history line {}".format(i) for i in range(120)]
    assert page.locator("#older").count() == 0
    assert page.locator(".older").text_content() == "This is the start of #long."
    assert_consistent(reader)
    assert_no_errors(reader)


def test_older_messages_that_fail_to_load_keep_the_link_to_try_again(live_server, people):
    urllib.request.urlopen(live_server.url + "/rooms", timeout=10).close()
    insert_messages(live_server.database_url, "long", 60)
    reader = people(live_server).open("/r/long")
    page = reader.page
    page.route("**/r/long/older*", lambda route: route.fulfill(status=500, body="<h1>boom</h1>"))
    page.evaluate("window.scrollTo(0, 0)")
    reader.wait_for(
        "() => document.getElementById('older').textContent.includes('could not be loaded')", what="the failure"
    )
    assert "boom" not in page.content()
    assert len(reader.article_ids()) == 50
    page.unroute("**/r/long/older*")
    page.locator("#older").click()
    reader.wait_for("() => document.querySelectorAll('#messages > article').length === 60", what="the retry")
    assert page.locator(".older").text_content() == "This is the start of #long."
    # Chromium logs the refused load; nothing else went wrong.
    assert all("status of 500" in e for e in reader.errors), reader.errors
    reader.errors = []
    assert_no_errors(reader)
