"""What the dashboard derives from successive snapshots: rates and history.

Workers publish once a second, each at its own phase, so a rate is taken
between two aggregated snapshots by their ``published`` times over a window
of about two seconds, never per reader refresh (that would flicker between
zero and double). Counters can go backwards when a worker is restarted (its
replacement starts at zero): a negative delta counts as "no data", not as a
negative rate.
"""

from __future__ import annotations

from collections import deque

from zcopy.stats.inflight import RATE_WINDOW   # "now" rates: the same window as a transfer's

#: Seconds of history kept for the sparklines.
HISTORY_SECONDS = 60
SPARK = "▁▂▃▄▅▆▇█"


def figures(snap: dict) -> dict[str, float]:
    """The counters the dashboard turns into rates, flattened."""
    out = {"sent": snap.get("bytes_sent", 0), "received": snap.get("bytes_received", 0),
           "requests": snap.get("requests", 0)}
    for name, e in (snap.get("engines") or {}).items():
        out[f"sent:{name}"] = e.get("bytes_sent", 0)
        out[f"received:{name}"] = e.get("bytes_received", 0)
    for cls, n in (snap.get("status") or {}).items():
        out[f"status:{cls}"] = n
    tls = snap.get("tls")
    if tls:     # an HTTPS server: what the kernel encrypted (kTLS) and what OpenSSL did here
        out["sent:tls:ktls"] = tls.get("ktls_bytes_sent", 0)
        out["sent:tls:user"] = tls.get("user_bytes_sent", 0)
        out["received:tls:user"] = tls.get("user_bytes_received", 0)
    return out


class History:
    """Aggregated snapshots in time order (deduplicated by publish time)."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, dict[str, float]]] = deque()
        self.latest: dict | None = None

    def add(self, snap: dict) -> None:
        self.latest = snap
        when = snap.get("published", 0.0)
        if self.samples and when <= self.samples[-1][0]:
            return
        self.samples.append((when, figures(snap)))
        while self.samples and when - self.samples[0][0] > HISTORY_SECONDS + RATE_WINDOW:
            self.samples.popleft()

    def reset(self) -> None:
        self.samples.clear()
        self.latest = None

    def rate(self, key: str) -> float:
        """Per-second rate of ``key`` over the last ``RATE_WINDOW`` seconds."""
        if len(self.samples) < 2:
            return 0.0
        t1, last = self.samples[-1]
        for t0, first in reversed(self.samples):
            if t1 - t0 >= RATE_WINDOW:
                break
        if t1 <= t0:
            return 0.0
        delta = last.get(key, 0) - first.get(key, 0)
        return max(delta, 0) / (t1 - t0)

    def series(self, key: str, seconds: int = HISTORY_SECONDS) -> list[float]:
        """Per-second rates between consecutive samples, oldest first."""
        out = []
        pairs = list(self.samples)[-(seconds + 1):]
        for (t0, a), (t1, b) in zip(pairs, pairs[1:]):
            out.append(max(b.get(key, 0) - a.get(key, 0), 0) / (t1 - t0) if t1 > t0 else 0.0)
        return out


def sparkline(values: list[float], width: int, seconds: int = HISTORY_SECONDS) -> str:
    """The last ``seconds`` of per-second ``values`` (oldest first) in
    ``width`` Unicode blocks scaled to the largest; each block is the mean of
    ``seconds / width`` seconds, so the line always spans the same time
    whatever the terminal's width. Time not yet seen is blank on the left."""
    values = values[-seconds:]
    per = max(seconds / max(width, 1), 1.0)
    bins = [values[max(int(len(values) - (i + 1) * per), 0):int(len(values) - i * per)]
            for i in range(min(width, int(len(values) / per + 0.999)))][::-1]
    means = [sum(b) / len(b) for b in bins if b]
    top = max(means, default=0)
    if top <= 0:
        return " " * (width - len(means)) + SPARK[0] * len(means)
    chars = [SPARK[min(int(v / top * (len(SPARK) - 1) + 0.5), len(SPARK) - 1)] for v in means]
    return " " * (width - len(chars)) + "".join(chars)


def percentile(bounds: list[float], counts: list[int], q: float) -> float | None:
    """Upper bound of the bucket holding quantile ``q`` (None: no samples;
    ``inf`` when it lies above the last bound). Histogram estimates are upper
    bounds: "p99 <= 5 ms"."""
    total = sum(counts)
    if not total:
        return None
    need = q * total
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= need and n:
            return bounds[i] if i < len(bounds) else float("inf")
    return float("inf")


def zero_copy_share(snap: dict) -> float | None:
    """Fraction of bytes sent by zero-copy engines (None before any byte)."""
    engines = snap.get("engines") or {}
    total = sum(e.get("bytes_sent", 0) for e in engines.values())
    if not total:
        return None
    return sum(e.get("bytes_sent", 0) for e in engines.values() if e.get("zero_copy")) / total


SORTS = ("rate", "progress", "remaining", "client")


def sort_transfers(transfers: list[dict], key: str) -> list[dict]:
    if key == "progress":
        return sorted(transfers, key=lambda t: t["done"] / t["total"] if t.get("total") else 0, reverse=True)
    if key == "remaining":
        return sorted(transfers, key=lambda t: (t.get("total") or 0) - t["done"], reverse=True)
    if key == "client":
        return sorted(transfers, key=lambda t: t.get("client", ""))
    return sorted(transfers, key=lambda t: t.get("rate", 0), reverse=True)
