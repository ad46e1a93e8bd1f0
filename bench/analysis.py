"""Where a target is missed: by how much, and what the measured parts say
the cause is."""
import os

from bench.server import app_default
from bench.stats import fmt_int
from bench.stats import pct
from bench.targets import TARGET_ADDED_P50_MS
from bench.targets import TARGET_ADDED_P99_MS
from bench.targets import TARGET_ASKER_RATIO
from bench.targets import TARGET_CAPACITY_LEVEL
from bench.targets import TARGET_CAPACITY_P99_MS
from bench.targets import TARGET_IDLE_KB
from bench.targets import TARGET_OBSERVER_RATIO


def sdk_cost(capacity):
    """', about N µs of CPU per token (capacity level M)' from the profile, or ''."""
    for c in capacity:
        prof = c.get("profile")
        if prof and prof["samples"] and c["us_per_token"] and c["cpu"] < 85:
            # Reading the model's stream: the SDK's HTTP client under these three.
            share = sum(prof["app"].get(name, 0) for name in (
                "chat.llm.openai_compat._sse_lines", "chat.llm.openai_compat.sse_chunks", "chat.llm.openai_compat.tokens")) / prof["samples"]
            if share:
                return ": about {:,.0f} µs of the worker's CPU per token at {} replies".format(
                    share * c["us_per_token"], c["n"])
    return ""


