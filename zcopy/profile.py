"""Turn probe findings into the decisions ``serve --auto`` runs with.

The report (``build_report``) is the full JSON object ``zcopy probe --json``
prints: kernel identity, every finding, the NICs, the pipe facts and the
recommendation. ``recommend`` reads only the report, so a cached report
gives the same decisions as a fresh probe. Each decision carries one
sentence saying which finding it rests on.

The cache holds one report per kernel release, boot, NIC set and set of
probe modules: any of those changing (a reboot, a new kernel, an interface
or address added, a zcopy that probes something new) means the answers may
differ or be missing, so the key changes and the machine is probed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from zcopy.fsinfo import IN_MEMORY as IN_MEMORY_FS
from probes.kernel import read_text
from zcopy.units import format_size

MiB = 1024 * 1024
KiB = 1024
#: Pipes a server may hold at once: one per connection mid-splice. The pipe
#: size is chosen so this many fit in the per-user pipe budget.
EXPECTED_CONNECTIONS = 256
PIPE_CAP = MiB               # bigger pipes measured no faster and cost budget
MIN_PIPE = 64 * KiB          # the kernel's default pipe: never go below it
CHUNK = MiB                  # per-step budget for the mmap/read engines
#: Per-step budget for sendfile: nginx's sendfile_max_chunk. Against 1 MiB, 1 GiB pulls ran 2.6-3.6%
#: faster (pinned, same interleaved rounds) and a neighbour's 64 KiB GETs no slower (docs/benchmarks.md,
#: "Two MiB a sendfile step").
SENDFILE_STEP = 2 * MiB
#: A sendfile step while its transfer is the worker's only connection and nothing else waits
#: (``Connection._pump``, ``ListenerLoop.alone``): against 2 MiB steps, 1 GiB pulls ran 0.996-1.034x
#: as fast at 0.966-1.001x the CPU (four pinned A/B runs of 90-300 interleaved rounds; the last, of the
#: final code: 1.024 and 0.966). A connection that comes meanwhile waits for at most one
#: such step (~1.6 ms at 5 GB/s) before its first request is read; from then on the steps are
#: ``SENDFILE_STEP`` again (docs/benchmarks.md, "Lone steps").
LONE_STEP = 8 * MiB


@dataclass
class Profile:
    """What ``serve --auto`` runs with; ``reasons`` has one sentence per field."""

    download_engine: str = "read_send"    # "sendfile" | "splice" | "mmap_send" | "read_send"
    upload_engine: str = "recv_pwrite"    # "splice" | "recv_pwrite"
    relay_engine: str = "copy"            # "splice" | "copy" (``zcopy relay``: socket -> socket)
    pipe_size: int = MIN_PIPE
    chunk_size: int = CHUNK
    workers: int = 1
    prefetch: bool = True
    small_reply_max: int = 0              # bodies up to this many bytes leave in one send from memory
    notsent_lowat: int = 0                # TCP_NOTSENT_LOWAT on the listeners (0: the kernel's default)
    https: str = "user-space TLS"         # "kTLS" | "user-space TLS": how serve --tls-cert sends file bodies
    reasons: dict[str, str] = field(default_factory=dict)
    source: str = "probed now"            # "cache <path>" | "probed now"

    def to_json(self) -> dict:
        return asdict(self)


# --- report ---------------------------------------------------------------

def build_report(ctx, on_progress=None) -> dict:
    """Run every probe with ``ctx`` and assemble the report object."""
    from probes.runner import run_all

    findings = [f.to_json() for f in run_all(ctx, on_progress=on_progress)]
    report = {"kernel": kernel_identity(), "findings": findings,
              "nics": _nics(findings), "pipes": _pipes(findings)}
    report["recommendation"] = recommend(report).to_json()
    return report


def kernel_identity() -> dict:
    u = os.uname()
    return {"release": u.release, "version": u.version, "machine": u.machine,
            "boot_id": read_text("/proc/sys/kernel/random/boot_id")}


def _by_id(findings: list[dict]) -> dict[str, dict]:
    return {f["id"]: f for f in findings}


def _nics(findings: list[dict]) -> list[dict]:
    return [f["value"] for f in findings
            if f["id"].startswith("nic.") and f["id"] != "nic.egress" and isinstance(f["value"], dict)]


def _pipes(findings: list[dict]) -> dict:
    by_id = _by_id(findings)
    facts = dict((by_id.get("pipe.setpipe_sz") or {}).get("value") or {})
    tp = by_id.get("pipe.throughput") or {}
    measured = tp.get("value") if tp.get("status") == "ok" and isinstance(tp.get("value"), dict) else None
    facts["best_size"] = measured.get("best_size") if measured else None
    facts["throughput_gbps"] = measured.get("sizes") if measured else None
    return facts


# --- decisions ------------------------------------------------------------

def _ok(by_id: dict, fid: str) -> bool:
    return (by_id.get(fid) or {}).get("status") == "ok"


def _not_refused(by_id: dict, fid: str) -> bool:
    """True unless the finding says the kernel refused (skipped counts as not refused)."""
    return (by_id.get(fid) or {}).get("status") not in ("unsupported", "error")


def step_for(engine: str, pipe_size: int) -> tuple[int, str]:
    """(bytes, why): how much one connection's download engine may move per loop turn."""
    if engine == "splice":
        step = min(pipe_size, CHUNK)    # (--pipe-size takes up to 1 GiB: a turn must stay short)
        return step, f"one pipe-full per step, at most {CHUNK // KiB} KiB"
    if engine == "sendfile":
        return SENDFILE_STEP, (f"{SENDFILE_STEP // KiB} KiB per sendfile call, nginx's sendfile_max_chunk: 1 GiB "
                               "pulls measured 2.6-3.6% faster than with 1 MiB steps, a neighbour's GETs no slower")
    return CHUNK, (f"{CHUNK // KiB} KiB per step: a copying engine spends more CPU per byte, and a connection "
                   "yields to the others every millisecond or so at 10 Gb/s")


