"""Copy a file into a local socket with every method and compare the cost.

Methods: zcopy's four send engines (read_send, mmap_send, sendfile, splice
at the measured pipe size) and the Python conveniences shutil.copyfileobj
and socket.sendfile. The reader is a separate process that splices to
/dev/null. Methods are interleaved across runs and medians reported, with
time relative to read_send = 100%, next to the published C/Rust table
(1 GiB, SSD -> Unix socket, E5-2680v4, KVM). See docs/zero-copy.md.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile

HELP = "time each copy method (engines and Python APIs) into a local socket"

#: The published table being reproduced: method -> (analogue, milliseconds, relative %).
PUBLISHED = {
    "read_send": ("C read/send", 907, 100.0),
    "mmap_send": ("C mmap/send", 266, 29.3),
    "sendfile": ("C sendfile", 131, 14.4),
    "splice": ("C splice through a pipe", 158, 17.4),
    "shutil.copyfileobj": ("Rust std::io::copy", 577, 63.6),
    "socket.sendfile": ("Rust nix sendfile64", 575, 63.4),
}
ENGINE_METHODS = ("read_send", "mmap_send", "sendfile", "splice")
PYTHON_METHODS = ("shutil.copyfileobj", "socket.sendfile")
#: The pipe-size sweep uses at most this much of the bench file.
SWEEP_SIZE = 64 << 20
SWEEP_RUNS = 3


def positive_size(text: str) -> int:
    """argparse type: a byte size of at least one byte."""
    import argparse

    from zcopy.cli import size_arg

    size = size_arg(text)
    if size <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte: {text!r}")
    return size


def configure(p) -> None:
    from zcopy.cli import positive_int

    p.add_argument("--size", type=positive_size, default=1 << 30, help="file size (default: 1GiB)")
    p.add_argument("--runs", type=positive_int, default=5, help="runs per method; medians are reported (default: 5)")
    p.add_argument("--target", choices=("unix", "tcp"), default="unix",
                   help="Unix stream socket pair or TCP over 127.0.0.1 (default: unix)")
    p.add_argument("--cold", action="store_true",
                   help="evict the file from the page cache before every run (default: warm cache)")
    p.add_argument("--pipe-size", type=positive_size, metavar="SIZE",
                   help="pipe size for splice (default: measured now, as the pipe.throughput probe does)")
    p.add_argument("--dir", default=None, help="where to create the test file (default: $TMPDIR or /tmp)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object")
    out.add_argument("--markdown", action="store_true", help="print a Markdown table (for docs)")


def run(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from zcopy.measure import PIPE_SIZES, SampleFileError

    directory = args.dir or tempfile.gettempdir()
    if not os.path.isdir(directory):
        sys.stderr.write(f"zcopy bench: error: --dir {directory!r} is not a directory\n")
        return 2
    sweep = args.pipe_size is None
    names = ENGINE_METHODS + PYTHON_METHODS
    total = args.runs * len(names) + (SWEEP_RUNS * len(PIPE_SIZES) if sweep else 0)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        console = Console(stderr=True)  # a bar only on a terminal: no stray newline in a log
        with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task("writing test file", total=total)
            report = measure_all(args, directory, sweep,
                                 on_step=lambda label: bar.update(task, description=label),
                                 on_sample=lambda name, sample: bar.advance(task))
    except SampleFileError as exc:  # --size/--dir do not fit this machine
        sys.stderr.write(f"zcopy bench: error: {exc.strerror}\n")
        return 2
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    elif args.markdown:
        print(markdown_table(report))
    else:
        print_table(report)
    return 0


def measure_all(args, directory: str, sweep: bool, on_step, on_sample) -> dict:
    """Write the file, pick the pipe size, time every method; the JSON report."""
    from zcopy import measure
    from zcopy.engines import create
    from zcopy.pipes import PipePool

    with measure.temp_file(args.size, directory) as fd:
        pipe_size = args.pipe_size
        if sweep:
            on_step("measuring pipe sizes")
            gbps = measure.pipe_size_sweep(fd, min(args.size, SWEEP_SIZE), SWEEP_RUNS,
                                           target=args.target, on_sample=on_sample)
            pipe_size = measure.pick_pipe_size(gbps)
        cache, before_each = cache_policy(args.cold, directory, fd, args.size)
        pool = PipePool(pipe_size, max_idle=1)
        engines = [create(name, pipe_pool=pool) for name in ENGINE_METHODS]
        try:
            granted = pipe_granted(pool)
            methods = {e.name: measure.engine_copier(e) for e in engines}
            methods["shutil.copyfileobj"] = measure.shutil_copyfileobj
            methods["socket.sendfile"] = measure.socket_sendfile
            on_step(f"{args.runs} run(s) x {len(methods)} methods")
            results = measure.run_interleaved(methods, fd, args.size, args.runs, target=args.target,
                                              before_each=before_each, on_sample=on_sample)
        finally:
            for engine in engines:
                engine.close()
            pool.close()
    base = results["read_send"].seconds
    source = "measured" if sweep else "--pipe-size"
    if granted != pipe_size:
        from zcopy.units import format_size
        source += f" {format_size(pipe_size)}, the kernel gave {format_size(granted)}"
    return {
        "methods": [{"method": name, "seconds": round(s.seconds, 6), "gbps": round(s.gbps, 3),
                     "cpu_s": round(s.cpu_s, 6), "relative": round(100 * s.seconds / base, 1)}
                    for name, s in results.items()],
        "size": args.size,
        "runs": args.runs,
        # How and where it ran; the splice row used pipes of ``pipe_size`` bytes.
        "machine": {**machine(directory), "target": args.target, "cache": cache,
                    "pipe_size": granted, "pipe_size_source": source},
    }


def pipe_granted(pool) -> int:
    """The size the kernel really gives the pool's pipes (F_SETPIPE_SZ rounds
    up to a power-of-two number of pages, and refuses above pipe-max-size
    without CAP_SYS_RESOURCE, leaving the 64 KiB default)."""
    pipe = pool.acquire()
    try:
        return pipe.size
    finally:
        pool.release(pipe)


def cache_policy(cold: bool, directory: str, fd: int, size: int):
    """(description, hook run before each sample) for warm or cold cache.

    ``--cold`` is checked, not assumed: after the first eviction the first
    and the middle page must be out of the cache (``measure.is_cached``),
    else the report says the runs were warm and why.
    """
    from zcopy import measure

    if not cold:
        return "warm", None
    fstype = measure.filesystem_type(directory)
    if fstype in ("tmpfs", "ramfs"):
        return f"warm (--cold not possible: {directory} is on {fstype}, its pages are the file)", None
    try:
        evicted = measure.evict(fd, (0, size // 2))
    except OSError as exc:
        return f"warm (--cold not possible: posix_fadvise failed: {exc.strerror})", None
    if evicted is False:
        return (f"warm (--cold not possible: {fstype} kept the pages cached after "
                f"posix_fadvise DONTNEED)"), None
    checked = "" if evicted else f", unverified: {fstype} has no RWF_NOWAIT"
    return f"cold (posix_fadvise DONTNEED before every run{checked})", lambda: measure.drop_cached_pages(fd)


def machine(directory: str) -> dict:
    from zcopy.measure import filesystem_type

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "filesystem": filesystem_type(directory)}


def _rows(report: dict) -> list[list[str]]:
    rows = []
    for m in report["methods"]:
        analogue, ms, rel = PUBLISHED[m["method"]]
        rows.append([m["method"], f"{m['seconds'] * 1000:.1f}", f"{m['gbps']:.2f}", f"{m['cpu_s'] * 1000:.1f}",
                     f"{m['relative']:.1f}%", f"{analogue}: {ms} ms ({rel}%)"])
    return rows


HEADERS = ["method", "ms", "GB/s", "CPU ms", "relative", "published (1 GiB, E5-2680v4)"]


def _caption(report: dict) -> str:
    from zcopy.units import format_size

    m = report["machine"]
    return (f"{format_size(report['size'])} -> {m['target']} socket, median of {report['runs']}, "
            f"{m['cache']} cache, pipe {format_size(m['pipe_size'])} ({m['pipe_size_source']}); "
            f"{m['cpu']} x{m['cpus']}, Linux {m['kernel']}, Python {m['python']}, {m['filesystem']}")


def markdown_table(report: dict) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(report)]
    return "\n".join(lines) + f"\n\n{_caption(report)}"


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*HEADERS, title="zcopy bench", caption=_caption(report))
    for row in _rows(report):
        table.add_row(*row)
    Console().print(table)
