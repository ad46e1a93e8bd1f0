"""The report's plots (matplotlib, when it is installed)."""
import os

from bench.targets import MODES
from bench.targets import TARGET_ASKER_RATIO
from bench.targets import TARGET_CAPACITY_P99_MS
from bench.targets import TARGET_OBSERVER_RATIO


def make_plots(out_dir, bw, baseline, capacity, opts):
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    # Bandwidth: bytes / reply text, log scale, with the targets.
    fig, axes = plt.subplots(1, len(opts.sizes), figsize=(5.2 * len(opts.sizes), 4.2), squeeze=False)
    for ax, size in zip(axes[0], opts.sizes):
        rows = [r for r in bw if r["size"] == size]
        labels = [r["mode"] for r in rows]
        x = range(len(rows))
        width = 0.26
        obs = [max(r["observer_bytes"] or [0]) / r["text_bytes"] for r in rows]
        ask = [r["asker_bytes"] / r["text_bytes"] for r in rows]
        dbb = [r["statement_bytes"] / r["text_bytes"] for r in rows]
        ax.bar([i - width for i in x], ask, width, label="asker")
        ax.bar(list(x), obs, width, label="each observer")
        ax.bar([i + width for i in x], dbb, width, label="DB statements")
        ax.axhline(TARGET_OBSERVER_RATIO, color="C1", ls="--", lw=1, label="observer target 1.5×")
        ax.axhline(TARGET_ASKER_RATIO, color="C0", ls=":", lw=1, label="asker target 2×")
        ax.set_yscale("log")
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels)
        ax.set_title("{:,} tokens ({:,} B of text)".format(size, rows[0]["text_bytes"] if rows else 0))
        ax.set_ylabel("bytes per reply ÷ reply text bytes")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out_dir, "bench-bandwidth.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)

    # Latency CDFs.
    fig, ax = plt.subplots(figsize=(7, 4.2))
    series = [("direct read of the fake model", [v for vs in baseline.values() for v in vs])]
    for mode in MODES:
        rows = [r for r in bw if r["mode"] == mode]
        series.append(("asker, " + mode, [v for r in rows for v in r["asker_latency"]]))
    rows = [r for r in bw if r["mode"] == "append"]
    series.append(("observer (chunk commit →), append", [v for r in rows for v in r["observer_latency"]]))
    for label, values in series:
        values = sorted(v * 1000 for v in values if v is not None)
        if not values:
            continue
        values = [max(v, 1e-3) for v in values]
        ax.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of tokens / chunks")
    ax.set_title("One reply at a time, {} observers".format(opts.observers))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out_dir, "bench-latency.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)

    # Capacity.
    if capacity:
        fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4))
        ns = [r["n"] for r in capacity]
        ax1.plot(ns, [r["offered"] for r in capacity], "o--", label="offered")
        ax1.plot(ns, [r["sent_rate"] for r in capacity], "x:", label="written by the fake model")
        ax1.plot(ns, [r["steady"] or r["delivered"] for r in capacity], "o-", label="delivered")
        ax1.set_xlabel("concurrent replies")
        ax1.set_ylabel("tokens/s to askers")
        ax1.legend(fontsize=8)
        ax2.plot(ns, [r["p50"] for r in capacity], "o-", label="asker p50")
        ax2.plot(ns, [r["w_p99"] if r["w_p99"] is not None else r["p99"] for r in capacity], "o-",
                 label="asker p99 (sustained)")
        ax2.plot(ns, [r["p99"] for r in capacity], "o:", label="asker p99 (all tokens)")
        ax2.plot(ns, [r["obs_p99"] for r in capacity], "o-", label="observer p99 (from commit)")
        ax2.axhline(TARGET_CAPACITY_P99_MS, color="r", ls="--", lw=1, label="target 50 ms")
        ax2.set_yscale("log")
        ax2.set_xlabel("concurrent replies")
        ax2.set_ylabel("ms")
        ax2.legend(fontsize=8)
        ax3.plot(ns, [r["cpu"] for r in capacity], "o-", label="worker CPU %")
        ax3.plot(ns, [r["bench_cpu"] for r in capacity], "o--", label="load generator CPU %")
        ax3.plot(ns, [r["others_cpu"] for r in capacity], "x:", label="other processes CPU %")
        ax3.set_xlabel("concurrent replies")
        ax3.set_ylabel("% of one core")
        ax3b = ax3.twinx()
        ax3b.plot(ns, [r["rss_peak"] for r in capacity], "s:", color="C3", label="worker RSS (MB)")
        ax3b.set_ylabel("MB")
        ax3.legend(fontsize=8, loc="upper left")
        ax3b.legend(fontsize=8, loc="lower right")
        for ax in (ax1, ax2, ax3):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        path = os.path.join(out_dir, "bench-capacity.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files
