"""Opening a room with 100,000 messages against opening a new one.

Starts the real server (gunicorn, one gevent worker, SQLite in a temporary
directory), writes N old messages into one room straight into its database,
then times GET of that room's page, of a new (empty) room's page, of a room
holding exactly one page (50 messages, the same HTML to draw), and of one load
of older messages from the middle of the big room, alternating the three
so the machine's noise hits them alike. Prints medians and the ratio of each
against the new room and the one-page room, measured in the same run.

    .venv/bin/python -m bench.room_open [--messages 100000] [--requests 200]
"""
import argparse
import http.client
import sqlite3
import statistics
import tempfile
import time
from datetime import datetime
from datetime import timedelta

from bench.server import Server


def fill(db_path, room, n):
    start = datetime(2025, 1, 1)
    con = sqlite3.connect(db_path, timeout=30)
    with con:
        con.executemany(
            "INSERT INTO message (room, author, role, status, body, created_at, stop_requested)"
            " VALUES (?, ?, 'user', 'complete', ?, ?, 0)",
            (
                (room, "Person {}".format(i % 50), "Message number {} with **some** Markdown-free text.".format(i),
                 start + timedelta(seconds=i))
                for i in range(n)
            ),
        )
        con.execute(
            "INSERT INTO room (name, created_at, active_at, messages) VALUES (?, ?, ?, ?)",
            (room, start, start + timedelta(seconds=n), n),
        )
        first = con.execute("SELECT MIN(id) FROM message WHERE room = ?", (room,)).fetchone()[0]
    con.close()
    return first


def timed_get(conn, path):
    start = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    spent = time.perf_counter() - start
    assert response.status == 200, (path, response.status)
    return spent, len(body)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        server = Server(workdir, "rooms", "http://127.0.0.1:9/v1").start()  # the model is never called
        try:
            first = fill(server.db_path, "big", args.messages)
            fill(server.db_path, "small", 50)  # exactly one page (PAGE_MESSAGES)
            middle = first + args.messages // 2
            paths = {"new room": "/r/new-room", "50 messages": "/r/small", "100k room": "/r/big", "older page": "/r/big/older?before={}".format(middle)}
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            for path in paths.values():  # warm up
                timed_get(conn, path)
            times = {name: [] for name in paths}
            sizes = {}
            for _ in range(args.requests):
                for name, path in paths.items():
                    spent, size = timed_get(conn, path)
                    times[name].append(spent)
                    sizes[name] = size
            conn.close()
        finally:
            server.stop()
    base = statistics.median(times["new room"])
    page = statistics.median(times["50 messages"])
    print("{:,} messages in one room, {} requests each, one gevent worker, SQLite".format(args.messages, args.requests))
    for name, spent in times.items():
        median = statistics.median(spent)
        p95 = sorted(spent)[int(len(spent) * 0.95) - 1]
        print("  {:<11} median {:6.2f} ms  p95 {:6.2f} ms  {:>7,} B  {:.2f}x the new room, {:.2f}x the 50-message room".format(
            name, median * 1000, p95 * 1000, sizes[name], median / base, median / page))


if __name__ == "__main__":
    main()
