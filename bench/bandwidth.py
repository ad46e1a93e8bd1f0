"""1 and 2: bandwidth and latency, one reply at a time, per fan-out mode;
and the baseline, a client that reads the fake model directly."""
import http.client
import json
import time

from bench.clients import Asker
from bench.clients import Observer
from bench.clients import Session
from bench.clients import barrier
from bench.clients import warm_up
from bench.meters import CpuMeter
from bench.replies import script_key
from bench.replies import script_of
from bench.server import Server
from bench.sqltrace import Trace
from bench.sqltrace import string_literal_bytes
from bench.stats import fmt
from bench.stats import ms
from bench.stats import pct
from bench.wire import alnum
from bench.wire import observer_reply
from bench.wire import parse_asker
from bench.wire import sse_events
from bench.wire import token_latencies


def run_mode(mode, opts, fake, workdir, log):
    server = Server(workdir, "bw-" + mode, fake.base_url,
                    {"FANOUT_MODE": mode, "SOCKET_QUEUE_SIZE": "100000"}).start()
    trace = Trace(server.trace_path)
    results = []
    observers = []
    try:
        session = Session(server)
        warm_up(server, session, fake)
        observers = [Observer(server) for _ in range(opts.observers)]
        barrier(session, observers)
        for size in opts.sizes:
            key = script_key("{}-{}".format(mode, size), size, opts.seed * 1000 + size, opts.token_delay)
            asker = Asker(session, key)
            tokens = asker.tokens
            with CpuMeter(server) as meter:
                t0 = time.monotonic()
                asker.run()
                if asker.error or asker.status != 200 or not asker.reply_id:
                    raise RuntimeError("asker failed in {} ({}): status {} {}".format(
                        mode, size, asker.status, asker.error))
                timeout = 60 + size * opts.token_delay * 5
                late = [o for o in observers if not o.wait_final(asker.reply_id, timeout)]
            time.sleep(0.3)  # anything still on its way for this reply
            t1 = time.monotonic()
            trace.load()
            a = parse_asker(asker)
            sent = fake.sent([key]).get(key, [])
            text = "".join(tokens)
            writes = trace.between(t0, t1)
            obs = [observer_reply(list(o.frames), a["question_id"], asker.reply_id, t0) for o in observers]
            commits = trace.chunk_commits()
            chunk_writes = [w for w in writes if w.verb == "INSERT" and w.table == "chunk"]
            # The post's own writes: its message, and its room's activity (any post makes both).
            question_writes = [w for w in writes if w.verb == "INSERT" and (
                w.table == "room" or (w.table == "message" and (w.columns or {}).get("role") == "user"))]
            obs_lat = []
            for o in obs:
                times = o["appends"] if mode == "append" else o["wholes"]
                for seq, t in enumerate(times, start=1):
                    c = commits.get((asker.reply_id, seq))
                    if c is not None:
                        obs_lat.append(t - c)
            kinds = {}
            for w in writes:
                k = "{} {}".format(w.verb, w.table)
                kinds[k] = kinds.get(k, 0) + 1
            row = dict(
                mode=mode, size=size, text_bytes=len(text.encode("utf-8")), text_chars=len(text),
                asker=a, asker_bytes=a["bytes"],
                observer_bytes=[o["bytes"] for o in obs], observer=obs[0] if obs else None,
                stray=sum(o["stray_bytes"] for o in obs), late=len(late),
                statements=len(writes), question_statements=len(question_writes),
                reply_statements=len(writes) - len(question_writes), chunks=len(chunk_writes),
                statement_bytes=sum(len(w.sql.encode("utf-8")) for w in writes),
                value_bytes=sum(string_literal_bytes(w.sql) for w in writes),
                kinds=kinds,
                asker_latency=token_latencies(tokens, sent, a["progress"]),
                observer_latency=obs_lat,
                duration=(a["final_t"] or t1) - t0,
                final=a["final"], tokens_sent=len(sent), cpu=meter.rates(),
            )
            results.append(row)
            log("  {:<16} {:>5} tokens: asker {:>9,} B  observer {:>10,} B  statements {:>5}  chunks {:>4}  {:.1f}s"
                "  CPU worker {:.0f}% others {:.0f}%{}".format(
                    mode, size, row["asker_bytes"], max(row["observer_bytes"] or [0]), row["statements"],
                    row["chunks"], row["duration"], row["cpu"]["worker"], row["cpu"]["others"],
                    "  ({} observer(s) never got the final article)".format(len(late)) if late else ""))
            for o in observers:  # free what was recorded for this reply
                with o._cond:
                    o.frames.clear()
                    o._scan.clear()
    finally:
        for o in observers:
            o.close()
        server.stop()
    problems = server.log_problems()
    return results, problems


