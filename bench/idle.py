"""4: memory per idle observer socket."""
import secrets
import subprocess
import sys
import time

import websocket  # websocket-client

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
        for ws in sockets:  # every socket is subscribed and has received one frame
            try:
                ws.settimeout(10)
                if ('id="message-{}"'.format(mid)) in ws.recv():
                    got += 1
            except Exception:
                pass
        time.sleep(1.0)
        rss1 = server.rss_kb()
        fds1 = proc_fds(server.worker)
        result = dict(count=opts.idle, rss0=rss0, rss1=rss1, per_kb=(rss1 - rss0) / opts.idle,
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
