#!/usr/bin/env python3
"""Drag a real FOLDER onto the folder page with a real X11 drag (XDND), the closest this machine
comes to checking it by hand, and check on disk that the tree arrived byte-identical.

Chromium gives synthetic (CDP / Playwright) drops no folder entries, so tests/test_ui_browser.py
drives the `webkitdirectory` input instead. Here nothing is synthetic inside the browser: a private
Xvfb display, a small GTK window (Debian's python3-gi) whose drag source offers `text/uri-list` of
the folder (what file managers send), Debian's Chromium headed next to it (Playwright only opens the
page and reads it afterwards), and xdotool pressing, moving and releasing the pointer (XTEST) from
the GTK window onto the page. Chromium's own XDND code receives the drop, the page reads the folder
with webkitGetAsEntry and uploads it. Then the tree under ROOT is compared file by file with the
source, and a screenshot of the screen after the drop is written.

Needs (Debian): xvfb xdotool python3-gi gir1.2-gtk-3.0 chromium, and Playwright in this Python.
Not in CI (.ci/run installs none of these). Removes everything it made (Xvfb, Chromium, server,
the GTK window, temp folders).

    PYTHONPATH=$PWD python tools/check_folder_drop.py [--screenshot docs/ui/folder-drop-desktop.png]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tests.serverutil import Server  # noqa: E402
from zcopy.server.root import TEMP_PREFIX  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
SYSTEM_PYTHON = "/usr/bin/python3"      # Debian's, where python3-gi lives
ARGS = ["--test-type", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]
SCREEN = (1280, 800)
SOURCE_GEOMETRY = (0, 0, 400, 800)        # x, y, width, height of the GTK drag source
BROWSER_GEOMETRY = (400, 0, 880, 800)

# The drag source: one window, one big label; its drag offers the folder as text/uri-list.
GTK_SOURCE = r'''
import sys, gi
gi.require_version("Gtk", "3.0")
from gi.repository import Gtk, Gdk, GLib
folder, x, y, w, h = sys.argv[1], *map(int, sys.argv[2:6])
uri = GLib.filename_to_uri(folder, None)
win = Gtk.Window(title="zcopy drag source")
win.set_default_size(w, h)
win.move(x, y)
box = Gtk.EventBox()
label = Gtk.Label(label="drag me:\n" + folder)
box.add(label)
win.add(box)
box.drag_source_set(Gdk.ModifierType.BUTTON1_MASK, [], Gdk.DragAction.COPY)
box.drag_source_add_uri_targets()
box.connect("drag-data-get", lambda wid, ctx, data, info, t: data.set_uris([uri]))
box.connect("drag-begin", lambda *a: print("drag-begin", flush=True))
box.connect("drag-end", lambda *a: print("drag-end", flush=True))
win.connect("destroy", Gtk.main_quit)
def shown(*a):
    ox, oy = box.get_window().get_origin()[1:]
    a = box.get_allocation()
    print("ready", ox + a.width // 2, oy + a.height // 2, flush=True)
win.connect("map-event", lambda *a: GLib.timeout_add(200, lambda: shown() or False))
win.show_all()
Gtk.main()
'''


def make_tree(top: str) -> None:
    """A folder worth dragging: nested subfolders, several files, spaces and non-ASCII names."""
    files = {"cover.jpg": 5_000, "notes.txt": 731, "disc 1/track_2.flac": 60_000, "disc 1/track_10.flac": 70_000,
             "disc 1/bonus/liner notes é.txt": 1_234, "disc 2/track_1.flac": 5_000_000,
             "disc 2/deep/deeper/deepest.bin": 17, "empty.txt": 0}
    for rel, size in files.items():
        path = os.path.join(top, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(os.urandom(size))
    os.makedirs(os.path.join(top, "disc 3 (empty)"))   # a folder with no file in it: see EMPTY below


def listing(top: str) -> dict[str, tuple[int, str]]:
    """Relative path -> (size, sha256) of every file below top; folders as (-1, '')."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        rel = os.path.relpath(dirpath, top)
        for d in dirnames:
            out[os.path.normpath(os.path.join(rel, d)) + "/"] = (-1, "")
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                data = f.read()
            out[os.path.normpath(os.path.join(rel, name))] = (len(data), hashlib.sha256(data).hexdigest()[:16])
    return out


def xdotool(env: dict, *args: str) -> str:
    return subprocess.run(["xdotool", *args], env=env, check=True, capture_output=True, text=True,
                          timeout=20).stdout


def lines(proc: subprocess.Popen, n: int, timeout: float) -> list[str]:
    """Up to n lines of proc's stdout, waiting at most timeout seconds in all."""
    import select
    out, deadline = [], time.monotonic() + timeout
    while len(out) < n and select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
        line = proc.stdout.readline()
        if not line:
            break
        out.append(line.strip())
    return out


