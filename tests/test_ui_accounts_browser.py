"""Sign-in, CSRF and share on the folder page, in a real browser: Playwright driving Debian's
Chromium (/usr/bin/chromium) against a real server with a users file. The browser answers the Basic
challenge of /.zcopy/login with the context's credentials, as a person would in its dialog."""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import pytest

from tests.serverutil import Server
from tests.test_serve_accounts import HASH, PW

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--host-resolver-rules=MAP evil.test 127.0.0.1"]
USERS = (f"alice {HASH['alice']} /:r /home/alice:rwd\n"
         f"reader {HASH['reader']} /:r\n"
         "* - /:r\n")


@pytest.fixture(scope="module")
def chromium():
    sync_api = pytest.importorskip("playwright.sync_api")
    home = tempfile.mkdtemp(prefix="zcopy-chromium-")     # Chromium's crash/config folders, not the user's
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS,
                                    env={**os.environ, "HOME": home})
        try:
            yield browser
        finally:
            browser.close()
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "root"
    (root / "home" / "alice").mkdir(parents=True)
    (root / "home" / "alice" / "report 1.txt").write_bytes(b"the report\n")
    (root / "pub.txt").write_bytes(b"public\n")
    users = tmp_path / "users.txt"
    users.write_text(USERS)
    log = tmp_path / "access.log"
    with Server(root, "--users", str(users), "--state-dir", str(tmp_path / "state"), "--access-log", str(log)) as srv:
        srv.log = log
        yield srv, root


def watch(page) -> list:
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


def test_sign_in_see_write_controls_share_and_open_the_link_without_credentials(chromium, site, tmp_path):
    srv, root = site
    ctx = chromium.new_context(http_credentials={"username": "alice", "password": PW["alice"]})
    try:
        page = ctx.new_page()
        errors = watch(page)
        page.goto(srv.url + "/home/alice/")
        # Anonymous ('*' reads /): no write controls, a Sign in link.
        assert page.get_attribute("body", "data-write") == "0"
        page.wait_for_selector("#sign-in")
        assert not page.is_visible("#tools") and not page.query_selector("button.share")
        page.click("#sign-in")                                  # 401, the credentials, 303 back here
        page.wait_for_selector("#signed-in")
        assert page.url == srv.url + "/home/alice/"
        assert page.inner_text("#signed-in") == "Signed in as alice"
        assert page.get_attribute("body", "data-write") == "1"
        assert page.is_visible("#tools") and page.is_visible("#mkdir")
        # A write from the page (cookie + the CSRF header account.js adds): a folder.
        page.once("dialog", lambda d: d.accept("made here"))
        page.click("#mkdir")
        page.wait_for_function("() => [...document.querySelectorAll('#listing tbody tr')].some(r => r.dataset.name === 'made here')")
        assert (root / "home" / "alice" / "made here").is_dir()
        # Share a file: a link and its QR code (an SVG drawn by the server).
        page.click("button[aria-label='Share report 1.txt']")
        page.select_option("#share-expires", "3600")
        page.click("#share-make")
        page.wait_for_function("() => document.getElementById('share-link').value.includes('?share=')")
        link = page.input_value("#share-link")
        assert link.startswith(srv.url + "/home/alice/report%201.txt?share=")
        page.wait_for_function("() => document.getElementById('share-qr').naturalWidth > 0")
        qr = ctx.request.get(page.get_attribute("#share-qr", "src") if page.get_attribute("#share-qr", "src").startswith("http")
                             else srv.url + page.get_attribute("#share-qr", "src"))
        assert qr.status == 200 and qr.headers["content-type"] == "image/svg+xml"
        assert "sandbox" in qr.headers["content-security-policy"] and qr.body().lstrip().startswith(b"<svg")
        page.click("#share-close")
        # A folder too: its link opens the folder's page in a browser with no credentials.
        page.click("button[aria-label='Share made here']")
        assert page.input_value("#share-link") == ""            # not the file's link, even hidden
        page.click("#share-make")
        page.wait_for_function("() => document.getElementById('share-link').value.includes('/made%20here/?share=')")
        folder_link = page.input_value("#share-link")
        assert "open this folder" in page.inner_text("#share-status")
        assert not errors, errors
    finally:
        ctx.close()
    # A fresh browser context with no credentials and no cookie: the link downloads the file.
    fresh = chromium.new_context()
    try:
        got = fresh.request.get(link)
        assert got.status == 200 and got.body() == b"the report\n"
        other = fresh.request.get(link.replace("report%201.txt", "..%2Fpub.txt"))
        assert other.status in (403, 404)
        listing = fresh.request.get(srv.url + "/home/alice/", headers={"Accept": "application/json"})
        assert listing.status == 200 and b"report 1.txt" in listing.body()     # '*' reads /, as before
        assert fresh.request.put(srv.url + "/home/alice/x", data=b"x").status == 401
        (root / "home" / "alice" / "made here" / "inside.txt").write_bytes(b"inside\n")
        page = fresh.new_page()
        page.goto(folder_link)                  # 303 with the folder's cookie, then its page
        assert page.url == srv.url + "/home/alice/made%20here/"
        assert page.inner_text("h1") == "Index of /home/alice/made here/"
        with page.expect_download() as dl:
            page.click("text=inside.txt", modifiers=["Alt"])         # Alt-click: download the link
        assert open(dl.value.path(), "rb").read() == b"inside\n"
        page.close()
    finally:
        fresh.close()


