"""Who is in the room, in a real browser: the count in the top bar and the
names (in their colours) under it on every page, a person with two tabs
counted once, a closed tab gone within seconds and a reload never seen as
leaving, a new name shown to everyone, and "gpt is writing…" on every page
while a reply streams. With TEST_DATABASE=postgres, the same across two
processes, and the people of a process that died leave within its heartbeat."""
import os
import signal
import time

import pytest

from conftest import BACKEND
from conftest import LiveServer
from support.browser import assert_no_errors
from support.browser import words_to_tokens
from support.live import llm_env

# A closed tab is kept for presence.GRACE (3 s) first; then one write.
GONE_WITHIN = 8

# Every state of the top bar's count a page showed, recorded as it changes.
COUNTS = """
(() => {
  const seen = window.__counts = [];
  function look() {
    const el = document.getElementById('presence-count');
    const text = el ? el.textContent : null;
    if (seen[seen.length - 1] !== text) seen.push(text);
  }
  function start() { look(); new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true}); }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start); else start();
})();
"""


def count(person):
    return person.page.locator("#presence-count").text_content()


def listed(person):
    """[(name, hue class, "(you)" drawn after it)] in the room's list, in order."""
    return person.page.evaluate(
        """() => Array.from(document.querySelectorAll('#presence-list .presence-name')).map((n) => [
             n.textContent, Array.from(n.classList).find((c) => c.startsWith('hue-')) || null,
             getComputedStyle(n, '::after').content])"""
    )


def wait_count(person, text, timeout_ms=GONE_WITHIN * 1000):
    try:
        person.page.wait_for_function(
            "(text) => { const el = document.getElementById('presence-count'); return el && el.textContent === text; }",
            arg=text, timeout=timeout_ms,
        )
    except Exception:
        raise AssertionError("count never became {!r}: {!r}; {}".format(text, count(person), person.diagnose())) from None


def name_of(person):
    return person.page.locator("#whoami .me").text_content()


def test_the_room_shows_who_is_here_and_who_left(live_server, people):
    ada = people(live_server).open()
    assert count(ada) == "1 here"
    bob = people(live_server).open()
    assert count(bob) == "2 here"  # drawn with the page
    wait_count(ada, "2 here")
    for person in (ada, bob):
        names = listed(person)
        assert sorted(n for n, _, _ in names) == sorted([name_of(ada), name_of(bob)])
        assert all(hue and hue.startswith("hue-") for _, hue, _ in names)
        # The page's own person is marked, nobody else.
        assert [n for n, _, you in names if you == '" (you)"'] == [name_of(person)]
    # Bob's hue in the list is the one his messages are drawn in.
    bob_id = bob.send("hello, I am here")
    ada.wait_article(bob_id)
    message_hue = ada.page.evaluate(
        "(id) => Array.from(document.querySelector('#' + id + ' .message-author').classList).find((c) => c.startsWith('hue-'))",
        bob_id,
    )
    assert dict((n, h) for n, h, _ in listed(ada))[name_of(bob)] == message_hue

    # The list opens from the top bar, by keyboard too.
    summary = ada.page.locator(".presence-menu > summary")
    summary.focus()
    summary.press("Enter")
    assert ada.page.locator("#presence-list").is_visible()

    started = time.monotonic()
    bob.close()
    wait_count(ada, "1 here")
    assert time.monotonic() - started < GONE_WITHIN
    assert [n for n, _, _ in listed(ada)] == [name_of(ada)]
    assert ada.page.locator("#presence-list").is_visible(), "the open list stays open through updates"
    assert_no_errors(ada)


