"""Adversarial tests against the core13 merge: the file entry's memos, the off-loop If/lock checks of
resumable uploads, and the one-string natural sort key (server and page script alike)."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from tests.serverutil import Server

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tempfile.mkdtemp(prefix="zcopy-chromium-")
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield ctx
        finally:
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)


def _row_names(page) -> list[str]:
    return page.eval_on_selector_all("#listing tbody tr:not([hidden])", "rs => rs.map(r => r.dataset.name)")


def test_control_characters_in_names_reach_the_script_unchanged_and_sort_alike(tmp_path, browser):
    """HTML turns a raw CR (and CR LF) into LF before it parses: a name holding ``\\r`` written raw
    into ``data-name`` reached the script as another name (its sort, rename and delete then used
    the wrong one). Every control character must reach ``dataset.name`` as it is on the disk."""
    from zcopy.http.natural import key
    wanted = ["a\rb", "a\nb", "a\x0bb", "a\x0cb", "a\tb", "c\r\nd", "c\nd", "e\x01f", "e\x1ff", "g\x7fh",
              "i\x85j", "k\r"]
    for n in wanted:
        (tmp_path / n).write_bytes(b"x")
    page = browser.new_page()
    try:
        with Server(tmp_path) as srv:
            page.goto(f"{srv.url}/?sort=name&order=asc")
            assert _row_names(page) == sorted(wanted, key=key)
            page.click("th[data-col=name] a")                    # the script: descending
            assert _row_names(page) == sorted(wanted, key=key, reverse=True)
            page.click("th[data-col=name] a")                    # and back
            assert _row_names(page) == sorted(wanted, key=key)
    finally:
        page.close()


def test_a_held_body_holding_cache_control_still_gets_private(tmp_path):
    """A small file's 200 is head and body in one ``bytes`` (zcopy.server.held); ``_private`` looked
    for an existing ``Cache-Control`` in all of it, so a file whose text held one left a signed-in
    browser's reply cacheable by a shared cache."""
    from tests.test_serve_accounts import PW, USERS, call
    from tests.serverutil import curl
    root = tmp_path / "root"
    (root / "secret").mkdir(parents=True)
    body = b"note\r\nCache-Control: public\r\n\r\n"
    (root / "secret" / "cc.txt").write_bytes(body)
    users = tmp_path / "users.txt"
    users.write_text(USERS)
    jar = tmp_path / "cookies.txt"
    with Server(root, "--users", str(users), "--state-dir", str(tmp_path / "state")) as s:
        r = curl("-u", f"reader:{PW['reader']}", "-c", str(jar), "-o", "/dev/null", f"{s.url}/.zcopy/login")
        assert r.returncode == 0
        for _ in range(3):      # first from the file, then held in memory (and from the memo)
            r = curl("-b", str(jar), "-D", "-", f"{s.url}/secret/cc.txt")
            head, got = r.stdout.split(b"\r\n\r\n", 1)
            assert got == body
            assert b"\r\nCache-Control: private" in head + b"\r\n", head
        status, _, _ = call(s.port, "GET", "/secret/cc.txt")
        assert status == 401


def _rows(page) -> list[tuple[str, str]]:
    return page.eval_on_selector_all("#listing tbody tr:not([hidden])",
                                     "rs => rs.map(r => [r.dataset.name, r.querySelector('a').getAttribute('href')])")


def test_modified_order_of_the_server_is_the_scripts(tmp_path, browser):
    """The page's rows carry their times in whole seconds (``data-mtime``) and the script sorts by
    those; the server sorted by the float, so two files of one second came in another order than a
    click gives (the script then ties them by name)."""
    base = 1_700_000_000
    for name, frac in (("a", 0.4), ("b", 0.2), ("c", 0.3), ("d", -1.0), ("e", 0.49), ("f", 2.5), ("g", 3.5)):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, ns=(base * 10**9, int((base + frac) * 10**9)))
    page = browser.new_page()
    try:
        with Server(tmp_path) as srv:
            page.goto(f"{srv.url}/?sort=mtime&order=desc")
            server_desc = _rows(page)
            page.goto(f"{srv.url}/?sort=mtime&order=asc")
            server_asc = _rows(page)
            assert [n for n, _ in server_asc][:5] == ["d", "a", "b", "c", "e"]
            page.click("th[data-col=mtime] a")                   # the script: descending
            assert _rows(page) == server_desc
            page.click("th[data-col=mtime] a")
            assert _rows(page) == server_asc
            # The rows the script builds from the JSON listing (after a write) carry Math.round of
            # its times: the server's rows must carry the same second (a half rounds up there).
            shown = page.evaluate("""async () => {
                const doc = await (await fetch(location.pathname, {headers: {Accept: "application/json"}})).json();
                const rows = {};
                document.querySelectorAll("#listing tbody tr").forEach(r => { rows[r.dataset.name] = r.dataset.mtime; });
                return doc.entries.map(e => [e.name, String(Math.round(e.mtime)), rows[e.name]]);
            }""")
            assert len(shown) == 7 and all(script == server for _, script, server in shown), shown
    finally:
        page.close()


