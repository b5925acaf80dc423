"""The folder page in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium, no
browser download) against a real server. Drag and drop of folders cannot be driven (Chromium gives
synthetic drops no folder entries): the webkitdirectory input is, and a real X11 folder drag is checked
by tools/check_folder_drop.py (Xvfb, a GTK drag source, xdotool; not in CI)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import urllib.request

import pytest

from tests.serverutil import Server
from zcopy.server.root import TEMP_PREFIX

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tempfile.mkdtemp(prefix="zcopy-chromium-")
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield ctx
        finally:
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    page.close()
    assert not errors, errors           # the page's script never throws


def act(page, what: str, name: str) -> None:
    """A row's action: the pointer over the row brings its toolbar (one for the page, #row-tools)."""
    page.hover(f"#listing tbody tr[data-name='{name}'] td:nth-child(2)")
    page.click(f"#row-tools button[aria-label='{what} {name}']")


def focused(page) -> str:
    return page.evaluate("(x => x.id || x.getAttribute('aria-label') || x.getAttribute('href')"
                         " || x.textContent)(document.activeElement)")


def names(page) -> list[str]:
    return page.eval_on_selector_all("#listing tbody tr:not([hidden])", "rs => rs.map(r => r.dataset.name)")


def test_upload_two_files_then_folder_mkdir_rename_delete(tmp_path, page):
    root, src = tmp_path / "root", tmp_path / "src"
    root.mkdir()
    src.mkdir()
    a, b = src / "first file.txt", src / "second 2.bin"
    a.write_bytes(b"hello from the picker\n")
    b.write_bytes(os.urandom(3 << 20))
    tree = src / "album"
    (tree / "disc 1").mkdir(parents=True)
    (tree / "cover.jpg").write_bytes(os.urandom(5000))
    (tree / "disc 1" / "track_10.flac").write_bytes(os.urandom(70000))
    (tree / "disc 1" / "track_2.flac").write_bytes(os.urandom(60000))
    with Server(root, "--allow-write") as srv:
        page.goto(srv.url + "/")
        assert page.get_attribute("body", "data-write") == "1"
        page.set_input_files("#pick-files", [str(a), str(b)])
        page.wait_for_function("() => document.getElementById('total-text').textContent.startsWith('2 of 2 files')")
        page.wait_for_function("() => document.querySelectorAll('#listing tbody tr').length === 2")
        assert names(page) == ["first file.txt", "second 2.bin"]
        assert (root / a.name).read_bytes() == a.read_bytes()
        assert (root / b.name).read_bytes() == b.read_bytes()
        assert page.get_attribute("#total", "value") == page.get_attribute("#total", "max")
        assert not page.is_visible("button[aria-label='Cancel first file.txt']")      # done: nothing to cancel
        assert not page.is_visible("button[aria-label='Retry first file.txt']")

        page.set_input_files("#pick-folder", str(tree))         # an <input webkitdirectory>
        page.wait_for_function("() => document.getElementById('total-text').textContent.startsWith('5 of 5 files')")
        page.wait_for_function("() => [...document.querySelectorAll('#listing tbody tr')].some(r => r.dataset.name === 'album')")
        for rel in ("cover.jpg", "disc 1/track_10.flac", "disc 1/track_2.flac"):
            assert (root / "album" / rel).read_bytes() == (tree / rel).read_bytes()

        page.once("dialog", lambda d: d.accept("New 10"))
        page.click("#mkdir")
        page.wait_for_function("() => [...document.querySelectorAll('#listing tbody tr')].some(r => r.dataset.name === 'New 10')")
        assert (root / "New 10").is_dir()
        assert names(page) == ["album", "New 10", "first file.txt", "second 2.bin"]   # folders first, natural

        page.once("dialog", lambda d: d.accept("renamed é.txt"))
        act(page, "Rename", "first file.txt")
        page.wait_for_function("() => [...document.querySelectorAll('#listing tbody tr')].some(r => r.dataset.name === 'renamed é.txt')")
        assert not (root / a.name).exists() and (root / "renamed é.txt").read_bytes() == a.read_bytes()

        messages = []
        page.once("dialog", lambda d: (messages.append(d.message), d.accept()))
        act(page, "Delete", "album")
        page.wait_for_function("() => ![...document.querySelectorAll('#listing tbody tr')].some(r => r.dataset.name === 'album')")
        assert messages == ["Delete the folder album and everything in it?"]
        assert not (root / "album").exists()

        page.once("dialog", lambda d: d.dismiss())               # a refused confirmation deletes nothing
        act(page, "Delete", "second 2.bin")
        assert (root / b.name).exists() and "second 2.bin" in names(page)


