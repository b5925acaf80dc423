#!/usr/bin/env python3
"""Screenshots of the folder page for docs/ui/: desktop and phone width, read-only and with write
controls (after an upload, so the progress panel shows). Drives Debian's /usr/bin/chromium through
Playwright against a server on a demo tree in a temp folder; removes everything it made.

    PYTHONPATH=$PWD python tools/ui_screenshots.py [docs/ui]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tests.serverutil import Server  # noqa: E402

SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
def state(work: str) -> tuple[str, str]:
    """A private --state-dir: never the user's own (~/.local/state/zcopy)."""
    path = os.path.join(work, "state")
    os.makedirs(path, exist_ok=True)
    return ("--state-dir", path)


ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]


def demo_tree(root: str) -> None:
    for d in ("Photos 2024", "Photos 2025", "projects", "music/album 1"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    files = {"README.md": 2_400, "report_2.pdf": 812_000, "report_10.pdf": 1_530_000, "report_1.pdf": 640_000,
             "debian-13-netinst.iso": 0, "notes.txt": 730, "budget.ods": 48_200, "photo_001.jpg": 3_400_000}
    for name, size in files.items():
        with open(os.path.join(root, name), "wb") as f:
            f.truncate(size or 700 * 1024 * 1024)          # sparse: a big-looking file costs nothing


def main() -> None:
    from playwright.sync_api import sync_playwright

    out = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "docs/ui")
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="zcopy-shots-")
    try:
        root, upload = os.path.join(work, "root"), os.path.join(work, "upload")
        os.makedirs(root)
        os.makedirs(upload)
        demo_tree(root)
        for name in ("holiday.mov", "slides.key"):
            with open(os.path.join(upload, name), "wb") as f:
                f.write(os.urandom(200_000))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
            try:
                for mode, args in (("readonly", ()), ("write", ("--allow-write",))):
                    with Server(root, *args, *state(work)) as srv:
                        for form, (w, h) in SIZES.items():
                            page = browser.new_page(viewport={"width": w, "height": h})
                            page.goto(srv.url + "/")
                            if mode == "write":
                                page.set_input_files("#pick-files", [os.path.join(upload, n)
                                                                     for n in sorted(os.listdir(upload))])
                                page.wait_for_function(
                                    "() => document.getElementById('total-text').textContent.startsWith('2 of 2')")
                                page.wait_for_function(
                                    "() => document.querySelectorAll('#listing tbody tr').length === 14")
                                for n in os.listdir(upload):
                                    os.unlink(os.path.join(root, n))      # the next form starts clean
                            else:
                                page.fill("#filter", "report") if form == "phone" else None
                            page.screenshot(path=os.path.join(out, f"{mode}-{form}.png"), full_page=True)
                            page.close()
            finally:
                browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(sorted(os.path.join(out, n) for n in os.listdir(out))))


if __name__ == "__main__":
    main()
