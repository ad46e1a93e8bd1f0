"""The report's four measured sections: bandwidth, latency, capacity and idle
sockets, each a table with the prose that says how it was measured."""
from bench.server import app_default
from bench.stats import fmt
from bench.stats import fmt_int
from bench.stats import ms
from bench.stats import pct
from bench.targets import MODE_NOTES
from bench.targets import MODES


def _runs(opts, row):
    """(size, mode, row) of every bandwidth run, by size, then mode."""
    for size in opts.sizes:
        for mode in MODES:
            r = row(mode, size)
            if r is not None:
                yield size, mode, r


def bandwidth(add, opts, bw, row, plots):
    add("## 1. Bandwidth per reply")
    add("")
    for mode in MODES:
        add("- `{}`: {}.".format(mode, MODE_NOTES[mode]))
    add("")
    add("| Mode | Tokens | Reply text B | Asker B | Asker ÷ text | Observer B (each) | Observer ÷ text "
        "| DB statements | Committed chunks | Statements ÷ (chunks + 3) | DB statement B | DB value B |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size, mode, r in _runs(opts, row):
        obs = max(r["observer_bytes"]) if r["observer_bytes"] else None
        chunks_ref = (row("append", size) or r)["chunks"]
        add("| {} | {:,} | {:,} | {:,} | {} | {} | {} | {:,} | {} | {:.2f} | {:,} | {:,} |".format(
            mode, size, r["text_bytes"], r["asker_bytes"], fmt(r["asker_bytes"] / r["text_bytes"]),
            fmt_int(obs), fmt(obs / r["text_bytes"]) if obs is not None else "–",
            r["reply_statements"],
            r["chunks"] if mode != "whole-per-token" else "0 ({} in append)".format(chunks_ref),
            r["reply_statements"] / (chunks_ref + 3), r["statement_bytes"], r["value_bytes"]))
    add("")
    same = all(len(set(r["observer_bytes"])) <= 1 for r in bw)
    add("*DB statements* leaves out the question's own INSERT (one per exchange, in every mode, with or "
        "without a reply). *Statements ÷ (chunks + 3)* uses the append run's chunk count for the same "
        "tokens. {}".format("Every observer received exactly the same bytes." if same else
                            "Observers did not all receive the same bytes; the table shows the largest."))
    add("")
    add("What the bytes are made of (asker events and observer frames counted in brackets):")
    add("")
    add("| Mode | Tokens | Asker: first event | token events | whole re-renders | final | "
        "Observer: new articles | appends | whole re-renders | final | Writes |")
    add("|---|---|---|---|---|---|---|---|---|---|---|")
    for size, mode, r in _runs(opts, row):
        a, o = r["asker"], r["observer"] or {}
        add("| {} | {:,} | {:,} | {:,} ({:,}) | {:,} ({:,}) | {:,} | {} | {} ({}) | {} ({}) | {} | {} |".format(
            mode, size, a["first_bytes"], a["token_bytes"], a["token_events"], a["whole_bytes"],
            a["whole_events"], a["final_bytes"], fmt_int(o.get("article_bytes")),
            fmt_int(o.get("append_bytes")), fmt_int(len(o.get("appends", []))), fmt_int(o.get("whole_bytes")),
            fmt_int(len(o.get("wholes", []))), fmt_int(o.get("final_bytes")),
            ", ".join("{:,} × {}".format(v, k) for k, v in sorted(r["kinds"].items()))))
    add("")
    if any(p.endswith("bench-bandwidth.png") for p in plots):
        add("![Bytes per reply divided by reply text bytes, per mode](bench-bandwidth.png)")
        add("")


def latency(add, opts, baseline, row, plots):
    base_lat = [v for vs in baseline.values() for v in vs]
    add("## 2. Latency, one reply at a time")
    add("")
    add("Token written by the fake model → its text received by the asker; chunk committed (the COMMIT "
        "after its INSERT, seen by the trace callback) → the append received by each observer (in "
        "`whole-per-chunk`, the whole re-render for that chunk). The direct baseline is a client reading "
        "the fake model's stream itself, same tokens, same pace, same run. {} observers were connected. "
        "*Others CPU* is what other processes on the machine used meanwhile.".format(opts.observers))
    add("")
    add("| Path | Mode | Samples | p50 ms | p99 ms | max ms | Added p50 ms | Added p99 ms | Worker CPU % "
        "| Others CPU % |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    add("| model → direct client | – | {:,} | {} | {} | {} | – | – | – | – |".format(
        len(base_lat), fmt(ms(pct(base_lat, 50)), 3), fmt(ms(pct(base_lat, 99)), 3),
        fmt(ms(max(base_lat)) if base_lat else None, 3)))

    def cpu_of(mode, key):
        vals = [(row(mode, s) or {}).get("cpu") for s in opts.sizes]
        vals = [v[key] for v in vals if v]
        return fmt(sum(vals) / len(vals), 0) if vals else "–"

    for mode in MODES:
        vals = [v for s in opts.sizes for v in (row(mode, s) or {}).get("asker_latency", [])]
        if not vals:
            continue
        add("| model → asker | {} | {:,} | {} | {} | {} | {} | {} | {} | {} |".format(
            mode, len(vals), fmt(ms(pct(vals, 50)), 3), fmt(ms(pct(vals, 99)), 3), fmt(ms(max(vals)), 3),
            fmt(ms(pct(vals, 50) - pct(base_lat, 50)), 3) if base_lat else "–",
            fmt(ms(pct(vals, 99) - pct(base_lat, 99)), 3) if base_lat else "–",
            cpu_of(mode, "worker"), cpu_of(mode, "others")))
    for mode in ("append", "whole-per-chunk"):
        vals = [v for s in opts.sizes for v in (row(mode, s) or {}).get("observer_latency", [])]
        if vals:
            add("| chunk commit → observer | {} | {:,} | {} | {} | {} | – | – | {} | {} |".format(
                mode, len(vals), fmt(ms(pct(vals, 50)), 3), fmt(ms(pct(vals, 99)), 3), fmt(ms(max(vals)), 3),
                cpu_of(mode, "worker"), cpu_of(mode, "others")))
    add("")
    add("`whole-per-token` commits no chunks, so it has no commit → observer figure; its asker latency is "
        "taken from the first whole re-render that contains the token.")
    add("")
    if any(p.endswith("bench-latency.png") for p in plots):
        add("![Latency distributions](bench-latency.png)")
        add("")