def test_read_only_visitor_sees_no_write_controls(tmp_path, page):
    for n in ("file_10", "File_2", "file_1", "b.txt"):
        (tmp_path / n).write_bytes(b"x" * len(n) * 100)
    (tmp_path / "z dir").mkdir()
    with Server(tmp_path) as srv:
        page.goto(srv.url + "/")
        assert page.get_attribute("body", "data-write") == "0"
        for sel in ("#pick-files", "#pick-folder", "#mkdir", "#drop", "#tools", "#row-tools", "table.writable"):
            assert page.query_selector(sel) is None, sel
        first_load = names(page)
        assert first_load == ["z dir", "b.txt", "file_1", "File_2", "file_10"]
        page.click("th[data-col=name] a")                       # by script: descending
        assert page.get_attribute("th[data-col=name]", "aria-sort") == "descending"
        clicked = names(page)
        page.goto(srv.url + "/?sort=name&order=desc")            # the server's order for the same request
        assert names(page) == clicked == ["z dir", "file_10", "File_2", "file_1", "b.txt"]
        page.click("th[data-col=size] a")
        assert page.get_attribute("th[data-col=size]", "aria-sort") == "ascending"
        assert page.get_attribute("th[data-col=name]", "aria-sort") is None
        assert re.search(r"sort=size&order=asc$", page.url)
        page.fill("#filter", "FILE_")
        assert names(page) == ["file_1", "File_2", "file_10"]
        assert page.inner_text("#total-line").startswith("3 of 5 shown; 1 folder, 4 files")


def test_keyboard_reaches_every_control(tmp_path, page):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub").mkdir()
    with Server(tmp_path, "--allow-write") as srv:
        page.goto(srv.url + "/sub/../")
        page.wait_for_selector("#row-tools", state="attached")
        controls = page.eval_on_selector_all(
            "a[href], button, input", "xs => xs.filter(x => x.offsetParent !== null || x.type === 'file')"
            ".map(x => x.id || x.getAttribute('aria-label') || x.getAttribute('href') || x.textContent)")
        reached = set()
        for _ in range(len(controls) + 15):
            page.keyboard.press("Tab")
            reached.add(focused(page))
        assert set(controls) <= reached, set(controls) - reached
        assert {"pick-files", "pick-folder", "mkdir", "filter", "search-go", "Rename a.txt", "Move a.txt",
                "Delete a.txt", "Rename sub", "Move sub", "Delete sub"} <= reached
        # The row toolbar in order: name, Rename, Move, Delete, the next name; and back.
        page.focus("a[href='sub/']")
        order = []
        for _ in range(5):
            page.keyboard.press("Tab")
            order.append(focused(page))
        assert order == ["Rename sub", "Move sub", "Delete sub", "a.txt", "Rename a.txt"]
        page.keyboard.press("Shift+Tab")
        page.keyboard.press("Shift+Tab")
        assert focused(page) == "Delete sub"
        page.focus("th[data-col=size] a")
        page.keyboard.press("Enter")                             # sorting by keyboard
        assert page.get_attribute("th[data-col=size]", "aria-sort") == "ascending"

        # The move dialog, by keyboard alone: Enter on Move, its controls, Escape.
        page.focus("a[href='a.txt']")
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        page.wait_for_selector("#move-list >> text=sub/")
        assert focused(page) == "move-to"
        seen = set()
        for _ in range(8):
            page.keyboard.press("Tab")
            seen.add(focused(page))
        assert {"move-to", "Folder sub", "move-ok", "move-cancel"} <= seen      # (no Up at the top)
        page.keyboard.press("Escape")
        assert page.is_hidden("#move-dialog")

        # The preview: Enter on a text file's name, Tab through it, Escape.
        page.focus("a[href='a.txt']")
        page.keyboard.press("Enter")
        page.wait_for_selector("#preview pre")
        seen = set()
        for _ in range(6):
            page.keyboard.press("Tab")
            seen.add(focused(page))
        assert {"preview-open", "preview-download", "preview-close"} <= seen
        page.keyboard.press("Escape")
        assert page.is_hidden("#preview")

        # Search results: Enter in the find box, then Tab reaches "Show the folder" and each result.
        page.focus("#filter")
        page.keyboard.type("a")
        page.keyboard.press("Enter")
        page.wait_for_selector("#results tbody a")
        seen = set()
        for _ in range(6):
            page.keyboard.press("Tab")
            seen.add(focused(page))
        assert {"search-back", "a.txt"} <= seen


