"""4: memory per idle observer socket."""
import secrets
import select
import subprocess
import sys
import time

import websocket  # websocket-client

from bench.clients import PRESENCE
from bench.clients import Observer
from bench.clients import Session
from bench.clients import barrier
from bench.clients import close_socket
from bench.clients import warm_up
from bench.meters import proc_fds
from bench.server import Server

_GREENLET_PROBE = """
from gevent import monkey; monkey.patch_all()
import gc, gevent, gevent.event
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
event = gevent.event.Event()
def park(depth):
    return event.wait() if depth == 0 else park(depth - 1)
warm = [gevent.spawn(park, 20) for _ in range(50)]
gevent.sleep(0.1); gc.collect(); before = rss()
parked = [gevent.spawn(park, 20) for _ in range(2000)]
gevent.sleep(0.2); print((rss() - before) / 2000)
event.set(); gevent.joinall(warm + parked)
"""


def greenlet_kb():
    """KB of RSS per parked gevent greenlet (20 Python frames deep), in a fresh process."""
    try:
        out = subprocess.run([sys.executable, "-c", _GREENLET_PROBE], capture_output=True, text=True, timeout=60)
        return float(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


# What Chromium and Firefox send with every websocket they open.
BROWSER_OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"


def _drain(sockets, seconds):
    """Bytes of text frames the sockets receive in ``seconds`` (pings aside),
    and how many of those frames were lists of people."""
    total = frames = 0
    by_fd = {ws.sock.fileno(): ws for ws in sockets if ws.sock}
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return total, frames
        ready, _, _ = select.select(list(by_fd), [], [], min(left, 0.5))
        for fd in ready:
            ws = by_fd[fd]
            ws.settimeout(1)
            try:
                opcode, data = ws.recv_data(control_frame=True)
            except Exception:
                by_fd.pop(fd, None)
                continue
            if opcode == websocket.ABNF.OPCODE_TEXT:
                total += len(data)
                frames += data.startswith(PRESENCE)


def presence_cost(sockets, url, window):
    """What the room's list of people costs its sockets: bytes per socket per
    minute while nobody comes or goes, and bytes each socket gets when one
    more page opens (the list is sent when it changes, and only then)."""
    _drain(sockets, 2.0)  # the arrivals' last lists
    idle_bytes, idle_frames = _drain(sockets, window)
    newcomer = websocket.create_connection(url.format(secrets.token_hex(8)), timeout=30, origin=url.split("/ws")[0]
                                           .replace("ws://", "http://"))
    try:
        join_bytes, join_frames = _drain(sockets, 2.0)
    finally:
        close_socket(newcomer)
    return dict(window=window, idle_per_minute=idle_bytes / len(sockets) * 60.0 / window,
                idle_frames=idle_frames, per_join=join_bytes / len(sockets), join_frames=join_frames / len(sockets))


def run_idle(opts, fake, workdir, log):
    server = Server(workdir, "idle", fake.base_url, {"FANOUT_MODE": "append"}).start()
    sockets = []
    try:
        session = Session(server)
        warm_up(server, session, fake)
        warm = [Observer(server) for _ in range(10)]  # load every code path once
        barrier(session, warm)
        for o in warm:
            o.close()
        time.sleep(1.0)
        fds0 = proc_fds(server.worker)
        rss0 = server.rss_kb()
        half_rss = None
        url = "ws://127.0.0.1:{}/ws?page={{}}&after={}".format(server.port, 10 ** 9)
        for i in range(opts.idle):
            sockets.append(websocket.create_connection(url.format(secrets.token_hex(8)), timeout=30,
                                                       origin=server.url, header=[BROWSER_OFFER]))
            if i + 1 == opts.idle // 2:
                time.sleep(0.5)
                half_rss = server.rss_kb()
        mid = session.say("are you all there?")
        got = 0
        compressed = sum(1 for ws in sockets if "sec-websocket-extensions" in (ws.getheaders() or {}))
        for ws in sockets:  # every socket is subscribed and has received the message
            try:
                ws.settimeout(10)
                while True:
                    data = ws.recv()
                    if not data.encode("utf-8").startswith(PRESENCE):
                        break
                if ('id="message-{}"'.format(mid)) in data:
                    got += 1
            except Exception:
                pass
        time.sleep(1.0)
        rss1 = server.rss_kb()
        fds1 = proc_fds(server.worker)
        presence = presence_cost(sockets, url, opts.presence_window)
        log("  who is here: {:.1f} B per socket per idle minute; one arrival costs each socket {:,.0f} B".format(
            presence["idle_per_minute"], presence["per_join"]))
        result = dict(count=opts.idle, rss0=rss0, rss1=rss1, per_kb=(rss1 - rss0) / opts.idle, presence=presence,
                      greenlet_kb=greenlet_kb(),
                      second_half_kb=(rss1 - half_rss) / (opts.idle - opts.idle // 2) if half_rss else None,
                      answered=got, compressed=compressed, fds=(fds1 - fds0) if fds0 is not None and fds1 is not None else None)
        log("  {} idle sockets: RSS {:.1f} -> {:.1f} MB, {:.1f} KB per socket ({} answered)".format(
            opts.idle, rss0 / 1024, rss1 / 1024, result["per_kb"], got))
    finally:
        for ws in sockets:
            close_socket(ws)
        server.stop()
    return result, server.log_problems()
