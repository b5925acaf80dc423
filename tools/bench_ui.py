#!/usr/bin/env python3
"""Two measurements for the folder page (issue 20's bars), each against a server on a temp tree:

1. ``listing``: a 10,000-entry folder rendered in Chromium (/usr/bin/chromium via Playwright), read-only
   and with write controls, medians of 5: "rendered" (the bar: under 1 s) is the first frame after
   the load event, from navigation start: every row parsed and in the DOM, the page's script done,
   the screen laid out and painted (docs/ui.md, "What rendered means"); then how long a jump to the
   last row takes until it is on screen; the page's own breakdown (Navigation Timing); the older wall
   time from ``goto`` to the script done; a click-sort by size of all rows and a filter.
2. ``tar``: ``FOLDER/?download=tar`` of a folder of N MiB (16 files) against downloading the same bytes
   as one file, with curl to /dev/null, best of 3 each (bar: tar >= 0.9x the file's GB/s).

    PYTHONPATH=$PWD taskset -c 0,1 python tools/bench_ui.py [--only listing|tar] [--mib 1024] [--entries 10000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tests.serverutil import Server  # noqa: E402

def state(work: str) -> tuple[str, str]:
    """A private --state-dir: never the user's own (~/.local/state/zcopy)."""
    path = os.path.join(work, "state")
    os.makedirs(path, exist_ok=True)
    return ("--state-dir", path)


ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]


#: Before the page's own script (an init script, which the page's CSP does not apply to): the first
#: frame after the load event, marked once that frame has been produced (a task after its rAF).
_FRAME_MARK = """addEventListener('load', () => requestAnimationFrame(() => setTimeout(
    () => performance.mark('zcopy-frame'), 0)), { once: true });"""

#: In the page, after the load event: where the time went (ms from navigation start).
_TIMINGS = """() => { const n = performance.getEntriesByType('navigation')[0];
    const r = performance.getEntriesByName('zcopy-ready')[0], f = performance.getEntriesByName('first-contentful-paint')[0];
    const fr = performance.getEntriesByName('zcopy-frame')[0];
    return {fcp: f ? f.startTime : null, ttfb: n.responseStart, body: n.responseEnd, parsed: n.domInteractive, dcl: n.domContentLoadedEventEnd,
            ready: r ? r.startTime : null, load: n.loadEventEnd, frame: fr ? fr.startTime : null, bytes: n.decodedBodySize,
            script: r ? r.startTime - n.domInteractive : null}; }"""

#: Jump to the end of the page; ms until a frame in which the last row is on screen (it lies in a
#: chunk that was not laid out until now), checked, then back to the top.
_TO_LAST_ROW = """() => new Promise((resolve, reject) => {
    const t = performance.now(), rows = document.querySelectorAll('#listing tbody tr'), last = rows[rows.length - 1];
    const seen = () => { const r = last.getBoundingClientRect(); return r.height > 0 && r.top >= 0 && r.bottom <= innerHeight + 1; };
    let frames = 0;
    const check = () => requestAnimationFrame(() => setTimeout(() => {
        if (seen()) { const ms = performance.now() - t; scrollTo(0, 0); resolve(ms); }
        else if (++frames > 20) reject(new Error('the last row never came on screen'));
        else { scrollTo(0, document.documentElement.scrollHeight); check(); }
    }, 0));
    scrollTo(0, document.documentElement.scrollHeight); check(); })"""