def test_uploaded_html_cannot_call_the_api(tmp_path, page):
    (tmp_path / "victim.txt").write_text("keep me")
    evil = ("<!doctype html><title>evil</title><script>document.title='ran';"
            "fetch('/pwned-{tag}.txt',{{method:'PUT',body:'x'}});"
            "fetch('/victim.txt',{{method:'DELETE'}});</script>")
    with Server(tmp_path, "--allow-write") as srv:
        req = urllib.request.Request(srv.url + "/evil.html", data=evil.format(tag="sandboxed").encode(), method="PUT")
        assert urllib.request.urlopen(req).status == 201
        response = page.goto(srv.url + "/evil.html")
        assert response.headers["content-security-policy"] == "sandbox"
        page.wait_for_load_state("load")
        assert page.title() == "evil"                            # the script never ran
        # The same document without the sandbox, on the same origin, does reach the API (the test
        # would catch a guard that went missing): wait for its PUT to land.
        page.route(srv.url + "/control.html", lambda route: route.fulfill(
            status=200, content_type="text/html", body=evil.format(tag="control")))
        page.goto(srv.url + "/control.html")
        page.wait_for_function("() => document.title === 'ran'")
        deadline = time.monotonic() + 20        # its PUT lands (navigating away now could cancel it)
        while not (tmp_path / "pwned-control.txt").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        page.goto(srv.url + "/")
        page.wait_for_function("() => [...document.querySelectorAll('#listing tbody tr')].some(r => r.dataset.name === 'pwned-control.txt')")
        assert not (tmp_path / "pwned-sandboxed.txt").exists()
        (tmp_path / "victim.txt").write_text("keep me")          # the control deleted it; the sandboxed page did not


def test_script_and_server_sort_alike(tmp_path, page):
    """The rule is written twice (natural.py, app.js): a click must give the server's order, for names
    that probe every clause (digit runs with leading zeros and huge values, case, non-ASCII, astral
    code points, other Unicode digits, ties under lower-casing)."""
    import random

    rng = random.Random(20)
    alphabet = ["a", "B", "z", "0", "1", "2", "9", "00", "_", " ", ".", "é", "É", "ß", "ǅ", "日", "\U0001F600",
                "\uff10", "٣", "-", "Z", "10", "99999999999999999999"]
    wanted = {"file_1", "file_01", "File_1", "file_10", "file_2", "a", "A", "ß", "ss", "10", "9"}
    while len(wanted) < 600:                                     # more than two chunks of rows (app.js)
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))).strip()
        if name and not name.startswith("."):                    # hidden names are not listed
            wanted.add(name)
    for i, n in enumerate(sorted(wanted)):
        if i % 7 == 0:
            (tmp_path / n).mkdir()
        else:
            (tmp_path / n).write_bytes(b"x" * rng.randint(0, 3))
    with Server(tmp_path) as srv:
        for col in ("name", "size"):
            page.goto(f"{srv.url}/?sort={col}&order=desc")
            server_desc = names(page)
            page.goto(f"{srv.url}/?sort={col}&order=asc")
            server_asc = names(page)
            assert len(server_asc) == len(wanted)
            page.click(f"th[data-col={col}] a")                   # script: descending
            assert names(page) == server_desc, col
            page.click(f"th[data-col={col}] a")                   # script: ascending again
            assert names(page) == server_asc, col


