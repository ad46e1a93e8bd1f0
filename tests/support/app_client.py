"""The app in this process, through Flask's test client: the headers htmx
sends, a page's CSRF token, a post, an event-stream body read into its
events, and a poller that lets the reply greenlets run."""
import time

import gevent

from conftest import csrf_from
from support.body import parse_sse

HTMX = {"HX-Request": "true"}


STREAM = {"HX-Request": "true", "Accept": "text/html, text/event-stream"}


def open_page(client):
    html = client.get("/").get_data(as_text=True)
    return html, csrf_from(html)


def post(client, token, body, headers=None, page="aa01"):
    return client.post(
        "/messages",
        data={"body": body, "page": page, "csrf_token": token},
        headers=headers or {},
    )


def wait_until(predicate, timeout=5.0):
    """Poll ``predicate`` while letting greenlets (a reply's generation) run.
    Wall-clock deadline: the hub's cached loop time is stale after a long
    stretch of tests that never yield to it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        gevent.sleep(0.01)
    return False


def sse_events(response):
    """The data of each event of an event-stream response body."""
    return [data for _, data in parse_sse(response.get_data(as_text=True))]