def bench_listing(work: str, entries: int, rounds: int = 5) -> None:
    """The 10,000-entry folder, read-only and with write controls: wall time from navigation to
    the page's script done (``zcopy-ready``) and the load event, medians of ``rounds``, and the
    in-page breakdown (first byte, body received, parsed, script done, load event)."""
    from playwright.sync_api import sync_playwright

    folder = os.path.join(work, "list")
    os.makedirs(folder)
    for i in range(entries):
        with open(os.path.join(folder, f"file_{i} report.txt"), "wb") as f:
            f.write(b"x" * (i % 977))
    for mode, args in (("read-only", ()), ("write", ("--allow-write",))):
        with Server(folder, *state(work), *args) as srv, sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.add_init_script(_FRAME_MARK)
                page.goto(srv.url + "/")                # warm: the first listing of a cold folder
                walls, marks, lasts = [], [], []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    page.goto(srv.url + "/", wait_until="load")
                    page.wait_for_function("() => document.documentElement.dataset.ready === '1'")
                    walls.append(time.perf_counter() - t0)
                    page.wait_for_function("() => performance.getEntriesByName('zcopy-frame').length > 0")
                    marks.append(page.evaluate(_TIMINGS))
                    lasts.append(page.evaluate(_TO_LAST_ROW))
                rows = page.eval_on_selector_all("#listing tbody tr", "rs => rs.length")
                sort_s = page.evaluate("() => { const t = performance.now();"
                                       " document.querySelector('th[data-col=size] a').click();"
                                       " document.body.offsetHeight; return (performance.now() - t) / 1000; }")
                filter_s = page.evaluate("() => { const t = performance.now(), f = document.getElementById('filter');"
                                         " f.value = 'report 99'; f.dispatchEvent(new Event('input'));"
                                         " document.body.offsetHeight; return (performance.now() - t) / 1000; }")
                med = {k: statistics.median(m[k] for m in marks) for k in marks[0] if marks[0][k] is not None}
                print(f"listing ({mode}): {rows} rows, {med['bytes'] / 1e6:.2f} MB; rendered (first frame after the "
                      f"load event): median {med['frame']:.0f} ms (all: {', '.join('%.0f' % m['frame'] for m in marks)}); "
                      f"then to the last row on screen: median {statistics.median(lasts):.0f} ms")
                print("  in the page, medians (ms from navigation): " +
                      ", ".join(f"{k} {med[k]:.0f}" for k in ("ttfb", "fcp", "body", "parsed", "ready", "load", "frame") if k in med) +
                      f"; script run {med.get('script', 0):.0f}")
                print(f"  wall from goto to script done (the older figure): median {statistics.median(walls) * 1000:.0f} ms "
                      f"(all: {', '.join(f'{t * 1000:.0f}' for t in walls)})")
                print(f"  click-sort by size {sort_s * 1000:.0f} ms; filter {filter_s * 1000:.0f} ms")
            finally:
                browser.close()


def curl_rate(url: str) -> float:
    best = 0.0
    for _ in range(3):
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url],
                             check=True, capture_output=True, text=True).stdout.split()
        best = max(best, int(out[0]) / float(out[1]) / 1e9)
    return best


def bench_tar(work: str, mib: int) -> None:
    root = os.path.join(work, "tar")
    os.makedirs(os.path.join(root, "folder"))
    chunk = os.urandom(1 << 20)
    per = mib // 16
    with open(os.path.join(root, "one.bin"), "wb") as whole:
        for i in range(16):
            with open(os.path.join(root, "folder", f"part{i:02}.bin"), "wb") as f:
                for _ in range(per):
                    f.write(chunk)
                    whole.write(chunk)
    with Server(root, *state(work)) as srv:
        curl_rate(srv.url + "/one.bin")                 # warm the page cache for both
        curl_rate(srv.url + "/folder/?download=tar")
        one = curl_rate(srv.url + "/one.bin")
        tar = curl_rate(srv.url + "/folder/?download=tar")
    print(f"tar: {mib} MiB in 16 files: tar {tar:.2f} GB/s, one file {one:.2f} GB/s, ratio {tar / one:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--only", choices=("listing", "tar"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="zcopy-bench-ui-")
    try:
        if args.only in (None, "listing"):
            bench_listing(work, args.entries)
        if args.only in (None, "tar"):
            bench_tar(work, args.mib)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
