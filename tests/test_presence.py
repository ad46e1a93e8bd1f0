"""Who is in a room, at the level of sockets and rows: a list sent when it
changes and only then (an idle room costs its sockets nothing), arrivals
sent together, a person counted once whatever their tabs, rows that go with
their pages, with a process that stops, and with one that died."""
import re
import time

from chat.fanout.hub import Event
from models import Presence
from models import Worker
from models import db
from support.live import Browser
from support.live import query
from support.live import wait_until

COUNT = re.compile(r'<span id="presence-count"[^>]*>([\d,]+) here</span>')


def counts(sock):
    return [int(COUNT.match(f).group(1).replace(",", "")) for f in sock.presence]


def rows(server, room="lobby"):
    return query(server.database_url, "SELECT session_key, name, pages FROM presence WHERE room = ?", (room,))


def test_lists_are_sent_when_people_come_and_go_and_never_while_idle(live_server, ws_open):
    first = ws_open(live_server, "a1")
    first.wait_frames(lambda _: counts(first) and counts(first)[-1] == 1, what="the first list")
    others = [ws_open(live_server, "b{}".format(i)) for i in range(20)]
    wait_until(lambda: counts(first)[-1] == 21, 5, message="everyone counted")
    # Twenty arrivals at once are a few lists, not twenty.
    assert len(counts(first)) <= 5, counts(first)
    for sock in others:
        sock.wait_frames(lambda _, s=sock: counts(s) and counts(s)[-1] == 21, what="the full list")
    assert len(rows(live_server)) == 21

    # Nobody comes or goes: nothing is sent.
    before = [len(s.presence) for s in [first] + others]
    time.sleep(4)
    assert [len(s.presence) for s in [first] + others] == before
    assert first.frames == []  # and no other frame either

    # Ten leave: after the grace, one list says so.
    for sock in others[:10]:
        sock.close()
    wait_until(lambda: counts(first)[-1] == 11, 8, message="the ten gone")
    assert len(rows(live_server)) == 11


def test_a_person_is_counted_once_however_many_pages_they_have_open(live_server, ws_open):
    ada = Browser(live_server)
    ada.load()
    cookie = "; ".join("{}={}".format(c.name, c.value) for c in ada.jar)
    tabs = [ws_open(live_server, "c{}".format(i), header=["Cookie: " + cookie]) for i in range(3)]
    watcher = ws_open(live_server, "w1")
    wait_until(lambda: counts(watcher) and counts(watcher)[-1] == 2, 5, message="Ada and the watcher")
    wait_until(lambda: any(r["pages"] == 3 for r in rows(live_server)), 5, message="Ada's three pages written")
    (row,) = [r for r in rows(live_server) if r["pages"] == 3]
    assert row["name"] == ada.name
    tabs[0].close()
    tabs[1].close()
    time.sleep(4.5)
    assert counts(watcher)[-1] == 2
    assert [r["pages"] for r in rows(live_server) if r["session_key"] == row["session_key"]] == [1]


def test_a_process_that_stops_takes_its_people_with_it(live_server, ws_open):
    for i in range(3):
        ws_open(live_server, "d{}".format(i))
    wait_until(lambda: len(rows(live_server)) == 3, 5, message="three rows")
    live_server.stop()
    assert rows(live_server) == []


def test_the_people_of_a_process_that_died_leave_its_rooms(app):
    presence = app.extensions["chat"]["presence"]
    hub = app.extensions["chat"]["hub"]
    sub = hub.subscribe("lobby")
    with app.app_context(), db.connection_context():
        Worker.insert(id="elsewhere", identity="x 1 1", seen_at=0.0).execute()  # last beat long ago
        Presence.insert(worker="elsewhere", room="lobby", session_key="k1", name="Ghost", pages=1).execute()
        Presence.insert(worker="vanished", room="lobby", session_key="k2", name="Spook", pages=1).execute()
        Presence.insert(worker=presence.worker_id, room="lobby", session_key="k3", name="Me", pages=1).execute()
        assert [name for _, name in presence.members("lobby")] == ["Ghost", "Me", "Spook"]
        assert sorted(presence.sweep()) == ["elsewhere", "vanished"]
        assert [name for _, name in presence.members("lobby")] == ["Me"]
    event = sub.queue.get_nowait()
    assert isinstance(event, Event) and event.kind == "presence"
    assert ">1 here<" in event.html and "Ghost" not in event.html and ">Me<" in event.html
    hub.unsubscribe(sub)


def test_names_are_escaped_and_the_list_is_capped(app):
    presence = app.extensions["chat"]["presence"]
    with app.app_context(), db.connection_context():
        for i in range(60):
            Presence.insert(worker=presence.worker_id, room="big", session_key="k{}".format(i),
                            name="<b>P{:02d}</b>".format(i), pages=1).execute()
        html = presence.fragment("big")
    assert ">60 here<" in html
    assert html.count("<li data-session=") == 50 and "and 10 more" in html
    assert "<b>" not in html and "&lt;b&gt;P00&lt;/b&gt;" in html