def start_xvfb(work: str) -> tuple[subprocess.Popen, str]:
    """Xvfb on a free display number it picks itself (-displayfd), never one in use."""
    r, w = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
                             "-nolisten", "tcp"], pass_fds=(w,), stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(work, "xvfb.log"), "wb"), start_new_session=True)
    os.close(w)
    number = b""
    while not number.endswith(b"\n"):
        chunk = os.read(r, 16)
        if not chunk:
            raise RuntimeError("Xvfb did not start: " + open(os.path.join(work, "xvfb.log")).read())
        number += chunk
    os.close(r)
    return proc, ":" + number.decode().strip()


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--screenshot", help="write the page after the drop here (PNG)")
    ap.add_argument("--screen", help="write the whole X screen after the drop here (PNG, needs ImageMagick)")
    opts = ap.parse_args()
    for need in ("Xvfb", "xdotool", CHROMIUM, SYSTEM_PYTHON):
        if not shutil.which(need):
            print(f"missing: {need} (apt-get install xvfb xdotool python3-gi gir1.2-gtk-3.0 chromium)")
            return 2
    from playwright.sync_api import sync_playwright

    work = tempfile.mkdtemp(prefix="zcopy-drop-")
    src, root, profile = (os.path.join(work, d) for d in ("src", "root", "profile"))
    os.makedirs(root)
    folder = os.path.join(src, "album 2026")
    make_tree(folder)
    xvfb = gtk = None
    try:
        xvfb, display = start_xvfb(work)
        env = {**os.environ, "DISPLAY": display, "GDK_BACKEND": "x11", "NO_AT_BRIDGE": "1"}
        env.pop("WAYLAND_DISPLAY", None)
        with Server(root, "--allow-write", "--state-dir", os.path.join(work, "state")) as srv, sync_playwright() as p:
            bx, by, bw, bh = BROWSER_GEOMETRY
            ctx = p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=False, env=env, no_viewport=True,
                args=ARGS + [f"--window-position={bx},{by}", f"--window-size={bw},{bh}"])
            try:
                page = ctx.pages[0] if ctx.pages else ctx.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                methods: dict[str, int] = {}
                page.on("request", lambda r: methods.__setitem__(r.method, methods.get(r.method, 0) + 1))
                page.goto(srv.url + "/")
                page.wait_for_function("() => document.documentElement.dataset.ready === '1'")
                methods.clear()
                assert page.get_attribute("body", "data-write") == "1", "the page shows no write controls"

                gtk = subprocess.Popen([SYSTEM_PYTHON, "-c", GTK_SOURCE, folder, *map(str, SOURCE_GEOMETRY)],
                                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                line = gtk.stdout.readline().split()
                if not line or line[0] != "ready":
                    raise RuntimeError("the GTK drag source did not start: " + gtk.stderr.read())
                sx, sy = int(line[1]), int(line[2])
                # Where the page's #drop zone is on the screen: the window's origin plus the chrome above it.
                tx, ty = page.evaluate("""() => {
                    const r = document.getElementById('drop').getBoundingClientRect();
                    const left = window.screenX + (window.outerWidth - window.innerWidth) / 2;
                    const top = window.screenY + window.outerHeight - window.innerHeight;
                    return [Math.round(left + r.left + r.width / 2), Math.round(top + r.top + r.height / 2)];
                }""")
                print(f"display {display}; drag source at ({sx},{sy}); page's drop zone at ({tx},{ty})")

                xdotool(env, "mousemove", "--sync", str(sx), str(sy))
                xdotool(env, "mousedown", "1")
                for i in range(1, 31):                       # past GTK's threshold, then across
                    xdotool(env, "mousemove", str(sx + (tx - sx) * i // 30), str(sy + (ty - sy) * i // 30))
                    time.sleep(0.05)
                for dx in (3, -3, 0):                         # a few XdndPosition over the target
                    xdotool(env, "mousemove", str(tx + dx), str(ty))
                    time.sleep(0.15)
                xdotool(env, "mouseup", "1")
                print("drag source said:", " / ".join(lines(gtk, 2, 10.0)) or "nothing")

                try:
                    page.wait_for_function(
                        "() => document.querySelector(\"#listing tbody tr[data-name='album 2026']\")",
                        timeout=60_000)
                except Exception:
                    print("RESULT: no folder arrived within 60 s; the page says:", page.text_content("#total-text"))
                    return 1
                page.wait_for_function(
                    "() => /^(\\d+) of \\1 files/.test(document.getElementById('total-text').textContent)",
                    timeout=60_000)
                status = page.text_content("#total-text")
                print("page says:", status)
                print("requests the page made after load, by method:", dict(sorted(methods.items())))
                if opts.screenshot:
                    page.screenshot(path=opts.screenshot)
                    print("page screenshot:", opts.screenshot)
                if opts.screen:
                    subprocess.run(["import", "-display", display, "-window", "root", opts.screen],
                                   check=True, timeout=30)
                    print("screen screenshot:", opts.screen)
                if errors:
                    print("page errors:", errors)
            finally:
                ctx.close()
        want, got = listing(folder), listing(os.path.join(root, "album 2026"))
        print(f"\narrived under ROOT/album 2026/ ({len(got)} entries):")
        for rel in sorted(got):
            size, digest = got[rel]
            mark = "ok " if want.get(rel) == got[rel] else "BAD"
            print(f"  {mark} {rel}" + ("" if size < 0 else f"  {size} bytes sha256 {digest}"))
        # EMPTY: a folder holding no file comes too (the page makes it with MKCOL: webkitGetAsEntry's
        # walk yields it as a folder with no entries).
        missing = sorted(set(want) - set(got))
        for rel in missing:
            print(f"  MISSING {rel}")
        # Nothing half-done left: no temp name anywhere under ROOT, no tus record in ROOT/.zcopy/uploads.
        temps = [os.path.join(d, n) for d, _, fs in os.walk(root) for n in fs if n.startswith(TEMP_PREFIX)]
        uploads = os.path.join(root, ".zcopy", "uploads")
        temps += [os.path.join(uploads, n) for n in (os.listdir(uploads) if os.path.isdir(uploads) else ())]
        ok = not missing and not errors and not temps and all(want.get(rel) == v for rel, v in got.items())
        verdict = "the dropped folder arrived byte-identical, structure kept" if ok else "MISMATCH"
        print("\nRESULT:", verdict, f"(partials or temp files left under ROOT: {temps or 'none'})")
        return 0 if ok else 1
    finally:
        stop(gtk)
        stop(xvfb)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