def analysis(opts, bw, baseline, capacity, idle, row, added50, added99, frames=()):
    """Where a target is missed: by how much, and what the measured parts say the cause is."""
    notes = []
    big = max(opts.sizes)
    r = row("append", big)
    if r:
        text = r["text_bytes"]
        o = r["observer"]
        ratio = max(r["observer_bytes"]) / text
        if ratio > TARGET_OBSERVER_RATIO:
            appends = len(o["appends"])
            wrapper = o["append_bytes"] - o["append_escaped_bytes"]
            markup = o["append_escaped_bytes"] - o["append_text_bytes"]
            fixed = text + markup + o["final_bytes"] + o["article_bytes"]
            room = TARGET_OBSERVER_RATIO * text - fixed
            notes.append(
                "**Observer bytes, {:.2f} × text (target {:g} ×)**: the reply text itself is 1.00 ×; its {} "
                "appends, one per committed chunk ({:.0f} B of text on average: one sentence), are each a "
                "piece (`+N`, then `U+001F`, a depth and a space per operation; out-of-band swaps where a "
                "piece cannot carry the HTML), {:.1f} B a chunk on average, {:.2f} × in all; block tags and "
                "entities in the appends add "
                "{:.2f} ×; the final article (a status flip around the body the page has) {:.2f} ×; the "
                "question's and the empty reply's articles {:.2f} ×. {}".format(
                    ratio, TARGET_OBSERVER_RATIO, appends, o["append_text_bytes"] / appends if appends else 0,
                    wrapper / appends if appends else 0, wrapper / text, markup / text, o["final_bytes"] / text,
                    o["article_bytes"] / text,
                    "For {:g} × the framing would have to fit in {:.0f} B a chunk.".format(
                        TARGET_OBSERVER_RATIO, room / appends) if appends and room > 0 else
                    "Without any wrapper the rest is already over {:g} × at this length.".format(
                        TARGET_OBSERVER_RATIO)))
        a = r["asker"]
        ask = r["asker_bytes"] / text
        if ask > TARGET_ASKER_RATIO:
            framing = a["token_bytes"] - a["token_escaped_bytes"]
            wrappers = a.get("token_wrapper_bytes", 0)
            markup = a["token_escaped_bytes"] - a["token_text_bytes"] - wrappers
            notes.append(
                "**Asker bytes, {:.2f} × text (target {:g} ×)**: the text is 1.00 ×; it went out in {:,} events "
                "for {:,} tokens ({:.2f} tokens per event), and each event's `data:` and blank line (and the "
                "few `reply-at` events) add {:.2f} × ({:.1f} B per event against {:.1f} B of text per token); "
                "the pieces' framing where a block starts {:.2f} ×, tags and entities {:.2f} ×; "
                "the final article (a status flip) {:.2f} ×; the first event (the question's and the empty "
                "reply's articles) {:.2f} ×. Fewer bytes means more tokens per event, so holding tokens "
                "longer: see the table of `STREAM_FRAME_TIME` and `STREAM_FRAME_TEXT` values in section "
                "2.".format(
                    ask, TARGET_ASKER_RATIO, a["token_events"], big,
                    big / a["token_events"] if a["token_events"] else 0, framing / text,
                    framing / a["token_events"] if a["token_events"] else 0, text / big, wrappers / text,
                    markup / text, a["final_bytes"] / text, a["first_bytes"] / text))
        for s in opts.sizes:
            rr = row("append", s)
            if rr and rr["reply_statements"] > rr["chunks"] + 3:
                notes.append("**DB statements ({:,} tokens)**: {} for {} chunks: {}.".format(
                    s, rr["reply_statements"], rr["chunks"],
                    ", ".join("{} × {}".format(v, k) for k, v in sorted(rr["kinds"].items()))))
    if added50 is not None and (added50 > TARGET_ADDED_P50_MS or added99 > TARGET_ADDED_P99_MS):
        at_once = [f for f in frames if f["frame"] == 0 and f["latency"]]
        base = baseline.get(at_once[0]["size"]) if at_once else None
        zero = ""
        if at_once and base:
            f = at_once[0]
            zero = (" With `STREAM_FRAME_TIME=0` (every token sent as it comes) the added latency was "
                    "{:.2f} ms at p50 and {:.2f} ms at p99, for {:.2f} × the text in bytes.".format(
                        (pct(f["latency"], 50) - pct(base, 50)) * 1000, (pct(f["latency"], 99) - pct(base, 99)) * 1000,
                        f["asker_bytes"] / f["text_bytes"]))
        app_lat = [v for s in opts.sizes for v in (row("append", s) or {}).get("asker_latency", [])]
        base_lat = [v for vs in baseline.values() for v in vs]
        mean = ""
        if app_lat and base_lat:
            mean = " (mean {:.2f} ms)".format((sum(app_lat) / len(app_lat) - sum(base_lat) / len(base_lat)) * 1000)
        notes.append(
            "**Added latency, p50 {:.2f} ms{} and p99 {:.2f} ms over the direct read**: tokens come every {:g} ms, "
            "closer than `STREAM_FRAME_TIME` ({} s), so they count as a burst and wait for the next one until "
            "an event carries {} characters of text: that wait is most of it, and is what keeps the asker's bytes "
            "within 2 × (section 2's frame table). At an even pace the two targets exclude each other: a p99 "
            "within 5 ms lets hardly any token wait for the next one, {:g} ms later, and an event per token "
            "costs its framing on every {:.1f} B of text.{} The rest is the way through the worker: the model's HTTP "
            "stream read by the `openai` SDK's client and `chat.llm.openai_compat.sse_chunks`{}, a gevent queue to the "
            "reply's greenlet and one to the request's, the drawing of the asker's page "
            "(`chat.web.author_stream.AuthorBody`, which adds to the last paragraph without parsing it again), a chunked "
            "HTTP write, and the other work of the same single-threaded worker (commits, the fan-out to "
            "observers) that a token may wait behind.".format(
                added50, mean, added99, opts.token_delay * 1000, app_default("STREAM_FRAME_TIME"),
                app_default("STREAM_FRAME_TEXT"), opts.token_delay * 1000,
                (r["text_bytes"] / big) if r else 0, zero, sdk_cost(capacity)))
    for c in capacity:
        p99 = c["w_p99"] if c["w_p99"] is not None else c["p99"]
        if c["n"] != TARGET_CAPACITY_LEVEL or p99 is None or p99 <= TARGET_CAPACITY_P99_MS:
            continue
        causes = []
        delivered = c["steady"] or c["delivered"] or 0
        if delivered < 0.95 * c["offered"]:
            causes.append("the askers received {:,.0f} tokens/s of the {:,.0f} offered ({} written by the fake "
                          "model), so tokens queue up in the worker for as long as the replies last".format(
                              delivered, c["offered"], fmt_int(c["sent_rate"])))
        if c["cpu"] >= 85:
            causes.append("the worker is CPU-bound: {:.0f}% of a core, and one gevent worker cannot use "
                          "more".format(c["cpu"]))
        saturated = [r for r in capacity if r["cpu"] >= 85 and (r["steady"] or r["delivered"])]
        if saturated:
            top = max(saturated, key=lambda r: r["steady"] or r["delivered"])
            rate = top["steady"] or top["delivered"]
            causes.append("saturated, the worker delivered at most {:,.0f} tokens/s (at {} replies, {} µs of CPU "
                          "per token; {}), which is about {:.0f} replies at {:g} ms per token".format(
                              rate, top["n"], fmt_int(top["us_per_token"]),
                              ", ".join("{} µs at {} replies".format(fmt_int(r["us_per_token"]), r["n"])
                                        for r in capacity if r is not top and r["us_per_token"])
                              + ": tokens that arrive together share wake-ups and writes",
                              rate * opts.cap_token_delay, opts.cap_token_delay * 1000))
        busy = c["cpu"] + c["bench_cpu"] + c["others_cpu"]
        if busy >= 170:
            causes.append("the machine is saturated: worker {:.0f}% + load generator {:.0f}% + other "
                          "processes {:.0f}% of its {} cores, so the worker got only {:.0f}% of a core while "
                          "it had work queued".format(c["cpu"], c["bench_cpu"], c["others_cpu"],
                                                      os.cpu_count(), c["cpu"]))
        if c["misrouted"]:
            causes.append("{} of the {} replies were not asked their own question ("
                          "see section 3)".format(c["misrouted"], c["n"]))
        prof = c.get("profile")
        if prof and prof["samples"] > 0:
            top = sorted(prof["lib"].items(), key=lambda kv: -kv[1])[:3]
            apps = sorted(prof["app"].items(), key=lambda kv: -kv[1])[:3]
            causes.append("of the worker's CPU samples, {} (by app function: {})".format(
                ", ".join("{:.0f}% were in {}".format(100 * v / prof["samples"], k) for k, v in top),
                ", ".join("{} {:.0f}%".format(k, 100 * v / prof["samples"]) for k, v in apps)))
        notes.append("**{} concurrent replies: asker p99 {:,.1f} ms (target {:g} ms)**: {}.".format(
            c["n"], p99, TARGET_CAPACITY_P99_MS, "; ".join(causes) if causes else
            "neither the worker nor the machine is saturated; the tail comes from greenlet scheduling "
            "(a token waits behind other replies' commits and fan-outs)"))
    dropped = [c for c in capacity if c["dropped"]]
    if dropped:
        notes.append(
            "**Observers cut at {}**: with one room, every observer socket receives every reply's events, "
            "and a socket whose writer falls {} events behind (`SOCKET_QUEUE_SIZE`, the app's default) is "
            "dropped by design so that it reconnects and resyncs; the saturated worker lagged that far "
            "behind: {}. The observer latency figures of those levels stop at the cut.".format(
                " and ".join("{} replies".format(c["n"]) for c in dropped), app_default("SOCKET_QUEUE_SIZE"),
                "; ".join("{} of {} observers at {} replies".format(c["dropped"], c["observers"], c["n"])
                          for c in dropped)))
    if idle and idle["per_kb"] > TARGET_IDLE_KB:
        g = idle.get("greenlet_kb")
        notes.append(
            "**Idle socket memory, {:.1f} KB each (target {:g} KB)**: each page socket parks one greenlet, "
            "the request's own, which is the socket's writer (its frames are read by an event-loop callback); "
            "a parked greenlet keeps its slice of the C stack and its Python frames on the heap{}. The rest "
            "is per-connection objects: gunicorn's parsed request and WSGI environ, Flask's request context "
            "for the upgrade request, the websocket frame protocol state, the hub's queue and the socket "
            "object.".format(
                idle["per_kb"], TARGET_IDLE_KB,
                " (measured separately in this run: {:.1f} KB per parked greenlet 20 frames deep)".format(g)
                if g else ""))
    return notes