def test_a_big_folder_in_chunks_of_rows(tmp_path, page):
    """600 rows come in <tbody> chunks of 256 (the browser skips laying out the chunks off screen,
    app.css): every row is a row of the table to assistive technology, the last one can be scrolled
    to, the keyboard walks from one chunk into the next, sorting and filtering keep the chunks and
    leave no stale heights behind."""
    for i in range(600):
        (tmp_path / f"f{i:03}.txt").write_bytes(b"x" * (i % 7))
    chunks = "() => [...document.querySelectorAll('#listing > tbody')].map(t => t.rows.length + t.className)"
    height = "() => document.documentElement.scrollHeight"
    with Server(tmp_path, "--allow-write") as srv:
        page.set_viewport_size({"width": 1280, "height": 800})
        page.goto(srv.url + "/")
        page.wait_for_function("() => document.documentElement.dataset.ready === '1'")
        assert page.evaluate(chunks) == ["256c", "256c", "88"]
        assert page.get_by_role("row").count() == 601 and page.get_by_role("cell").count() == 1800
        full = page.evaluate(height)
        assert full > 600 * 30                                   # the chunks off screen hold their rows' height
        page.keyboard.press("End")
        page.wait_for_function("() => { const r = document.querySelector(\"a[href='f599.txt']\").getBoundingClientRect();"
                               " return r.height > 0 && r.bottom <= innerHeight; }")
        # Keyboard from the last row of the first chunk into the first of the second, and back.
        page.focus("a[href='f255.txt']")
        order = []
        for _ in range(4):
            page.keyboard.press("Tab")
            order.append(focused(page))
        assert order == ["Rename f255.txt", "Move f255.txt", "Delete f255.txt", "f256.txt"]
        page.keyboard.press("Shift+Tab")
        assert focused(page) == "Delete f255.txt"
        # Sorted by the script: the server's order, in chunks again.
        page.click("th[data-col=size] a")
        page.click("th[data-col=size] a")
        assert page.evaluate(chunks) == ["256c", "256c", "88"]
        by_script = names(page)
        assert page.evaluate(height) == full
        # A filter shows only what matches; clearing it gives back every row and the same height.
        page.fill("#filter", "f59")
        assert names(page) == [n for n in by_script if "f59" in n] and len(names(page)) == 10
        assert page.evaluate(height) < full / 10
        page.fill("#filter", ".txt")                              # every row matches: the chunks stay skippable
        assert page.evaluate(chunks) == ["256c", "256c", "88"] and page.evaluate(height) == full
        page.fill("#filter", "")
        assert names(page) == by_script
        assert page.evaluate(chunks) == ["256c", "256c", "88"] and page.evaluate(height) == full
        page.goto(srv.url + "/?sort=size&order=desc")
        assert names(page) == by_script
        # Without the script (the chunks are CSS): every row listed, the last one reachable.
        page.route("**/.zcopy/ui/*/*.js", lambda route: route.abort())
        page.goto(srv.url + "/")
        assert page.evaluate("() => !document.getElementById('row-tools')")  # no script ran
        assert page.get_by_role("row").count() == 601
        page.keyboard.press("End")
        page.wait_for_function("() => { const r = document.querySelector(\"a[href='f599.txt']\").getBoundingClientRect();"
                               " return r.height > 0 && r.bottom <= innerHeight; }")


def test_upload_retry_and_cancel(tmp_path, page):
    root, src = tmp_path / "root", tmp_path / "src"
    root.mkdir()
    (src / "x").mkdir(parents=True)
    (src / "x" / "f.txt").write_bytes(b"retried\n")
    big = src / "big.bin"
    big.write_bytes(os.urandom(3 << 20))              # under the resumable threshold: one PUT
    (root / "x").write_text("a file where the folder should go")
    with Server(root, "--allow-write") as srv:
        page.goto(srv.url + "/")
        page.set_input_files("#pick-folder", str(src / "x"))
        page.wait_for_selector("li.failed")                       # x/ cannot be made: x is a file
        assert "failed" in page.inner_text("li.failed .s")
        (root / "x").unlink()
        page.click("button[aria-label='Retry x/f.txt']")
        page.wait_for_selector("li.done")
        assert (root / "x" / "f.txt").read_bytes() == b"retried\n"

        cdp = page.context.new_cdp_session(page)                  # slow the upload so it can be cancelled
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                      "downloadThroughput": -1, "uploadThroughput": 256 * 1024})
        page.set_input_files("#pick-files", str(big))
        page.wait_for_function("() => +document.querySelector('progress[aria-label=\"Progress of big.bin\"]').value > 0")
        page.click("button[aria-label='Cancel big.bin']")
        assert page.inner_text("li.cancelled .s") == "cancelled"
        assert page.is_visible("button[aria-label='Retry big.bin']")
        cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                      "downloadThroughput": -1, "uploadThroughput": -1})
        # The server saw the connection end: no file, no temp file left behind.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(n.startswith(TEMP_PREFIX) for n in os.listdir(root)):
            time.sleep(0.05)
        assert sorted(os.listdir(root)) == ["x"]
        page.click("button[aria-label='Retry big.bin']")
        page.wait_for_selector("li.done >> text=big.bin")
        page.wait_for_function("() => document.getElementById('total-text').textContent.startsWith('2 of 2 files')")
        assert (root / "big.bin").read_bytes() == big.read_bytes()


