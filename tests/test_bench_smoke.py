"""The benchmark command runs end to end (``python -m bench.run --quick``) and its
report says what it must: all three fan-out modes measured in one run, and this
design's observers receiving fewer bytes than the whole-message baseline's."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("append", "whole-per-chunk", "whole-per-token")


def bandwidth_rows(report):
    """{(mode, tokens): {column: cell}} from the report's bandwidth table."""
    section = report.split("## 1. Bandwidth per reply", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    rows = {}
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(header):
            break
        row = dict(zip(header, cells))
        rows[(row["Mode"], int(row["Tokens"].replace(",", "")))] = row
    return rows


def number(cell):
    return float(re.sub(r"[^\d.]", "", cell))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("bench")
    out = out_dir / "benchmarks.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, "bench failed:\n{}\n{}".format(proc.stdout[-3000:], proc.stderr[-5000:])
    return out_dir, out


def test_quick_bench_writes_report_with_all_modes(quick_run):
    out_dir, out = quick_run
    assert out.exists()
    report = out.read_text()
    rows = bandwidth_rows(report)
    sizes = sorted({size for _, size in rows})
    assert sizes, "no rows in the bandwidth table"
    for size in sizes:
        for mode in MODES:
            assert (mode, size) in rows, "bandwidth table lacks {} at {} tokens".format(mode, size)
    for key, row in rows.items():
        assert number(row["Reply text B"]) > 0 and number(row["Asker B"]) > 0, key
        assert number(row["Observer B (each)"]) > 0, key


def test_append_observers_get_fewer_bytes_than_whole_messages(quick_run):
    _, out = quick_run
    rows = bandwidth_rows(out.read_text())
    for size in sorted({size for _, size in rows}):
        append = number(rows[("append", size)]["Observer B (each)"])
        whole_chunk = number(rows[("whole-per-chunk", size)]["Observer B (each)"])
        whole_token = number(rows[("whole-per-token", size)]["Observer B (each)"])
        assert append < whole_chunk < whole_token, (size, append, whole_chunk, whole_token)
        # Linear, not quadratic: the DB sees about one statement per chunk, not per token.
        append_statements = number(rows[("append", size)]["DB statements"])
        token_statements = number(rows[("whole-per-token", size)]["DB statements"])
        assert append_statements < token_statements / 3, (size, append_statements, token_statements)


def test_quick_bench_draws_plots(quick_run):
    pytest.importorskip("matplotlib")
    out_dir, out = quick_run
    report = out.read_text()
    for name in ("bench-bandwidth.png", "bench-latency.png", "bench-capacity.png"):
        path = out_dir / name
        assert path.exists() and path.stat().st_size > 5000, name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert "({})".format(name) in report, "the report does not show " + name


def test_quick_bench_measures_the_author_streams_frame(quick_run):
    _, out = quick_run
    section = out.read_text().split("### Bytes against latency", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| 0")]
    assert rows, "no STREAM_FRAME_TIME row"
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert number(cells[2]) > 1 and number(cells[3]) > 0, cells  # asker ÷ text, token events
