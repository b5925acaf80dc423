"""An aggregated snapshot in the Prometheus text exposition format (0.0.4).

Same numbers as ``zcopy top --json``, renamed by Prometheus conventions:
counters end in ``_total``, byte counts in ``_bytes``. Latency histograms
carry cumulative ``_bucket`` samples ending in ``le="+Inf"``, ``_sum`` and
``_count``. Every family has its HELP and TYPE lines, even one with no
sample yet (no error so far).
"""

from __future__ import annotations


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + body + "}"


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(snap: dict) -> str:
    kind = snap.get("kind", "serve")
    lines: list[str] = []

    def metric(name: str, mtype: str, help_: str, samples) -> None:
        full = f"zcopy_{name}"
        lines.append(f"# HELP {full} {help_}")
        lines.append(f"# TYPE {full} {mtype}")
        for labels, value, suffix in samples:
            lines.append(f"{full}{suffix}{_labels(**labels)} {value}")

    base = {"kind": kind}
    metric("requests_total", "counter", "Requests answered, by status class.",
           [({**base, "status": cls}, n, "") for cls, n in sorted((snap.get("status") or {}).items())]
           or [(base, snap.get("requests", 0), "")])
    metric("requests_by_method_total", "counter", "Requests answered, by method.",
           [({**base, "method": m}, n, "") for m, n in sorted((snap.get("methods") or {}).items())])
    engines = sorted((snap.get("engines") or {}).items())
    metric("sent_bytes_total", "counter", "Bytes written to sockets, by engine (copy: plain send).",
           [({**base, "engine": n, "zero_copy": str(bool(e.get("zero_copy"))).lower()}, e.get("bytes_sent", 0), "")
            for n, e in engines])
    metric("received_bytes_total", "counter", "Bytes read from sockets, by engine (copy: plain recv).",
           [({**base, "engine": n}, e.get("bytes_received", 0), "") for n, e in engines])
    metric("syscalls_total", "counter", "Transfer syscalls made by each engine.",
           [({**base, "engine": n}, e["syscalls"], "") for n, e in engines if "syscalls" in e])
    conns = snap.get("connections") or {}
    metric("connections_accepted_total", "counter", "Connections accepted.", [(base, conns.get("accepted", 0), "")])
    metric("connections_closed_total", "counter", "Connections closed.", [(base, conns.get("closed", 0), "")])
    metric("connections_active", "gauge", "Connections open now.", [(base, conns.get("active", 0), "")])
    metric("errors_total", "counter", "Errors by kind (client_reset, send_timeout, file_changed, EMFILE...).",
           [({**base, "error": k}, v, "") for k, v in sorted((snap.get("errors") or {}).items())])
    metric("inflight_transfers", "gauge", "Bodies being sent or received now.",
           [(base, snap.get("inflight_count", len(snap.get("inflight") or [])), "")])
    metric("workers", "gauge", "Workers publishing snapshots.", [(base, len(snap.get("workers") or []), "")])
    metric("start_time_seconds", "gauge", "When the oldest worker started (Unix time).",
           [(base, snap.get("started", 0), "")])
    lat = snap.get("latency") or {}
    bounds = lat.get("bounds") or []
    for key, help_ in (("ttfb", "Request head parsed to response head queued."),
                       ("ttlb", "Request head parsed to last response byte handed to the kernel.")):
        counts = lat.get(key)
        if not counts:
            continue
        samples, running = [], 0
        for bound, n in zip([*bounds, "+Inf"], counts):
            running += n
            samples.append(({**base, "le": bound if bound == "+Inf" else f"{bound:g}"}, running, "_bucket"))
        samples.append((base, lat.get(f"{key}_sum", 0.0), "_sum"))
        samples.append((base, running, "_count"))
        metric(f"{key}_seconds", "histogram", help_, samples)
    return "\n".join(lines) + "\n"