def run_frames(opts, fake, workdir, log):
    """The author stream's bytes against its latency, one server per
    (``STREAM_FRAME_TIME``, ``STREAM_FRAME_TEXT`` or None for the app's default)
    in ``opts.frames``: the biggest reply once each, no observers, the same
    tokens and pace as the bandwidth runs."""
    size = max(opts.sizes)
    rows, problems = [], []
    for n, (frame, text) in enumerate(opts.frames):
        env = {"FANOUT_MODE": "append", "STREAM_FRAME_TIME": repr(float(frame))}
        if text is not None:
            env["STREAM_FRAME_TEXT"] = str(text)
        server = Server(workdir, "frame{}-{:g}".format(n, frame), fake.base_url, env).start()
        try:
            session = Session(server)
            warm_up(server, session, fake)
            key = script_key("frame{}-{:g}-{}".format(n, frame, size), size, opts.seed * 1000 + size,
                             opts.token_delay)
            asker = Asker(session, key)
            with CpuMeter(server) as meter:
                asker.run()
            if asker.error or asker.status != 200 or not asker.reply_id:
                raise RuntimeError("asker failed at STREAM_FRAME_TIME={}: status {} {}".format(
                    frame, asker.status, asker.error))
            a = parse_asker(asker)
            latencies = token_latencies(asker.tokens, fake.sent([key]).get(key, []), a["progress"])
            rows.append(dict(frame=frame, frame_text=text, size=size, text_bytes=len("".join(asker.tokens).encode("utf-8")),
                             asker=a, asker_bytes=a["bytes"], latency=latencies, cpu=meter.rates()))
            log("  STREAM_FRAME_TIME={:<6g} TEXT={:<4} asker {:>7,} B in {:>5,} token events, p50 {} ms p99 {} ms".format(
                frame, "-" if text is None else text, a["bytes"], a["token_events"], fmt(ms(pct(latencies, 50)), 2), fmt(ms(pct(latencies, 99)), 2)))
        finally:
            server.stop()
            problems.extend(server.log_problems())
            fake.forget_requests()
    return rows, problems


def run_baseline(opts, fake, log):
    out = {}
    for size in opts.sizes:
        key = script_key("direct-{}".format(size), size, opts.seed * 1000 + size, opts.token_delay)
        sent, progress = direct_read(fake, key)
        out[size] = token_latencies(script_of(key)[0], sent, progress)
        log("  direct {:>5} tokens: p50 {:.3f} ms  p99 {:.3f} ms".format(
            size, ms(pct(out[size], 50)), ms(pct(out[size], 99))))
    return out


def direct_read(fake, key):
    """The baseline: read the fake model's stream directly; (sent times, progress)."""
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=60)
    body = json.dumps({"model": "fake-model", "stream": True,
                       "messages": [{"role": "user", "content": "bench-key:" + key}]})
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    chunks = []
    while True:
        data = resp.read1(65536)
        if not data:
            break
        chunks.append((time.monotonic(), data))
    conn.close()
    progress, received = [], 0
    for t, raw in sse_events(chunks):
        line = raw[:-2].decode("utf-8")
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        if event.get("choices"):
            text = event["choices"][0].get("delta", {}).get("content")
            if text:
                received += alnum(text)
                progress.append((t, received))
    return fake.sent([key]).get(key, []), progress
