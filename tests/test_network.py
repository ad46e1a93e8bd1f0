"""Real network drops in a real browser: a TCP proxy on loopback sits between
one page and the server and resets every connection through it, then refuses
new ones for a few seconds (Chromium's offline emulation holds websocket frames
instead of dropping them, so it cannot show this)."""
import socket
import struct
import threading
import time

import pytest

from support.browser import assert_no_errors
from support.browser import streaming_texts
from support.browser import words_to_tokens

REPLY = (
    "First, the network can drop at any moment. Second, a page must never show a sentence twice. "
    "Third, it must never miss one either. Fourth, the socket reconnects by itself. "
    "Fifth, the server sends a snapshot on every connect. Sixth, appends carry sequence numbers. "
    "Seventh, a gap re-sends the whole article. Eighth, and then the page is exact again."
)


def _reset(sock):
    """Close with RST, the way a dropped network looks to both ends. The
    shutdown wakes a pump thread blocked in recv on this socket: until it
    lets go, close() alone would send nothing."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class TcpProxy:
    """Forwards loopback connections to the server; ``drop`` resets them all."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.url = "http://127.0.0.1:{}".format(self.port)
        self.refuse_until = 0.0
        self.pairs = []
        self.drops = 0
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self.refuse_until:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                _reset(client)
                continue
            with self.lock:
                self.pairs.append((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop(self, offline_for):
        """Reset every open connection and refuse new ones for ``offline_for`` s."""
        self.refuse_until = time.monotonic() + offline_for
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for client, upstream in pairs:
            _reset(client)
            _reset(upstream)
        self.drops += len(pairs)

    def close(self):
        self.closed = True
        self.listener.close()
        self.drop(0)


class Proxied:
    """The live server as seen through the proxy (what ``Person`` needs)."""

    def __init__(self, proxy, server):
        self.url = proxy.url
        self.server = server

    def logs(self):
        return self.server.logs()


@pytest.fixture
def proxy(live_server):
    p = TcpProxy(live_server.port)
    yield p
    p.close()


def assert_never_duplicated(states, text):
    """Every text the page showed mid-reply is a prefix of the reply: no
    sentence shown twice, none skipped and later filled in."""
    for shown in streaming_texts(states):
        assert text.startswith(shown), "page showed text that is not a prefix of the reply: {!r}".format(shown)


def test_observer_offline_mid_reply_ends_exact(live_server, proxy, people):
    tokens = words_to_tokens(REPLY)
    live_server.llm.enqueue(tokens, delay=0.06)
    asker = people(live_server).open()
    observer = people(Proxied(proxy, live_server)).open()
    reply = asker.reply_after(asker.send("@gpt tell me about dropped networks"))
    observer.wait_text(reply, 30)
    proxy.drop(offline_for=2.5)
    assert proxy.drops >= 1
    asker.wait_status(reply)
    observer.wait_status(reply)
    assert observer.body_html(reply) == asker.body_html(reply)
    assert_never_duplicated(observer.states(reply), "".join(tokens))
    assert len(observer.sockets) >= 2, "the observer's socket reconnected: {}".format(observer.sockets)
    assert_no_errors(asker)


def test_askers_stream_breaks_and_the_page_follows_the_reply(live_server, proxy, people):
    tokens = words_to_tokens(REPLY)
    live_server.llm.enqueue(tokens, delay=0.06)
    asker = people(Proxied(proxy, live_server)).open()
    observer = people(live_server).open()
    reply = asker.reply_after(asker.send("@gpt and if my own stream breaks?"))
    asker.wait_text(reply, 40)
    proxy.drop(offline_for=1.5)
    observer.wait_status(reply)
    asker.wait_status(reply)
    assert asker.body_html(reply) == observer.body_html(reply)
    assert_never_duplicated(asker.states(reply), "".join(tokens))
    # Once reconnected, the page can post again.
    asker.send("back online")
    observer.wait_for(
        "() => Array.from(document.querySelectorAll('.message-body')).some((b) => b.textContent === 'back online')",
        what="the message posted after the drop",
    )
    assert_no_errors(observer)


def test_a_page_open_across_a_server_restart_ends_exact(tmp_path, fake_llm, people):
    """SIGTERM mid-reply (a deploy): the reply finishes within the graceful
    timeout, the page's socket is closed with 1012, and once the next process
    listens on the same port the page reconnects and shows the stored reply."""
    from conftest import LiveServer
    from support.live import query

    env = {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": fake_llm.base_url}
    tokens = words_to_tokens(REPLY)
    fake_llm.enqueue(tokens, delay=0.03)
    first = LiveServer(tmp_path, env, graceful=10).start()
    try:
        asker = people(first).open()
        observer = people(first).open()
        reply = asker.reply_after(asker.send("@gpt survive a deploy"))
        observer.wait_text(reply, 20)
        first.proc.send_signal(15)  # SIGTERM to the master, as the platform does
        first.proc.wait(15)
    finally:
        first.stop()
    stored = query(first.database_url, "SELECT status, body FROM message WHERE role = 'assistant'")[0]
    assert stored == {"status": "complete", "body": "".join(tokens)}
    second = LiveServer(tmp_path, env, port=first.port).start()
    try:
        observer.wait_status(reply)
        asker.wait_status(reply)
        assert observer.body_html(reply) == asker.body_html(reply)
        assert observer.rendered_text(observer.body_html(reply)).strip()
        assert_never_duplicated(observer.states(reply), "".join(tokens))
        assert len(observer.sockets) >= 2, "the page reconnected to the new process"
    finally:
        second.stop()