def lone_step_for(engine: str, step: int) -> int:
    """Bytes a transfer may move per step while its connection is the worker's only one and nothing
    else waits: ``LONE_STEP`` with sendfile; 0 (no longer step) otherwise: a pipe-full bounds a splice
    step, and the copying engines spend CPU per byte."""
    return LONE_STEP if engine == "sendfile" and LONE_STEP > step else 0


def recommend(report: dict) -> Profile:
    by_id = _by_id(report["findings"])
    p = Profile()
    p.download_engine, p.reasons["download_engine"] = _download(by_id)
    p.upload_engine, p.reasons["upload_engine"] = _upload(by_id)
    p.relay_engine, p.reasons["relay_engine"] = _relay(by_id)
    p.pipe_size, p.reasons["pipe_size"] = _pipe_size(by_id)
    p.chunk_size, p.reasons["chunk_size"] = step_for(p.download_engine, p.pipe_size)
    p.workers = len(os.sched_getaffinity(0))
    p.reasons["workers"] = f"one epoll worker per CPU this process may run on ({p.workers})"
    p.prefetch, p.reasons["prefetch"] = _prefetch(by_id)
    p.small_reply_max, p.reasons["small_reply_max"] = _small_reply_max(by_id)
    p.notsent_lowat, p.reasons["notsent_lowat"] = _notsent_lowat(by_id)
    p.https, p.reasons["https"] = https_path(by_id)
    return p