def test_names_shown_alike_keep_one_order_both_ways(tmp_path, browser):
    """Two names that are not UTF-8 may show alike (``a\\ufffd``); the script cannot tell them
    apart and keeps their order on a click (a stable sort), so the server must order them the same
    way whichever way the column goes: by the name on the disk, ascending, always."""
    root = os.fsencode(tmp_path)
    for raw in (b"a\xfe", b"a\xff", b"a\xfd", b"b", b"a"):
        with open(os.path.join(root, raw), "wb") as f:
            f.write(b"x")
    page = browser.new_page()
    try:
        with Server(tmp_path) as srv:
            page.goto(f"{srv.url}/?sort=name&order=desc")
            server_desc = _rows(page)
            page.goto(f"{srv.url}/?sort=name&order=asc")
            server_asc = _rows(page)
            assert [h for _, h in server_asc] == ["a", "a%FD", "a%FE", "a%FF", "b"]
            page.click("th[data-col=name] a")                    # the script: descending
            assert _rows(page) == server_desc
            page.click("th[data-col=name] a")
            assert _rows(page) == server_asc
            page.goto(f"{srv.url}/?sort=name&order=desc")        # from the server's descending page
            page.click("th[data-col=name] a")                    # the script: ascending
            assert _rows(page) == server_asc
    finally:
        page.close()


def test_lower_casing_of_the_browsers_unicode_is_not_the_servers(tmp_path, browser):
    """Python lower-cases with the Unicode of its build (3.11: 14.0), the browser with its own
    (Chromium: 17): ``\\ua7cb`` (Unicode 16) lower-cases to ``\\u0264`` in the page only, and a
    click sorted it elsewhere than the server. Names not ASCII carry the server's lower-cased
    text (``data-fold``), so the script never lower-cases beyond ASCII itself."""
    names = ["\ua7cb", "\u0265", "\u0263", "\u0264x", "a\ua7cb1", "a\u02652", "Éz", "éa", "b"]
    for i, n in enumerate(names):
        (tmp_path / n).write_bytes(b"x" * i)
    page = browser.new_page()
    try:
        with Server(tmp_path) as srv:
            by_name = None
            for col in ("name", "size"):
                page.goto(f"{srv.url}/?sort={col}&order=desc")
                server_desc = _rows(page)
                page.goto(f"{srv.url}/?sort={col}&order=asc")
                server_asc = _rows(page)
                by_name = by_name or [n for n, _ in server_asc]
                page.click(f"th[data-col={col}] a")
                assert _rows(page) == server_desc, col
                page.click(f"th[data-col={col}] a")
                assert _rows(page) == server_asc, col
            # The rows the script builds from the JSON listing sort alike too.
            order = page.evaluate("""async () => {
                const doc = await (await fetch(location.pathname, {headers: {Accept: "application/json"}})).json();
                return doc.entries.map(e => [e.name, e.fold]);
            }""")
            assert [n for n, _ in order] == by_name
            assert dict(order)["\ua7cb"] == "\ua7cb" and dict(order)["b"] is None
    finally:
        page.close()


def test_fold_is_the_text_the_key_compares():
    """``natural.fold`` (what the page is given for a name not ASCII) splits into the same pieces as
    the name, each text piece lower-cased as ``key`` lower-cases it."""
    import re

    from hypothesis import given, strategies as st

    from zcopy.http.natural import fold, key
    split = re.compile(r"([0-9]+)").split

    @given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=16))
    def check(name):
        a, b = split(name), split(fold(name))
        assert len(a) == len(b)
        assert all(x == y if i % 2 else x.lower() == y for i, (x, y) in enumerate(zip(a, b)))
        assert key(fold(name))[:-len(fold(name))] == key(name)[:-len(name)]
    check()