def test_a_link_made_for_one_row_never_shows_as_another_rows(chromium, site):
    """The share dialog is one element reused for every row: a link still being made when the
    dialog is reopened for another row is dropped when it arrives, and opening clears the last
    link (it stayed in the hidden field, where a wait for '?share=' found the wrong one)."""
    srv, root = site
    (root / "home" / "alice" / "other.txt").write_bytes(b"other\n")
    ctx = chromium.new_context(http_credentials={"username": "alice", "password": PW["alice"]})
    try:
        page = ctx.new_page()
        errors = watch(page)
        page.goto(srv.url + "/.zcopy/login?next=/home/alice/")
        page.wait_for_selector("#signed-in")
        held = []
        # The real server makes the first link; only its answer is held back until the dialog
        # belongs to another row (Playwright keeps the request open while the route is held).
        page.route("**/.zcopy/share?*", lambda route: route.continue_() if held else held.append(route))
        page.click("button[aria-label='Share report 1.txt']")
        page.click("#share-make")
        page.wait_for_function("() => document.getElementById('share-status').textContent.includes('Making')")
        deadline = time.monotonic() + 10
        while not held and time.monotonic() < deadline:
            page.wait_for_timeout(20)           # (runs the route handler: the request has left)
        assert len(held) == 1 and "report%201.txt" in held[0].request.url
        page.click("#share-close")
        page.click("button[aria-label='Share other.txt']")
        assert page.input_value("#share-link") == "" and page.inner_text("#share-status") == ""
        with page.expect_response(lambda r: "report%201.txt" in r.url and "/.zcopy/share" in r.url) as late:
            held[0].continue_()                 # the first row's link arrives now
        assert late.value.status == 201        # made by the server, for the first row
        late.value.finished()                   # its body is in the page; then a whole round trip to the
        page.evaluate("() => fetch('/.zcopy/me').then(r => r.text())")     # server, behind its then()s
        assert page.input_value("#share-link") == "" and page.is_hidden("#share-result")
        assert page.inner_text("#share-status") == ""
        page.click("#share-make")
        page.wait_for_function("() => document.getElementById('share-link').value.includes('?share=')")
        assert "/home/alice/other.txt?share=" in page.input_value("#share-link")
        assert not errors, errors
    finally:
        ctx.close()


class Attacker:
    """Another origin on loopback: a plain HTTP server (a thread) answering every GET with ``page``."""

    def __init__(self, page: str) -> None:
        import http.server
        import threading

        body = page.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Attacker":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def test_csrf_from_other_origins_is_refused(chromium, site):
    """A page on another origin makes the signed-in browser send writes: refused. A same-site page on
    another port (127.0.0.1) gets the SameSite=Strict cookie sent along; a cross-site one (evil.test)
    does not. Either way nothing changes: what the browser lets through the server refuses (403)."""
    srv, root = site
    attacker = ("<!doctype html><title>x</title><script>"
                "function send(m, path, mode) {"
                "  var url = '" + srv.url + "' + path;"
                "  return fetch(url, {method: m, credentials: 'include', mode: mode,"
                "                     body: (m === 'PUT' || m === 'POST') ? 'owned' : undefined})"
                "    .then(function (r) { return r.type === 'opaque' ? 'opaque' : r.status; },"
                "          function () { return 'blocked'; });"
                "}</script>")
    ctx = chromium.new_context(http_credentials={"username": "alice", "password": PW["alice"]})
    try:
        page = ctx.new_page()
        page.goto(srv.url + "/.zcopy/login?next=/home/alice/")
        page.wait_for_selector("#signed-in")
        with Attacker(attacker) as evil:
            for origin in (f"http://127.0.0.1:{evil.port}", f"http://evil.test:{evil.port}"):
                page.goto(origin + "/")
                for method, path in (("PUT", "/home/alice/evil"), ("DELETE", "/home/alice/report%201.txt"),
                                     ("MKCOL", "/home/alice/evil-dir/")):
                    # Preflighted (not a simple method): the server's OPTIONS answer grants no CORS,
                    # so the browser never sends the request itself.
                    assert page.evaluate(f"() => send('{method}', '{path}', 'cors')") == "blocked"
                # A simple POST (no preflight) is sent, cookie and all where same-site: the server
                # refuses it (the access log has the 403).
                before = srv.log.read_text().count("POST /.zcopy/share")
                assert page.evaluate("() => send('POST', '/.zcopy/share?path=/pub.txt', 'no-cors')") == "opaque"
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and srv.log.read_text().count("POST /.zcopy/share") == before:
                    time.sleep(0.05)
                line = [ln for ln in srv.log.read_text().splitlines() if "POST /.zcopy/share" in ln][-1]
                assert '" 403 ' in line, line
        assert sorted(p.name for p in (root / "home" / "alice").iterdir()) == ["report 1.txt"]
        assert (root / "home" / "alice" / "report 1.txt").read_bytes() == b"the report\n"
    finally:
        ctx.close()