def https_path(by_id: dict) -> tuple[str, str]:
    """Which path HTTPS file bodies will take, and why, from the kTLS findings (``zcopy serve``
    still asks every socket: this is what it will find on this machine)."""
    ulp = by_id.get("ktls.ulp") or {}
    copy = "user-space TLS"
    tail = ": every body byte is read and encrypted in the process (read + SSL_write), no sendfile"
    if ulp.get("status") == "skipped":
        return copy, ("the kernel's tls module is not loaded and loading it needs root (`modprobe tls`)" + tail)
    if ulp.get("status") != "ok":
        detail = ulp.get("detail") or "the kTLS probe did not run"
        if "ENOENT" in detail:
            return copy, "the kernel has no tls module (TCP_ULP \"tls\": ENOENT)" + tail
        return copy, f"the kernel cannot do TLS records ({detail})" + tail
    openssl = by_id.get("ktls.openssl") or {}
    value = openssl.get("value") or {}
    cases = value.get("cases") or {}
    version = value.get("openssl", "this OpenSSL")
    if openssl.get("status") not in ("ok", "degraded"):
        return copy, f"the kernel has the tls module but {version} put no keys in it (built without kTLS?)" + tail
    if not (cases.get("TLSv1.3") or {}).get("tx"):
        offloaded = [label for label, r in cases.items() if r.get("tx")]
        return copy, (f"TLS 1.3 ({(cases.get('TLSv1.3') or {}).get('cipher')}) is not offloaded by this kernel; "
                      f"only {', '.join(offloaded)}: most clients will get user-space TLS")
    off = [f"{label} ({r.get('cipher')})" for label, r in cases.items() if not r.get("tx")]
    why = (f"kTLS: {version} puts the TX keys in the kernel after the handshake "
           f"({cases['TLSv1.3'].get('cipher')}), so file bodies leave with sendfile")
    if off:
        why += f"; cipher not offloadable here, so user-space TLS for clients that pick it: {', '.join(off)}"
    return "kTLS", why


def _download(by_id: dict) -> tuple[str, str]:
    fs = ((by_id.get("filesystem.type") or {}).get("value") or {}).get("type") or "the served filesystem"
    egress = by_id.get("nic.egress")
    tail = ""
    if egress and isinstance(egress.get("value"), dict) and egress["value"].get("name"):
        e = egress["value"]
        tail = f"; egress {e['name']}: {'zero-copy' if e.get('zero_copy_tx') else 'copies'} ({e.get('reason')})"
    if _ok(by_id, "sendfile.file_to_tcp") and _not_refused(by_id, "filesystem.sendfile"):
        return "sendfile", f"sendfile file -> TCP works, also from {fs}: one syscall, no user-space copy{tail}"
    if all(_ok(by_id, f) for f in ("splice.file_to_pipe", "splice.pipe_to_socket")) \
            and _not_refused(by_id, "filesystem.splice"):
        return "splice", f"sendfile failed here but splice file -> pipe -> socket works from {fs}{tail}"
    if _ok(by_id, "filesystem.mmap"):
        return "mmap_send", f"neither sendfile nor splice works from {fs}; mmap does, so send from the mapping"
    return "read_send", f"no zero-copy path works from {fs}: plain read + send"


def _upload(by_id: dict) -> tuple[str, str]:
    if _ok(by_id, "splice.socket_to_pipe") and _ok(by_id, "splice.pipe_to_file"):
        return "splice", "splice socket -> pipe and pipe -> file both work: uploads skip user space"
    bad = [f for f in ("splice.socket_to_pipe", "splice.pipe_to_file") if not _ok(by_id, f)]
    return "recv_pwrite", f"{', '.join(bad)} did not work, so uploads use recv + pwrite"


def _relay(by_id: dict) -> tuple[str, str]:
    """A relay needs both splice legs between TCP sockets, with the bytes intact."""
    legs = ("splice.socket_to_pipe", "splice.pipe_to_socket")
    if all(_ok(by_id, f) for f in legs):
        return "splice", "splice TCP socket -> pipe and pipe -> TCP socket both work: relayed bytes stay in the kernel"
    bad = [f"{f}: {(by_id.get(f) or {}).get('detail') or 'not reported'}" for f in legs if not _ok(by_id, f)]
    return "copy", f"{'; '.join(bad)}; so relayed bytes are copied (recv_into + send)"


