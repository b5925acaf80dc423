"""The tus flow the folder page will use, from a real browser (Playwright driving /usr/bin/chromium):
signed in with the session cookie only, same origin, no CORS, `fetch` POSTs to the folder URL and
PATCHes the Location in two parts with a HEAD between; the stored file is byte-identical. Another
account's cookie cannot resume it."""

from __future__ import annotations

import os

import pytest
from serverutil import Server, request

from zcopy.accounts import passwords

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]

FLOW = """async (a) => {
  const size = a.size, half = a.half;
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = (i * 7 + 3) % 251;
  const tus = {"Tus-Resumable": "1.0.0"};
  let r = await fetch(location.pathname, {method: "POST", headers: {...tus, "Upload-Length": String(size),
      "Upload-Metadata": "filename " + btoa("from browser.bin")}});
  if (r.status !== 201) return ["POST", r.status];
  const loc = r.headers.get("Location");
  r = await fetch(loc, {method: "PATCH", headers: {...tus, "Upload-Offset": "0",
      "Content-Type": "application/offset+octet-stream"}, body: data.slice(0, half)});
  if (r.status !== 204) return ["PATCH 1", r.status];
  r = await fetch(loc, {method: "HEAD", headers: tus});
  const offset = Number(r.headers.get("Upload-Offset"));
  r = await fetch(loc, {method: "PATCH", headers: {...tus, "Upload-Offset": String(offset),
      "Content-Type": "application/offset+octet-stream"}, body: data.slice(offset)});
  return [r.status, offset, r.headers.get("Zcopy-Commit"), loc];
}"""


def session(port: int, user: str, password: str) -> str:
    import base64

    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    status, headers, _ = request(port, f"GET /.zcopy/login HTTP/1.1\r\nHost: t\r\nAuthorization: Basic {auth}\r\n"
                                       "Connection: close\r\n\r\n".encode())
    assert status == 204
    return headers["set-cookie"].split("zcopy_session=", 1)[1].split(";", 1)[0]


def test_tus_from_the_browser_with_the_session_cookie(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    root = tmp_path / "root"
    (root / "drop").mkdir(parents=True)
    fast = dict(time_cost=1, memory_kib=passwords.MIN_MEMORY_KIB)
    users = tmp_path / "users.txt"
    users.write_text(f"ann {passwords.make('ann-pw', **fast)} /drop:rw\n"
                     f"ben {passwords.make('ben-pw', **fast)} /drop:rw\n")
    size, half = 3 << 20, 1 << 20
    with Server(root, "--users", str(users), "--state-dir", str(tmp_path / "state")) as s, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            ctx = browser.new_context()
            ctx.add_cookies([{"name": "zcopy_session", "value": session(s.port, "ann", "ann-pw"),
                              "url": f"http://127.0.0.1:{s.port}/"}])
            page = ctx.new_page()
            page.goto(f"http://127.0.0.1:{s.port}/drop/")
            status, offset, commit, loc = page.evaluate(FLOW, {"size": size, "half": half})
            assert (status, offset, commit) == (204, half, "201")
            assert loc.startswith("/drop/from%20browser.bin?upload=")
            want = bytes((i * 7 + 3) % 251 for i in range(size))
            assert (root / "drop" / "from browser.bin").read_bytes() == want
            # another account's session: not its upload (a second one, left half done)
            status, offset, commit, loc = page.evaluate(FLOW.replace("data.slice(offset)", "data.slice(offset, offset)")
                                                        .replace('"from browser.bin"', '"second.bin"'),
                                                        {"size": size, "half": half})
            other = browser.new_context()
            other.add_cookies([{"name": "zcopy_session", "value": session(s.port, "ben", "ben-pw"),
                                "url": f"http://127.0.0.1:{s.port}/"}])
            page2 = other.new_page()
            page2.goto(f"http://127.0.0.1:{s.port}/drop/")
            got = page2.evaluate("""async (loc) => (await fetch(loc, {method: "HEAD",
                                       headers: {"Tus-Resumable": "1.0.0"}})).status""", loc)
            assert got == 403
        finally:
            browser.close()
