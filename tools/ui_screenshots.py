#!/usr/bin/env python3
"""Screenshots of the folder page for docs/ui/: desktop and phone width, read-only and with write
controls (after an upload, so the progress panel shows, the row toolbar under the pointer), a search
in place, the image and text previews, the move dialog. Drives Debian's /usr/bin/chromium through
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


def png(width: int, height: int) -> bytes:
    """A real PNG (a colour gradient) made here, no image library: the preview's example."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"".join(bytes((40 + x * 180 // width, 90 + y * 120 // height, 200 - x * 120 // width))
                                        for x in range(width)) for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def demo_tree(root: str) -> None:
    for d in ("Photos 2024", "Photos 2025", "projects", "music/album 1", "projects/reports 2025"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    files = {"README.md": 2_400, "report_2.pdf": 812_000, "report_10.pdf": 1_530_000, "report_1.pdf": 640_000,
             "debian-13-netinst.iso": 0, "notes.txt": 730, "budget.ods": 48_200,
             "projects/reports 2025/report Q3.pdf": 220_000, "projects/reports 2025/report Q4.pdf": 231_000}
    for name, size in files.items():
        with open(os.path.join(root, name), "wb") as f:
            f.truncate(size or 700 * 1024 * 1024)          # sparse: a big-looking file costs nothing
    with open(os.path.join(root, "photo_001.png"), "wb") as f:
        f.write(png(640, 400))
    with open(os.path.join(root, "notes.txt"), "w") as f:
        f.write("Things to bring\n- the long cable\n- the adapter <HDMI>\n- report_10.pdf, printed twice\n")


def shoot(page, out: str, name: str) -> None:
    page.screenshot(path=os.path.join(out, name + ".png"), full_page=True)


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
                                page.hover("#listing tbody tr[data-name='notes.txt'] td.name")
                            elif form == "phone":
                                page.fill("#filter", "report")
                            shoot(page, out, f"{mode}-{form}")
                            page.close()
                        if mode == "readonly":
                            page = browser.new_page(viewport={"width": 1280, "height": 800})
                            page.goto(srv.url + "/")
                            page.fill("#filter", "report")
                            page.press("#filter", "Enter")
                            page.wait_for_selector("#results tbody a")
                            shoot(page, out, "search-desktop")
                            page.press("#filter", "Escape")
                            page.click("text=photo_001.png")
                            page.wait_for_function("() => { const i = document.querySelector('#preview img');"
                                                   " return i && i.complete && i.naturalWidth > 0; }")
                            page.screenshot(path=os.path.join(out, "preview-desktop.png"))
                            page.keyboard.press("Escape")
                            page.click("text=notes.txt")
                            page.wait_for_function("() => /long cable/.test(document.querySelector('#preview-body').textContent)")
                            page.screenshot(path=os.path.join(out, "preview-text-desktop.png"))
                            page.close()
                        else:
                            page = browser.new_page(viewport={"width": 1280, "height": 800})
                            page.goto(srv.url + "/")
                            page.hover("#listing tbody tr[data-name='report_10.pdf'] td:nth-child(2)")
                            page.click("#row-tools button.mov")
                            page.wait_for_selector("#move-list >> text=projects/")
                            page.click("button[aria-label='Folder projects']")
                            page.wait_for_selector("#move-list >> text=reports 2025/")
                            page.screenshot(path=os.path.join(out, "move-desktop.png"))
                            page.close()
            finally:
                browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(sorted(os.path.join(out, n) for n in os.listdir(out))))


if __name__ == "__main__":
    main()