def _pipe_size(by_id: dict) -> tuple[int, str]:
    """The measured best size if pipe_throughput ran; otherwise the largest
    power of two the per-user pipe budget allows for EXPECTED_CONNECTIONS."""
    from probes.pipes import budget_pipes

    facts = (by_id.get("pipe.setpipe_sz") or {}).get("value") or {}
    soft = facts.get("user_pages_soft")
    exempt = facts.get("root_exempt", False)
    tp = by_id.get("pipe.throughput") or {}
    value = tp.get("value") if isinstance(tp.get("value"), dict) else {}
    if tp.get("status") == "ok" and value.get("best_size"):
        best = int(value["best_size"])
        n = budget_pipes(best, soft)
        budget = "" if exempt or n is None else f"; the soft pipe budget holds {n} such pipes"
        return best, (f"pipe.throughput measured {best // KiB} KiB as the smallest pipe within a few percent "
                      f"of the best splice throughput{budget}")
    failed = by_id.get("pipe_throughput.probe")
    why_missing = {"skipped": "was skipped (quick mode)",
                   None: f"did not run ({failed['detail']})" if failed else "did not run"}.get(
        tp.get("status"), f"ended with status {tp.get('status')}")
    cap = min(PIPE_CAP, facts.get("largest_granted") or facts.get("max_size") or PIPE_CAP)
    if exempt or not soft:
        why = "root is exempt from pipe-user-pages-soft" if exempt else "pipe-user-pages-soft is 0 (no budget)"
        return cap, (f"pipe.throughput {why_missing}; {why}, so the largest size F_SETPIPE_SZ grants, "
                     f"capped at {PIPE_CAP // KiB} KiB: {cap // KiB} KiB")
    size = cap
    while size > MIN_PIPE and (budget_pipes(size, soft) or 0) < EXPECTED_CONNECTIONS:
        size //= 2
    return size, (f"pipe.throughput {why_missing}; {size // KiB} KiB is the largest size for which "
                  f"pipe-user-pages-soft ({soft} pages) holds {EXPECTED_CONNECTIONS} connections' pipes "
                  f"(capped at {cap // KiB} KiB)")


def _small_reply_max(by_id: dict) -> tuple[int, str]:
    """The largest body that leaves faster in one send from a buffer in memory than as head + sendfile,
    as small_reply.crossover measured it; 0 (always head + sendfile) when it was not measured."""
    finding = by_id.get("small_reply.crossover") or by_id.get("small_reply.probe") or {}
    value = finding.get("value") if isinstance(finding.get("value"), dict) else {}
    if finding.get("status") != "ok" or not isinstance(value.get("small_reply_max"), int):
        why = finding.get("detail") or "it did not run"
        return 0, f"small_reply.crossover measured nothing ({why}), so every body goes as head + sendfile"
    limit, largest = value["small_reply_max"], value.get("largest_measured")
    sizes = value.get("sizes") or {}
    if limit == 0:
        first = sizes.get(min(sizes, key=int)) if sizes else None
        at = (f" (at {format_size(int(min(sizes, key=int)))}: {first['copy_us']:.1f} against {first['sendfile_us']:.1f} µs)"
              if first else "")
        return 0, f"one copying send was never faster than send(head, MSG_MORE) + sendfile here{at}, so no body is copied"
    here = sizes.get(str(limit)) or {}
    tail = (f"; it still won at {format_size(limit)}, the largest size measured" if limit == largest else
            f"; above {format_size(limit)} sendfile was faster")
    return limit, (f"small_reply.crossover: one send of head + body from memory beat send(head, MSG_MORE) + "
                   f"sendfile for every body up to {format_size(limit)} ({here.get('copy_us', 0):.1f} against "
                   f"{here.get('sendfile_us', 0):.1f} µs per reply there){tail}")


