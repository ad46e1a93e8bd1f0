"""3: the capacity of one worker: N concurrent replies watched by observers."""
import os
import random
import time

from bench.clients import Asker
from bench.clients import Observer
from bench.clients import Session
from bench.clients import barrier
from bench.clients import warm_up
from bench.meters import CpuMeter
from bench.meters import profile_delta
from bench.meters import read_profile
from bench.replies import script_key
from bench.replies import script_of
from bench.server import Server
from bench.sqltrace import Trace
from bench.stats import fmt
from bench.stats import fmt_int
from bench.stats import ms
from bench.stats import pct
from bench.stats import sustained_window
from bench.wire import append_id
from bench.wire import parse_asker
from bench.wire import token_pairs


def letters(text):
    return "".join(ch for ch in text if ch.isalnum())


def run_capacity(opts, fake, pool, workdir, log):
    profile_path = os.path.join(workdir, "capacity.profile.json")
    server = Server(workdir, "capacity", fake.base_url,
                    {"FANOUT_MODE": "append", "BENCH_PROFILE": profile_path}).start()
    trace = Trace(server.trace_path)
    rows = []
    try:
        session = Session(server)
        warm_up(server, session, fake)
        for n in opts.levels:
            fake.forget_requests()
            observers = [Observer(server) for _ in range(opts.cap_observers)]
            barrier(session, observers)
            askers = [Asker(session, script_key("cap{}-{}".format(n, i), opts.cap_tokens,
                                                 opts.seed * 7919 + n * 1000 + i, opts.cap_token_delay))
                      for i in range(n)]
            rng = random.Random(n)
            offsets = sorted(rng.uniform(0, opts.ramp) for _ in askers)
            fake.orphans(default=(opts.cap_tokens, opts.cap_token_delay))
            time.sleep(0.5)
            profile0 = read_profile(profile_path)
            with CpuMeter(server) as meter:
                start = time.monotonic() + 0.2
                pool.run(session, askers, [start + o for o in offsets],
                         timeout=60 + opts.ramp + opts.cap_tokens * opts.cap_token_delay * 4)
                end = time.monotonic()
            replies = [a.reply_id for a in askers if a.reply_id]
            for o in observers:
                for r in replies:
                    if not o.wait_final(r, 10):
                        break
            time.sleep(1.1)
            profile = profile_delta(profile0, read_profile(profile_path))
            trace.load()
            commits = trace.chunk_commits()
            lat, obs_lat = [], []
            delivered, errors = 0, 0
            pairs, intervals, sends, send_intervals = [], [], [], []
            # Which stream each asker got is told by its text, not by its key: a reply whose
            # context lost its question (an app bug under load) is asked with another
            # question, or none, and the fake then streams a script of its own.
            streams = dict(fake.sent([a.key for a in askers]))
            streams.update(fake.orphans())
            # Matched on letters and digits: the asker's page shows Markdown drawn as HTML.
            by_prefix = {letters("".join(script_of(k)[0][:12])): k for k, times in streams.items() if times}
            misrouted = 0
            reasons = {}
            for k in streams:
                if k.startswith("unkeyed-"):
                    reason = k.split("-")[1]
                    reasons[reason] = reasons.get(reason, 0) + 1
            for a in askers:
                parsed = parse_asker(a)
                text = letters("".join(parsed["text"]))
                key = a.key if text.startswith(letters("".join(a.tokens[:12]))) else next(
                    (k for prefix, k in by_prefix.items() if text.startswith(prefix)), None)
                if key != a.key:
                    misrouted += 1
                    a.tokens = script_of(key)[0] if key else []
                sent = streams.get(key, []) if key else []
                sends.extend(sent)
                if sent:
                    send_intervals.append((sent[0], sent[-1]))
                if a.error or a.status != 200 or parsed["final"] != "complete":
                    errors += 1
                got = token_pairs(a.tokens, sent, parsed["progress"])
                delivered += len(got)
                pairs.extend(got)
                if got:
                    intervals.append((got[0][1], got[-1][1]))
            lat = [r - s for s, r, visible in pairs if visible]
            # Sustained: while at least 90% of the level's replies were streaming.
            periods = sustained_window(intervals)
            length = sum(b - a for a, b in periods)
            window_fraction = 0.9
            if length < 1.0:  # the replies hardly overlapped at 90% (a lagging worker spreads them out)
                periods = sustained_window(intervals, 0.5)
                length = sum(b - a for a, b in periods)
                window_fraction = 0.5

            def inside(t):
                return any(a <= t <= b for a, b in periods)

            steady = sent_rate = None
            lat_window = []
            if length >= 1.0:
                steady = sum(1 for _, r, _ in pairs if inside(r)) / length
            # The fake model's own rate, over the time at least 90% of the replies were being written.
            sending = sustained_window(send_intervals)
            sending_length = sum(b - a for a, b in sending)
            if sending_length >= 1.0:
                sent_rate = sum(1 for t in sends if any(a <= t <= b for a, b in sending)) / sending_length
                lat_window = [r - s for s, r, visible in pairs if visible and inside(r)]
            total_span = (max(b for _, b in intervals) - min(sends)) if intervals and sends else end - start
            cpu = (meter.rates(periods[0][0], periods[-1][1]) if length >= 1.0 else None) or meter.rates()
            durations = sorted(b - a for a, b in intervals)
            dropped = sum(1 for o in observers if o.closed)
            frames_total = 0
            for o in observers:
                per_reply = {}
                for t, data in list(o.frames):
                    frames_total += 1
                    rid = append_id(data)
                    if rid is not None:
                        seq = per_reply[rid] = per_reply.get(rid, 0) + 1
                        c = commits.get((rid, seq))
                        if c is not None:
                            obs_lat.append(t - c)
            row = dict(n=n, observers=len(observers), offered=n / opts.cap_token_delay, sent_rate=sent_rate,
                       delivered=delivered / total_span if total_span > 0 else None, steady=steady,
                       p50=ms(pct(lat, 50)), p99=ms(pct(lat, 99)), max=ms(max(lat) if lat else None),
                       w_p50=ms(pct(lat_window, 50)), w_p99=ms(pct(lat_window, 99)),
                       obs_p50=ms(pct(obs_lat, 50)), obs_p99=ms(pct(obs_lat, 99)),
                       cpu=cpu["worker"], bench_cpu=cpu["me"], others_cpu=cpu["others"],
                       us_per_token=(cpu["worker"] / 100.0 / (steady or delivered / total_span) * 1e6)
                       if (steady or (delivered and total_span > 0)) else None,
                       cpu_window=cpu["wall"], sustained=length, window_fraction=window_fraction,
                       stretch=(pct(durations, 50) / ((opts.cap_tokens - 1) * opts.cap_token_delay))
                       if durations else None,
                       rss_peak=meter.rss_peak / 1024.0, rss_end=meter.rss_end / 1024.0,
                       errors=errors, dropped=dropped, tokens=delivered, latencies=lat, frames=frames_total,
                       misrouted=misrouted, misrouted_reasons=reasons,
                       profile=profile)
            rows.append(row)
            log("  {:>4} replies: {:>7.0f} tok/s delivered (sent {}, offered {:.0f}, sustained {:.1f}s), asker p50 "
                "{:.1f} ms p99 {:.1f} ms (sustained p99 {}), observer p99 {} ms, CPU worker {:.0f}% bench {:.0f}% "
                "others {:.0f}%, RSS {:.0f} MB, reply stretch {}, errors {}, dropped {}, without their question {}".format(
                    n, row["steady"] or row["delivered"] or 0, fmt_int(sent_rate), row["offered"], length,
                    row["p50"] or 0, row["p99"] or 0, fmt(row["w_p99"], 1), "{:.1f}".format(row["obs_p99"]) if row["obs_p99"] is not None else "-",
                    row["cpu"], row["bench_cpu"], row["others_cpu"], row["rss_peak"], fmt(row["stretch"]),
                    errors, dropped, misrouted))
            for o in observers:
                o.close()
            for a in askers:
                a.chunks = []
    finally:
        server.stop()
    return rows, server.log_problems()