def test_search_below_in_place_and_without_script(tmp_path, page):
    for rel in ("Reports/old/report_10.txt", "Reports/old/report_2.txt", "notes/meeting.txt", "report card.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    with Server(tmp_path) as srv:
        page.goto(srv.url + "/")
        page.fill("#filter", "report")                             # typing filters this folder...
        assert names(page) == ["Reports", "report card.txt"]
        page.press("#filter", "Enter")                             # ...Enter searches below it
        page.wait_for_function("() => /^4 results/.test(document.getElementById('search-status').textContent)")
        assert page.is_hidden("#listing") and page.is_visible("#found")
        found = page.eval_on_selector_all("#results tbody a", "as => as.map(a => [a.textContent, a.href])")
        assert found == [["Reports/", srv.url + "/Reports/"],
                         ["Reports/old/report_2.txt", srv.url + "/Reports/old/report_2.txt"],
                         ["Reports/old/report_10.txt", srv.url + "/Reports/old/report_10.txt"],
                         ["report card.txt", srv.url + "/report%20card.txt"]]
        page.press("#filter", "Escape")                            # back to the folder (and the box empties)
        assert page.is_visible("#listing") and page.is_hidden("#found")
        page.fill("#filter", "report")
        page.press("#filter", "Enter")
        page.wait_for_selector("#found:not([hidden])")
        page.click("#search-back")
        assert page.is_visible("#listing") and page.is_hidden("#found")
        page.press("#filter", "Enter")
        page.click("#results a >> text=Reports/old/report_10.txt")        # a text file: previewed
        page.wait_for_function("() => document.querySelector('#preview-body pre').textContent === 'Reports/old/report_10.txt'")
        page.click("#preview-open")
        page.wait_for_url(srv.url + "/Reports/old/report_10.txt")
        assert page.inner_text("body") == "Reports/old/report_10.txt"

        # Without the script, the same box is a GET form: the server's result page.
        page.route("**/.zcopy/ui/*/app.js", lambda route: route.abort())
        page.goto(srv.url + "/Reports/")
        page.fill("#filter", "REPORT")
        page.press("#filter", "Enter")
        page.wait_for_url(srv.url + "/Reports/?search=REPORT")
        assert page.eval_on_selector_all("#results tbody a", "as => as.map(a => a.textContent)") == \
            ["old/report_2.txt", "old/report_10.txt"]
        assert page.input_value("#filter") == "REPORT"
        page.click("text=Back to the folder")
        page.wait_for_url(srv.url + "/Reports/")


def test_move_to_another_folder(tmp_path, page):
    (tmp_path / "dest one" / "inner").mkdir(parents=True)
    (tmp_path / "b dir").mkdir()
    (tmp_path / "b dir" / "in b.txt").write_text("in b")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "c.txt").write_text("new c")
    (tmp_path / "dest one" / "c.txt").write_text("old c")
    with Server(tmp_path, "--allow-write") as srv:
        page.goto(srv.url + "/")
        act(page, "Move", "a.txt")               # pick the folder in the list
        assert page.is_visible("#move-dialog") and page.input_value("#move-to") == "/"
        page.wait_for_selector("#move-list >> text=dest one/")
        assert page.is_disabled("button[aria-label='Folder b dir']") is False
        page.click("button[aria-label='Folder dest one']")
        page.wait_for_selector("#move-list >> text=inner/")
        assert page.input_value("#move-to") == "/dest one/"
        page.click("#move-ok")
        page.wait_for_function("() => ![...document.querySelectorAll('#listing tbody tr')].some(r => r.dataset.name === 'a.txt')")
        assert page.is_hidden("#move-dialog")
        assert (tmp_path / "dest one" / "a.txt").read_text() == "a" and not (tmp_path / "a.txt").exists()

        act(page, "Move", "b dir")               # a typed path; the folder itself is disabled
        page.wait_for_selector("#move-list >> text=b dir/")
        assert page.is_disabled("button[aria-label='Folder b dir']")
        page.fill("#move-to", "/dest one/inner")
        page.press("#move-to", "Enter")
        page.wait_for_function("() => ![...document.querySelectorAll('#listing tbody tr')].some(r => r.dataset.name === 'b dir')")
        assert (tmp_path / "dest one" / "inner" / "b dir" / "in b.txt").read_text() == "in b"

        messages = []                                                # a name taken there: ask first
        page.once("dialog", lambda d: (messages.append(d.message), d.dismiss()))
        act(page, "Move", "c.txt")
        page.wait_for_selector("#move-list >> text=dest one/")
        page.fill("#move-to", "/dest one/")
        page.click("#move-ok")
        page.wait_for_function("() => !document.getElementById('move-dialog').open")
        assert messages == ["c.txt already exists in /dest one/. Replace it?"]
        assert (tmp_path / "c.txt").read_text() == "new c" and (tmp_path / "dest one" / "c.txt").read_text() == "old c"
        page.once("dialog", lambda d: d.accept())
        act(page, "Move", "c.txt")
        page.fill("#move-to", "/dest one/")
        page.click("#move-ok")
        page.wait_for_function("() => ![...document.querySelectorAll('#listing tbody tr')].some(r => r.dataset.name === 'c.txt')")
        assert (tmp_path / "dest one" / "c.txt").read_text() == "new c"

        act(page, "Move", "dest one")             # Cancel and Escape leave everything
        page.click("#move-cancel")
        assert page.is_hidden("#move-dialog")
        act(page, "Move", "dest one")
        page.keyboard.press("Escape")
        assert page.is_hidden("#move-dialog")
        assert sorted(os.listdir(tmp_path)) == ["dest one"]