def frames(add, opts, frames, baseline):
    """The author stream's bytes against its added latency, per STREAM_FRAME_TIME and STREAM_FRAME_TEXT."""
    if not frames:
        return
    size = frames[0]["size"]
    base = baseline.get(size) or []
    add("### Bytes against latency: the author stream's frame")
    add("")
    add("The same {:,}-token reply at {:g} ms per token, once per setting (a fresh server each, no "
        "observers). A token after a pause goes at once; in a burst an event waits up to `STREAM_FRAME_TIME` "
        "until it carries `STREAM_FRAME_TEXT` characters of text (default {}). Each event costs about 8 bytes of "
        "framing (`data:` and a blank line) on about 5 bytes of text per token, so bytes fall only as events "
        "carry more tokens, which means holding them: at this even pace the two targets cannot both hold "
        "(a p99 within 5 ms allows almost no token to wait for the next, 10 ms later, and one token per "
        "event is already 1 + 8 ÷ 4.9 = 2.6 × the text). *Added* is over the direct "
        "read of the same tokens (section 2). A held token waits about one token gap (or two), the one "
        "that completes an event not at all, so the median lands on one side or the other depending on "
        "which share of tokens is held, while the mean moves smoothly.".format(
            size, opts.token_delay * 1000, _frame_text()))
    add("")
    add("| `STREAM_FRAME_TIME` s | `STREAM_FRAME_TEXT` chars | Asker ÷ text | Token events | Tokens per event "
        "| p50 ms | mean ms | p99 ms | Added p50 ms | Added p99 ms |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    for f in frames:
        lat, a = f["latency"], f["asker"]
        text = f.get("frame_text")
        default = abs(f["frame"] - _default_frame()) < 1e-9 and (text is None or str(text) == _frame_text())
        add("| {:g}{} | {} | {:.2f} | {:,} | {:.2f} | {} | {} | {} | {} | {} |".format(
            f["frame"], " (default)" if default else "",
            ("–" if f["frame"] == 0 else _frame_text()) if text is None else text,
            f["asker_bytes"] / f["text_bytes"], a["token_events"], size / max(a["token_events"], 1),
            fmt(ms(pct(lat, 50)), 2), fmt(ms(sum(lat) / len(lat)) if lat else None, 2), fmt(ms(pct(lat, 99)), 2),
            fmt(ms(pct(lat, 50) - pct(base, 50)), 2) if base and lat else "–",
            fmt(ms(pct(lat, 99) - pct(base, 99)), 2) if base and lat else "–"))
    add("")


def _default_frame():
    try:
        return float(app_default("STREAM_FRAME_TIME"))
    except ValueError:
        return -1.0


def _frame_text():
    return app_default("STREAM_FRAME_TEXT")


def capacity(add, opts, capacity, plots):
    add("## 3. Capacity of one worker")
    add("")
    if capacity:
        c0 = capacity[0]
        add("Per level, N askers post at random moments within {:g} s and each reads a {:,}-token reply "
            "streamed at {:g} ms per token (offered load N ÷ {:g} s tokens per second). There is one room, "
            "so every observer socket receives every reply's pieces: a level is **N askers + {} observers in "
            "total**, each observer watching all N replies. That is the same fan-out work per reply as "
            "\"10 observers per reply\" (one append per chunk per socket), on 10 sockets instead of 10·N; "
            "N·10 sockets in one room would mean 10·N² deliveries, which one machine cannot drive. "
            "`FANOUT_MODE=append`, the app's default socket queue ({queue} events). *Sustained* is the time during which at least "
            "90% of the level's replies were streaming to their askers (50%, marked, where the replies "
            "overlapped too little for that); *delivered* is the tokens per second "
            "the askers received in that time (the whole level's average where it is under 1 s), and the CPU "
            "columns cover it too; *sent* is the fake model's own rate while at least 90% of the replies were "
            "being written (below *offered* when the load generator falls behind). When the worker lags and "
            "then catches up inside the window, *delivered* can exceed *sent*. *Asker p99, sustained* takes only the tokens "
            "received then; *all tokens* includes the arrival burst (N posts within {ramp:g} s) and the "
            "tail. *Stretch* is the median reply's first-to-last-token time over its nominal length. "
            "Besides the SQL trace hook (which all servers here run), the capacity worker ran with "
            "`bench/sitecustomize.py`'s sampling profiler (a SIGPROF timer every 2 ms of CPU); both cost "
            "the worker some CPU (the hook's share is in the profile below).".format(
                opts.ramp, opts.cap_tokens, opts.cap_token_delay * 1000, opts.cap_token_delay,
                c0["observers"], ramp=opts.ramp, queue=app_default("SOCKET_QUEUE_SIZE")))
        add("")
        add("| Replies | Observers | Offered tok/s | Sent tok/s | Delivered tok/s | Sustained s | Asker p50 ms "
            "| Asker p99 ms, sustained | Asker p99 ms, all tokens | Asker max ms | Observer p50 ms "
            "| Observer p99 ms | Stretch | Worker CPU % | Worker CPU µs per token | Load generator CPU % "
            "| Others CPU % | Worker RSS MB (peak) | Failed replies | Dropped observers "
            "| Replies asked without their question |")
        add("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in capacity:
            add("| {} | {} | {:,.0f} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0f} | {} "
                "| {:.0f} | {:.0f} | {:.0f} | {} | {} | {} |".format(
                    r["n"], r["observers"], r["offered"], fmt_int(r["sent_rate"]),
                    fmt_int(r["steady"] or r["delivered"]),
                    ("{:.1f}".format(r["sustained"]) + (" (≥50%)" if r["window_fraction"] < 0.9 else ""))
                    if r["sustained"] >= 1.0 else "– (whole level)",
                    fmt(r["p50"], 1), fmt(r["w_p99"], 1),
                    fmt(r["p99"], 1), fmt(r["max"], 1), fmt(r["obs_p50"], 1), fmt(r["obs_p99"], 1),
                    fmt(r["stretch"]), r["cpu"], fmt_int(r["us_per_token"]), r["bench_cpu"], r["others_cpu"],
                    r["rss_peak"], r["errors"], r["dropped"], r["misrouted"]))
        add("")
        bad = [r for r in capacity if r["misrouted"]]
        if bad:
            add("**Replies not asked their own question**: {}. A reply's context is the messages before "
                "it (`chat.stream.reply.reply_context`), so its question is always the last one the model sees; a "
                "request without its question's key (no user message, another message last, or a key used "
                "twice, as a retried request would) gets a made-up reply of the same length from the fake "
                "model under a key of its own, and each asker is matched to the stream it really received "
                "by its text, so the latency figures above are still per token.".format("; ".join(
                    "{} of {} replies at {} concurrent ({})".format(
                        r["misrouted"], r["n"], r["n"], ", ".join(
                            "{} {}".format(v, {"none": "with no user message",
                                               "other": "with another message last",
                                               "dup": "with another asker's question"}.get(k, k))
                            for k, v in sorted(r["misrouted_reasons"].items())))
                    for r in bad)))
            add("")
        profiled = [r for r in capacity if r.get("profile") and r["profile"]["samples"] > 0]
        if profiled:
            add("Where the worker's CPU time went: % of its profiler samples (one per 2 ms of CPU) in each "
                "level, top entries. *App* is the innermost frame in the app's own modules (what the work is "
                "for), *library* the innermost third-party package other than gevent (what does it); "
                "*(no app frame)* is mostly gunicorn writing the askers' event streams, whose generator is "
                "suspended meanwhile:")
            add("")
            for kind, title in (("app", "App function"), ("lib", "Library")):
                keys = {}
                for r in profiled:
                    for k, v in r["profile"][kind].items():
                        keys[k] = max(keys.get(k, 0.0), v / r["profile"]["samples"])
                top = sorted(keys, key=lambda k: -keys[k])[:10]
                add("| {} | {} |".format(title, " | ".join("N = {}".format(r["n"]) for r in profiled)))
                add("|---|" + "---|" * len(profiled))
                for k in top:
                    add("| `{}` | {} |".format(k, " | ".join(
                        "{:.0f}%".format(100.0 * r["profile"][kind].get(k, 0) / r["profile"]["samples"])
                        for r in profiled)))
                add("")
        if any(p.endswith("bench-capacity.png") for p in plots):
            add("![Throughput, latency and CPU against concurrent replies](bench-capacity.png)")
            add("")
    else:
        add("Not run.")
        add("")


def idle(add, idle):
    add("## 4. Memory per idle observer socket")
    add("")
    if idle:
        add("A fresh server, warmed up (one reply; ten sockets opened and closed): the worker's RSS with no "
            "socket open, then with {:,} page sockets (`after` past the last message, so no snapshot) once a "
            "message posted afterwards has reached every one of them ({:,} of {:,} did) and one more second "
            "has passed. Each socket offers `permessage-deflate` as browsers do; the server accepted it on "
            "{:,}. The last column divides the KB per socket by the KB of one parked greenlet, measured in "
            "the same run.".format(idle["count"], idle["answered"], idle["count"], idle.get("compressed", 0)))
        add("")
        add("| Sockets | RSS before MB | RSS after MB | KB per socket | KB per socket, second half only | "
            "File descriptors added | KB per parked gevent greenlet (separate process) | Socket ÷ greenlet |")
        add("|---|---|---|---|---|---|---|---|")
        g = idle.get("greenlet_kb")
        add("| {:,} | {:.1f} | {:.1f} | {:.1f} | {} | {} | {} | {} |".format(
            idle["count"], idle["rss0"] / 1024, idle["rss1"] / 1024, idle["per_kb"],
            fmt(idle["second_half_kb"], 1), fmt_int(idle["fds"]), fmt(g, 1),
            fmt(idle["per_kb"] / g, 1) if g else "–"))
        add("")
        presence = idle.get("presence")
        if presence:
            add("Who is in the room (the top bar's count and list of people) is sent to a room's sockets when it "
                "changes, and only then: over {:g} s with nobody coming or going the {:,} sockets received {:,} "
                "lists, **{:.1f} bytes per socket per minute**; one more page opening cost each socket {:,.0f} "
                "bytes ({:.2f} lists: arrivals within half a second are sent together, and the list names at "
                "most 50 people). None of this is counted in a reply's bytes.".format(
                    presence["window"], idle["count"], presence["idle_frames"], presence["idle_per_minute"],
                    presence["per_join"], presence["join_frames"]))
            add("")
    else:
        add("Not run.")
        add("")
