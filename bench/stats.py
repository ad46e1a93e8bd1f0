"""Percentiles, sustained windows, and how numbers are written."""


def pct(values, p):
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def ms(seconds):
    return None if seconds is None else seconds * 1000.0


def sustained_window(intervals, fraction=0.9):
    """[(start, end)] periods during which at least ``fraction`` of the
    ``intervals`` (one per reply: first to last token received) overlap."""
    need = max(1, int(len(intervals) * fraction + 0.9999))
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    periods, active, since = [], 0, None
    for t, step in events:
        active += step
        if active >= need and since is None:
            since = t
        elif active < need and since is not None:
            periods.append((since, t))
            since = None
    return periods


def fmt_int(v):
    return "–" if v is None else "{:,}".format(int(round(v)))


def fmt(v, digits=2):
    return "–" if v is None else "{:,.{}f}".format(v, digits)
