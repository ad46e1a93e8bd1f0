"""Attacks from another site, the Content-Security-Policy at work, socket
pings, the overall reply cap and the model's token cap, on a live server."""
import http.server
import threading
import time

import pytest
import websocket

from conftest import LiveServer
from support.browser import assert_no_errors
from support.live import PRESENCE
from support.live import Browser
from support.live import SSEReader
from support.live import query
from support.live import recv_message


@pytest.fixture
def evil_site(live_server):
    """A page on another site (localhost is not 127.0.0.1) that auto-posts to the app."""
    target = live_server.url + "/messages"
    page = (
        '<form id="f" method="post" action="{}">'
        '<input name="body" value="posted by another site @gpt">'
        '<input name="page" value="x"></form>'
        "<script>document.getElementById('f').submit()</script>"
    ).format(target).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "http://localhost:{}/".format(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_a_cross_site_post_creates_nothing(live_server, people, evil_site):
    victim = people(live_server).open()  # has a session with the app
    before = query(live_server.database_url, "SELECT count(*) AS n FROM message")[0]["n"]
    tab = victim.context.new_page()
    with tab.expect_response(lambda r: r.url.endswith("/messages")) as info:
        tab.goto(evil_site)
    assert info.value.status == 403
    assert "did not come from this site" in info.value.text()
    tab.close()
    assert query(live_server.database_url, "SELECT count(*) AS n FROM message")[0]["n"] == before
    assert live_server.llm.requests == []


def test_the_content_security_policy_blocks_inline_script(live_server, people):
    person = people(live_server).open()  # htmx works under the policy (the page went live)
    person.send("hello")
    violations = person.page.evaluate(
        """() => new Promise((resolve) => {
             const seen = [];
             document.addEventListener('securitypolicyviolation', (e) => seen.push(e.violatedDirective));
             const s = document.createElement('script');
             s.textContent = 'window.__inline = 1';
             document.body.appendChild(s);
             setTimeout(() => resolve({seen, ran: window.__inline === 1}), 200);
           })"""
    )
    assert violations["ran"] is False
    assert any(v.startswith("script-src") for v in violations["seen"])
    person.errors = [e for e in person.errors if "Content Security Policy" not in e]  # the one we caused
    assert_no_errors(person)


def test_sockets_are_pinged_to_survive_idle_proxies(tmp_path, fake_llm):
    server = LiveServer(tmp_path, {"SOCKET_PING_INTERVAL": "0.5"}).start()
    try:
        url = "ws://127.0.0.1:{}/ws?page=p&after=0".format(server.port)
        ws = websocket.create_connection(url, origin=server.url, timeout=5)
        pings = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and pings < 2:
            opcode, _ = ws.recv_data(control_frame=True)
            pings += opcode == websocket.ABNF.OPCODE_PING
        ws.close()
        assert pings >= 2, "idle sockets get pings"
    finally:
        server.stop()


def test_sockets_answer_the_pages_ping_and_close(live_server):
    """The page's control frames get their answers from the socket's writer."""
    url = "ws://127.0.0.1:{}/ws?page=p&after=0".format(live_server.port)
    ws = websocket.create_connection(url, origin=live_server.url, timeout=5)
    def next_control():
        """The next frame but for the room's lists of people (one comes on
        connecting, and one when this socket's arrival is written)."""
        while True:
            opcode, frame = ws.recv_data_frame(control_frame=True)
            if not (opcode == websocket.ABNF.OPCODE_TEXT and frame.data.startswith(PRESENCE.encode())):
                return opcode, frame

    try:
        ws.ping(b"are you there")
        opcode, frame = next_control()
        assert opcode == websocket.ABNF.OPCODE_PONG and frame.data == b"are you there"
        ws.send_close(1000, b"bye")
        opcode, frame = next_control()
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(frame.data[:2], "big") == 1000
        assert ws.sock.recv(1) == b"", "the server closes the connection after its Close"
    finally:
        ws.shutdown()


def test_sockets_decline_compression(live_server):
    """Browsers offer permessage-deflate; accepting it would give every open
    socket a zlib compressor of its own (memory per idle socket)."""
    url = "ws://127.0.0.1:{}/ws?page=p&after=0".format(live_server.port)
    ws = websocket.create_connection(
        url, origin=live_server.url, timeout=5,
        header=["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"],
    )
    try:
        assert "sec-websocket-extensions" not in (ws.getheaders() or {})
        alice = Browser(live_server)
        alice.load()
        message_id = alice.say("plain frames")
        # websocket-client cannot inflate: a compressed frame would raise here.
        assert 'id="message-{}"'.format(message_id) in recv_message(ws)
    finally:
        ws.close()


def test_overall_reply_cap_and_token_cap(tmp_path, fake_llm):
    fake_llm.enqueue(["slow"] * 40, delay=0.1)
    server = LiveServer(
        tmp_path,
        {
            "OPENAI_API_KEY": "k",
            "OPENAI_BASE_URL": fake_llm.base_url,
            "MAX_CONCURRENT_REPLIES": "1",
            "MAX_TOKENS": "77",
        },
    ).start()
    try:
        first, second = Browser(server), Browser(server)
        first.load()
        second.load()
        with first.stream("@gpt one") as response:
            reader = SSEReader(response)
            reader.next()  # the reply is streaming
            refused = second.post("@gpt two", sse=False)
            assert refused.status == 503
            assert "busy answering everyone" in refused.body
            for _ in reader:
                pass
        assert fake_llm.requests[0]["max_tokens"] == 77
        assert len(fake_llm.requests) == 1
        assert query(server.database_url, "SELECT count(*) AS n FROM message WHERE body = '@gpt two'")[0]["n"] == 0
    finally:
        server.stop()


def test_several_workers_on_sqlite_refuse_to_start(tmp_path):
    server = LiveServer(tmp_path, workers=2, backend="sqlite")
    with pytest.raises(RuntimeError) as failure:
        server.start()
    assert "Refusing to start 2 workers on SQLite" in str(failure.value)