def test_two_tabs_are_one_person_and_a_reload_is_not_leaving(live_server, people):
    ada = people(live_server)
    ada.context.add_init_script(COUNTS)
    ada.open()
    second = ada.context.new_page()  # the same person (same cookies), a second tab
    second.goto(live_server.url + "/")
    second.wait_for_function("() => document.body.dataset.live === 'true'")
    bob = people(live_server)
    bob.context.add_init_script(COUNTS)
    bob.open()
    wait_count(ada, "2 here")
    time.sleep(1.0)  # every write is done
    assert count(bob) == "2 here"
    assert second.locator("#presence-count").text_content() == "2 here"

    # Ada's second tab closes: she still has one open.
    second.close()
    time.sleep(4.5)
    assert count(bob) == "2 here"
    # Bob reloads three times: Ada never sees him leave.
    for _ in range(3):
        bob.reload()
        bob.wait_live()
    time.sleep(4.5)
    counts = ada.page.evaluate("window.__counts")
    assert "1 here" not in counts[counts.index("2 here"):], counts
    assert count(ada) == "2 here"
    assert_no_errors(ada, bob)


def test_a_new_name_reaches_everyone_in_the_room(live_server, people):
    ada = people(live_server).open()
    bob = people(live_server).open()
    wait_count(ada, "2 here")
    summary = bob.page.locator("#whoami summary")
    summary.click()
    bob.page.get_by_label("New name").fill("Bobby Tables")
    bob.page.get_by_label("New name").press("Enter")
    ada.wait_for("() => Array.from(document.querySelectorAll('#presence-list .presence-name')).some((n) => n.textContent === 'Bobby Tables')",
                 what="the new name in the list")
    assert sorted(n for n, _, _ in listed(ada)) == sorted([name_of(ada), "Bobby Tables"])
    assert count(ada) == "2 here"
    assert_no_errors(ada, bob)


def test_gpt_is_writing_on_every_page_while_a_reply_streams(live_server, people):
    live_server.llm.enqueue(words_to_tokens("One moment. I am thinking it over, slowly. There."), delay=0.15)
    ada = people(live_server).open()
    bob = people(live_server).open()
    for person in (ada, bob):
        assert not person.page.locator(".typing").is_visible()
    user_id = ada.send("@gpt take your time")
    reply_id = ada.reply_after(user_id)
    bob.wait_article(reply_id)
    for person in (ada, bob):
        person.wait_for("() => { const t = document.querySelector('.typing'); return t && t.checkVisibility(); }",
                        what="gpt is writing")
        assert person.page.locator(".typing").text_content() == "gpt is writing…"
    for person in (ada, bob):
        person.wait_status(reply_id)
        assert not person.page.locator(".typing").is_visible()
    assert_no_errors(ada, bob)


# -- across processes (PostgreSQL) ----------------------------------------------

postgres_only = pytest.mark.skipif(
    BACKEND != "postgres", reason="PostgreSQL only: runs in scripts/test.sh's TEST_DATABASE=postgres pass"
)


@postgres_only
def test_people_on_two_processes_see_each_other_and_a_dead_process_leaves(tmp_path, fake_llm, people):
    env = llm_env(fake_llm, HEARTBEAT_INTERVAL="2", WATCHDOG_INTERVAL="1")
    a = LiveServer(tmp_path, env, backend="postgres").start()
    b = LiveServer(tmp_path, env, backend="postgres").start()
    try:
        ada = people(a).open()
        bob = people(b).open()
        wait_count(ada, "2 here")
        wait_count(bob, "2 here")
        cy = people(b).open()
        wait_count(ada, "3 here")
        cy.close()  # a page on the other process closes
        wait_count(ada, "2 here")
        # The process Bob is on dies without a word: Ada sees him go once
        # its heartbeat is missed.
        started = time.monotonic()
        os.killpg(b.proc.pid, signal.SIGKILL)
        wait_count(ada, "1 here", timeout_ms=15_000)
        took = time.monotonic() - started
        print("a dead process's people left after {:.1f} s (heartbeat 2 s)".format(took))
        assert took < 10
        assert [n for n, _, _ in listed(ada)] == [name_of(ada)]
        assert_no_errors(ada)
    finally:
        for server in (a, b):
            try:
                server.stop()
            except Exception:  # noqa: BLE001 - b was killed
                pass