def _notsent_lowat(by_id: dict) -> tuple[int, str]:
    """The cap on a socket's unsent bytes that notsent_lowat.rates found made large transfers faster by
    more than its margin; 0 (the kernel's default) when none did or it was not measured."""
    finding = by_id.get("notsent_lowat.rates") or {}
    value = finding.get("value") if isinstance(finding.get("value"), dict) else {}
    rates = value.get("rates") or {}
    if finding.get("status") != "ok" or not isinstance(value.get("notsent_lowat"), int) or "0" not in rates:
        why = finding.get("detail") or "it did not run"
        return 0, f"notsent_lowat.rates measured nothing ({why}), so the kernel's default holds"
    limit, none = value["notsent_lowat"], rates["0"]
    if limit == 0:
        best = max((int(k) for k in rates if k != "0"), key=lambda k: rates[str(k)], default=0)
        at = f" (best {format_size(best)}: {rates[str(best)]:.2f} against {none:.2f} GB/s)" if best else ""
        return 0, f"no cap on unsent bytes made large loopback transfers clearly faster{at}, so the kernel's default holds"
    return limit, (f"notsent_lowat.rates: with at most {format_size(limit)} unsent, large loopback transfers ran "
                   f"{rates[str(limit)]:.2f} GB/s against {none:.2f} with the kernel's default (medians)")


def _prefetch(by_id: dict) -> tuple[bool, str]:
    value = (by_id.get("filesystem.type") or {}).get("value") or {}
    return prefetch_choice("the served path", value.get("type"), value.get("mounts_below") or [])


def prefetch_choice(where: str, fs: str | None, below) -> tuple[bool, str]:
    """Prefetch on unless ``where`` and every filesystem mounted below it keep
    their pages in memory (``below``: (mount point, type) pairs)."""
    if fs in IN_MEMORY_FS:
        disks = [f"{point} ({kind})" for point, kind in below if kind not in IN_MEMORY_FS]
        if not disks:
            return False, f"{where} is on {fs}: its pages are always in memory, nothing to prefetch"
        return True, (f"{where} is on {fs}, but {disks[0]} is mounted below it: reads there may miss "
                      "the page cache, so read ahead off the event loop")
    return True, (f"{where} is on {fs or 'an unknown filesystem'}: reads may miss the page cache, "
                  "so read ahead off the event loop")


# --- cache ----------------------------------------------------------------

def cache_dir() -> Path:
    """$XDG_CACHE_HOME/zcopy, or ~/.cache/zcopy."""
    from zcopy.xdg import folder

    return Path(folder("XDG_CACHE_HOME"))


def cache_key() -> str:
    """Kernel release + boot id + the sorted NIC names and addresses + the probe modules, hashed (a
    zcopy with a new probe measures again: a report without its finding would decide without it)."""
    from pyroute2 import IPRoute

    from probes.runner import MODULES

    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        parts = [f"{names[link['index']]}/{link.get_attr('IFLA_ADDRESS')}" for link in ipr.get_links()]
        parts += [f"{names.get(a['index'], a['index'])}/{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                  for a in ipr.get_addr()]
    ident = kernel_identity()
    text = "\n".join([ident["release"], ident["boot_id"] or "", *sorted(parts), *MODULES])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_path() -> Path:
    return cache_dir() / f"probe-{cache_key()}.json"


def save(report: dict) -> Path:
    """Write the report atomically to the cache file for this kernel/boot/NIC set."""
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".probe-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(report, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def load_cached() -> dict | None:
    """The cached report for this kernel/boot/NIC set, or None (missing or unreadable)."""
    try:
        with open(cache_path()) as f:
            report = json.load(f)
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and "findings" in report else None


def load_or_probe(path: str = ".", quick: bool = True) -> Profile:
    """The profile for serving ``path``: from the cache when it matches this
    machine, else by probing now. The filesystem findings are re-probed when
    the cached report was made for a path on another filesystem (a few ms)."""
    from probes.runner import Context, run_module

    report = load_cached()
    if report is None:
        return recommend(build_report(Context(path=path, quick=quick)))
    fs = (_by_id(report["findings"]).get("filesystem.type") or {}).get("value") or {}
    try:
        same_fs = fs.get("dev") == os.stat(path).st_dev
    except OSError:
        same_fs = False
    if not same_fs:
        fresh = [f.to_json() for f in run_module("filesystem", Context(path=path, quick=quick))]
        report = dict(report, findings=[f for f in report["findings"] if not f["id"].startswith("filesystem.")]
                      + fresh)
    profile = recommend(report)
    profile.source = f"cache {cache_path()}"
    return profile