def png(width: int, height: int) -> bytes:
    """A real PNG (RGB, one colour), made here: no image library needed."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"\x20\x80\xe0" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def wav(path, seconds: int, rate: int = 16000) -> None:
    import math
    import struct
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i * 440 * 2 * math.pi / rate)))
                               for i in range(rate)) * seconds)


def test_previews_text_image_audio_video(tmp_path, page):
    (tmp_path / "a notes.txt").write_text("line one\n<b>not bold</b>\n" + "x" * 200_000)
    (tmp_path / "b pic.png").write_bytes(png(40, 30))
    wav(tmp_path / "c tone.wav", 120)                              # 3.8 MB: seeking needs ranges
    (tmp_path / "d evil.html").write_text("<title>evil</title><script>document.title='ran';"
                                          "fetch('/pwned.txt',{method:'PUT',body:'x'})</script>")
    (tmp_path / "e empty.txt").write_text("")
    (tmp_path / "f data.bin").write_bytes(b"\0" * 10)
    with Server(tmp_path, "--allow-write") as srv:
        page.goto(srv.url + "/")
        # A video the browser itself makes (MediaRecorder, VP8 in WebM), uploaded like any file.
        status = page.evaluate("""async () => {
            const c = document.createElement('canvas'); c.width = 64; c.height = 48;
            const g = c.getContext('2d'), rec = new MediaRecorder(c.captureStream(10), {mimeType: 'video/webm'});
            const parts = []; rec.ondataavailable = e => parts.push(e.data); rec.start();
            for (let i = 0; i < 8; i++) { g.fillStyle = `hsl(${i * 45},80%,50%)`; g.fillRect(0, 0, 64, 48);
                                          await new Promise(r => setTimeout(r, 100)); }
            rec.stop(); await new Promise(r => rec.onstop = r);
            return (await fetch('/g movie.webm', {method: 'PUT', body: new Blob(parts)})).status; }""")
        assert status == 201
        page.goto(srv.url + "/")
        ranges = []
        page.on("request", lambda r: ranges.append(r.headers.get("range")) if "tone.wav" in r.url else None)

        page.click("text=a notes.txt")                             # text: the first 128 KiB, as text
        page.wait_for_selector("#preview pre.pv-text")
        page.wait_for_function("() => document.querySelector('#preview pre').textContent.startsWith('line one')")
        assert page.evaluate("document.querySelector('#preview pre').textContent.length") == 131072
        assert page.query_selector("#preview-body b") is None      # markup stays text
        assert "The first 128.0 KiB of 195.3 KiB shown" in page.inner_text("#preview-body")
        assert page.get_attribute("#preview-open", "href") == srv.url + "/a%20notes.txt"
        assert page.inner_text("#preview-count") == "1 of 6"

        page.keyboard.press("ArrowRight")                          # image
        page.wait_for_function("() => { const i = document.querySelector('#preview img'); return i && i.complete && i.naturalWidth === 40; }")

        page.keyboard.press("ArrowRight")                          # audio, seekable by ranges
        page.wait_for_function("() => document.querySelector('#preview audio').readyState >= 1")
        duration = page.evaluate("document.querySelector('#preview audio').duration")
        assert abs(duration - 120) < 0.5
        page.evaluate("""() => new Promise(done => { const a = document.querySelector('#preview audio');
                          a.addEventListener('seeked', done, {once: true}); a.currentTime = 100; })""")
        assert any(r and r.startswith("bytes=") and r != "bytes=0-" for r in ranges), ranges

        page.keyboard.press("ArrowRight")                          # HTML: its source, never run
        page.wait_for_function("() => document.querySelector('#preview pre').textContent.includes('<script>')")
        assert page.title() != "ran" and page.query_selector("iframe, object, embed") is None

        page.keyboard.press("ArrowRight")                          # empty text
        page.wait_for_function("() => document.getElementById('preview-body').textContent.includes('(empty)')")
        page.keyboard.press("ArrowRight")                          # video
        page.wait_for_function("() => { const v = document.querySelector('#preview video'); return v && v.readyState >= 1; }")
        assert page.evaluate("document.querySelector('#preview video').videoWidth") == 64
        page.click("#preview-close")
        assert page.is_hidden("#preview")
        # Closing stops the download: the dialog's "close" event, a task queued by close(), empties it.
        page.wait_for_function("() => !document.querySelector('#preview video')")

        page.click("text=f data.bin")                              # not previewable: the link as before
        page.wait_for_url(srv.url + "/")                           # (a download: the page stays)
        assert page.is_hidden("#preview")
        assert not (tmp_path / "pwned.txt").exists()


def throttle(page, up_bytes_per_s: float, offline: bool = False):
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": offline, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": up_bytes_per_s})
    return cdp


def partials(root) -> list[str]:
    folder = root / ".zcopy" / "uploads"
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_resumable_upload_from_the_page_survives_a_dropped_connection(tmp_path, page):
    """A file over the threshold goes by tus (POST, PATCH). Mid-upload the worker holding the
    connection is SIGKILLed (the supervisor starts another on the same socket): the page asks the
    offset (HEAD: the last durable checkpoint, 16 MiB) and sends the rest from there."""
    import signal

    root, src = tmp_path / "root", tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    src.mkdir()
    big = src / "big movie é.bin"
    big.write_bytes(os.urandom(28 << 20))
    with Server(root, "--allow-write", "--workers", "1", "--state-dir", str(tmp_path / "state")) as srv:
        seen = []
        page.on("request", lambda r: seen.append((r.method, r.headers.get("upload-offset")))
                if r.method in ("POST", "PATCH", "HEAD", "PUT", "DELETE") else None)
        page.goto(srv.url + "/sub/")
        cdp = throttle(page, 4 << 20)
        page.set_input_files("#pick-files", str(big))
        bar = "progress[aria-label=\"Progress of big movie é.bin\"]"
        page.wait_for_function(f"() => +document.querySelector('{bar}').value > (20 << 20)")
        worker = srv.worker_pids()[0]
        os.kill(worker, signal.SIGKILL)
        # (Chromium may resend a request cut on a reused connection by itself: the server, restarted,
        # then answers 409 with its offset, and the page asks HEAD; or the PATCH fails and the page
        # retries after its backoff. Either way the rest goes from the durable offset.)
        cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                      "uploadThroughput": -1})
        page.wait_for_selector("li.done", timeout=60_000)
        assert srv.worker_pids()[0] != worker
        assert (root / "sub" / big.name).read_bytes() == big.read_bytes()
        methods = [m for m, _ in seen]
        assert methods.count("POST") == 1 and "PUT" not in methods and "HEAD" in methods, seen
        resumed = [int(o) for m, o in seen if m == "PATCH" and o and int(o) > 0]
        assert resumed and resumed[0] >= 16 << 20, seen              # the rest, not from zero
        page.wait_for_function("() => [...document.querySelectorAll('#listing tbody tr')].some(r => r.dataset.name === 'big movie é.bin')")
        assert partials(root) == []
        assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('zcopy-tus'))") == []


def test_resumable_upload_retries_with_backoff_while_the_network_is_down(tmp_path, page):
    """The upload's requests fail as with no network (page.route aborts them with
    ERR_INTERNET_DISCONNECTED): the page says it retries, waits longer each time, and once they get
    through it asks the offset and finishes."""
    root, src = tmp_path / "root", tmp_path / "src"
    root.mkdir()
    src.mkdir()
    big = src / "six.bin"
    big.write_bytes(os.urandom(6 << 20))
    with Server(root, "--allow-write", "--state-dir", str(tmp_path / "state")) as srv:
        down = {"on": True, "refused": []}

        def net(route):
            if down["on"]:
                down["refused"].append((time.monotonic(), route.request.method))
                route.abort("internetdisconnected")
            else:
                route.continue_()
        page.route("**/*?upload=*", net)
        page.goto(srv.url + "/")
        page.set_input_files("#pick-files", str(big))
        texts = set()
        deadline = time.monotonic() + 30
        while len(down["refused"]) < 3 and time.monotonic() < deadline:
            texts.add(page.inner_text("#queue li .s"))
            time.sleep(0.05)
        assert len(down["refused"]) >= 3
        assert any(t.startswith("connection lost; retrying in") for t in texts), texts
        gaps = [b[0] - a[0] for a, b in zip(down["refused"], down["refused"][1:])]
        assert gaps[1] > gaps[0] * 1.5, gaps                         # backing off
        down["on"] = False
        page.wait_for_selector("li.done", timeout=60_000)
        assert (root / "six.bin").read_bytes() == big.read_bytes()
        assert partials(root) == []


def test_resumable_cancel_deletes_the_upload_and_old_servers_get_a_put(tmp_path, page):
    root, src = tmp_path / "root", tmp_path / "src"
    root.mkdir()
    src.mkdir()
    big = src / "big.bin"
    big.write_bytes(os.urandom(12 << 20))
    with Server(root, "--allow-write", "--state-dir", str(tmp_path / "state")) as srv:
        seen = []
        page.on("request", lambda r: seen.append(r.method) if r.method in ("POST", "PATCH", "PUT", "DELETE") else None)
        page.goto(srv.url + "/")
        cdp = throttle(page, 1 << 20)
        page.set_input_files("#pick-files", str(big))
        page.wait_for_function("() => +document.querySelector('progress[aria-label=\"Progress of big.bin\"]').value > (2 << 20)")
        page.click("button[aria-label='Cancel big.bin']")
        assert page.inner_text("li.cancelled .s") == "cancelled"
        deadline = time.monotonic() + 20                              # DELETE: the partial goes too
        while ("DELETE" not in seen or partials(root)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "DELETE" in seen and partials(root) == [] and not (root / "big.bin").exists()
        cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                      "uploadThroughput": -1})
        page.click("button[aria-label='Retry big.bin']")              # a new upload, to the end
        page.wait_for_selector("li.done")
        assert (root / "big.bin").read_bytes() == big.read_bytes()

        # A server that does not speak tus (its OPTIONS without Tus-Version, as before resumable
        # uploads): the page falls back to one PUT.
        seen.clear()
        page.route(srv.url + "/", lambda route: route.fulfill(status=200, headers={"Allow": "GET, PUT"})
                   if route.request.method == "OPTIONS" else route.continue_())
        page.goto(srv.url + "/")
        (src / "big2.bin").write_bytes(big.read_bytes()[: 5 << 20])
        page.set_input_files("#pick-files", str(src / "big2.bin"))
        page.wait_for_selector("li.done")
        assert seen == ["PUT"] and (root / "big2.bin").read_bytes() == (src / "big2.bin").read_bytes()


def test_keyboard_order_with_the_share_button_of_a_signed_in_account(tmp_path, page):
    """account.js adds a Share button in each name cell: Tab goes name, Share, Rename, Move, Delete,
    next name (the row toolbar takes over after the cell's last control)."""
    import base64

    from tests.serverutil import request
    from tests.test_serve_accounts import HASH, PW

    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("a")
    (root / "b.txt").write_text("b")
    users = tmp_path / "users.txt"
    users.write_text(f"alice {HASH['alice']} /:rwd\n")
    with Server(root, "--users", str(users), "--state-dir", str(tmp_path / "state")) as srv:
        auth = base64.b64encode(f"alice:{PW['alice']}".encode()).decode()
        status, headers, _ = request(srv.port, f"GET /.zcopy/login HTTP/1.1\r\nHost: t\r\nAuthorization: Basic {auth}"
                                               "\r\nConnection: close\r\n\r\n".encode())
        assert status == 204
        cookie = headers["set-cookie"].split("zcopy_session=", 1)[1].split(";", 1)[0]
        page.context.add_cookies([{"name": "zcopy_session", "value": cookie, "url": srv.url + "/"}])
        try:
            page.goto(srv.url + "/")
            page.wait_for_selector("button[aria-label='Share a.txt']")
            page.focus("a[href='a.txt']")
            order = []
            for _ in range(6):
                page.keyboard.press("Tab")
                order.append(focused(page))
            assert order == ["Share a.txt", "Rename a.txt", "Move a.txt", "Delete a.txt", "b.txt", "Share b.txt"]
            page.keyboard.press("Shift+Tab")
            page.keyboard.press("Shift+Tab")
            assert focused(page) == "Delete a.txt"
            page.focus("#row-tools button.ren")
            page.keyboard.press("Shift+Tab")
            assert focused(page) == "Share a.txt"
        finally:
            page.context.clear_cookies()
