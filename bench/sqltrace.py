"""The server's SQL write log (see sitecustomize.py): each write, and when it
was committed."""
import json
import re

_WRITE_RE = re.compile(r'^\s*(INSERT(?:\s+OR\s+\w+)?\s+INTO|UPDATE|DELETE\s+FROM|REPLACE\s+INTO)\s+"?(\w+)"?', re.I)
_INSERT_RE = re.compile(r'^\s*INSERT\s+INTO\s+"?\w+"?\s*\(([^)]*)\)\s*VALUES\s*\((.*)\)\s*$', re.S | re.I)
_BARE_RE = re.compile(r"[^,\s]+")


def _quoted(text, i):
    """The SQL string literal that opens at ``text[i]``, unquoted (``''`` is a
    quote), and the index just past its closing quote."""
    parts, j, n = [], i + 1, len(text)
    while True:
        k = text.index("'", j)
        parts.append(text[j:k])
        if k + 1 < n and text[k + 1] == "'":
            parts.append("'")
            j = k + 2
            continue
        return "".join(parts), k + 1


def sql_literals(text):
    """The values of a VALUES list / SET clause: strings unquoted, others raw."""
    values, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == "'":
            value, i = _quoted(text, i)
            values.append(value)
        elif c in ", \n\t":
            i += 1
        else:
            m = _BARE_RE.match(text, i)
            values.append(m.group())
            i = m.end()
    return values


def string_literal_bytes(sql):
    """UTF-8 bytes of every quoted string value in an expanded statement."""
    total, i = 0, 0
    while True:
        i = sql.find("'", i)
        if i < 0:
            return total
        value, i = _quoted(sql, i)
        total += len(value.encode("utf-8"))


class Write:
    __slots__ = ("t", "conn", "sql", "verb", "table", "commit_t", "columns")

    def __init__(self, t, conn, sql):
        self.t, self.conn, self.sql = t, conn, sql
        m = _WRITE_RE.match(sql)
        self.verb = m.group(1).split()[0].upper() if m else sql.split()[0].upper()
        self.table = m.group(2).lower() if m else "?"
        self.commit_t = t
        self.columns = None
        if self.verb == "INSERT":
            ins = _INSERT_RE.match(sql)
            if ins:
                names = [c.strip().strip('"') for c in ins.group(1).split(",")]
                try:
                    self.columns = dict(zip(names, sql_literals(ins.group(2))))
                except ValueError:
                    self.columns = None


class Trace:
    """Reads the server's SQL write log incrementally; knows each write's commit time."""

    def __init__(self, path):
        self.path = path
        self.pos = 0
        self.writes = []
        self._open = {}  # connection -> writes of its open transaction

    def load(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return self
        end = data.rfind(b"\n") + 1
        self.pos += end
        for line in data[:end].splitlines():
            t, conn, sql = json.loads(line)
            if sql == "BEGIN":
                self._open[conn] = []
            elif sql in ("COMMIT", "ROLLBACK"):
                for w in self._open.pop(conn, []):
                    w.commit_t = t
            else:
                w = Write(t, conn, sql)
                if conn in self._open:
                    self._open[conn].append(w)
                self.writes.append(w)
        return self

    def between(self, t0, t1):
        """The writes from ``t0`` to ``t1`` but those of who is in the room
        (the sockets' own, as pages come and go) and of the process's
        heartbeat (its worker row): never a reply's."""
        return [w for w in self.writes if t0 <= w.t <= t1 and w.table not in ("presence", "worker")]

    def chunk_commits(self):
        """{(message id, seq): commit time} of every chunk INSERT seen so far."""
        out = {}
        for w in self.writes:
            if w.verb == "INSERT" and w.table == "chunk" and w.columns:
                try:
                    out[(int(w.columns["message_id"]), int(w.columns["seq"]))] = w.commit_t
                except (KeyError, ValueError):
                    pass
        return out
