"""CPU time, memory and file descriptors of processes (from /proc), and the
worker's sampling profile (written by sitecustomize.py)."""
import json
import os
import resource
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
LOAD_PIDS = []  # the benchmark's child processes, counted with it as the load generator


def proc_stat(pid):
    """(ppid, utime+stime in seconds) of a process from /proc."""
    with open("/proc/{}/stat".format(pid)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kb(pid):
    with open("/proc/{}/status".format(pid)) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_fds(pid):
    try:
        return len(os.listdir("/proc/{}/fd".format(pid)))
    except OSError:
        return None


def machine_busy():
    """CPU seconds all cores of the machine spent busy so far (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class CpuMeter:
    """Samples, five times a second: the worker's CPU time and RSS (from /proc),
    this process's CPU time, and the whole machine's busy CPU time."""

    def __init__(self, server, interval=0.2):
        self.server = server
        self.interval = interval
        self.samples = []  # (t, worker cpu s, this process cpu s, machine busy s, worker rss KB)
        self._stop = threading.Event()

    def _take(self):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        load = usage.ru_utime + usage.ru_stime
        for pid in LOAD_PIDS:  # the fake model's and the clients' processes
            try:
                load += proc_stat(pid)[1]
            except OSError:
                pass
        self.samples.append((time.monotonic(), self.server.cpu(), load, machine_busy(), self.server.rss_kb()))

    def __enter__(self):
        self._take()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            try:
                self._take()
            except OSError:
                return

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(2)
        self._take()
        self.rss_end = self.samples[-1][4]
        self.rss_peak = max(s[4] for s in self.samples)

    def rates(self, t0=None, t1=None):
        """% of one core used by the worker, by this process and by everything
        else on the machine between the samples nearest to t0 and t1."""
        samples = self.samples
        a = samples[0] if t0 is None else min(samples, key=lambda s: abs(s[0] - t0))
        b = samples[-1] if t1 is None else min(samples, key=lambda s: abs(s[0] - t1))
        wall = b[0] - a[0]
        if wall <= 0:
            return None
        worker, me, machine = (b[1] - a[1]) / wall, (b[2] - a[2]) / wall, (b[3] - a[3]) / wall
        return dict(worker=100 * worker, me=100 * me, others=100 * max(0.0, machine - worker - me),
                    wall=wall)


def read_profile(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def profile_delta(before, after):
    """Samples per key between two cumulative profiles of the worker."""
    if not after:
        return None
    before = before or {"app": {}, "lib": {}, "samples": 0}
    out = {"samples": after["samples"] - before["samples"], "interval": after.get("interval", 0.002)}
    for kind in ("app", "lib"):
        out[kind] = {k: v - before[kind].get(k, 0) for k, v in after[kind].items()}
    return out
