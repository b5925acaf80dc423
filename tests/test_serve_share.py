"""Share links and the browser's CSRF rules over real sockets (docs/accounts.md, "Share links",
"Browsers"): `zcopy share` and `POST /.zcopy/share` mint a link, curl follows it without
credentials (whole, ranges, HEAD), and it stops at expiry, on tampering, for another file or
method, when its minter loses the right, and for everyone after `zcopy share --revoke-all`. The
client's `--user` for get/put/ls/rm/mv. Hashes are real argon2id (cheap ones)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from serverutil import Server, curl, wait_for
from test_serve_accounts import HASH, PW, basic, call

USERS = (f"alice {HASH['alice']} /pub:r /a/b:r /home/alice:rwd\n"
         f"bob {HASH['bob']} /inbox:w\n"
         f"reader {HASH['reader']} /:r\n")


def zcopy(*args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zcopy", *args], capture_output=True, text=True, timeout=60,
                          input=stdin, env={**os.environ, "ZCOPY_TOKEN": "", "ZCOPY_PASSWORD": "", **(env or {})})



def status_during_reload(port: int, path: str) -> int | None:
    """The status of a GET, or None when the connection was cut (an old worker draining at a reload)."""
    try:
        return call(port, "GET", path)[0]
    except (ConnectionError, OSError):
        return None


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    for folder in ("pub", "a/b", "secret", "inbox", "home/alice"):
        (root / folder).mkdir(parents=True)
    (root / "pub" / "hello.txt").write_bytes(b"hello, world")
    (root / "pub" / "other.txt").write_bytes(b"other")
    (root / "secret" / "s.txt").write_bytes(b"s")
    (root / "home" / "alice" / "a b.txt").write_bytes(b"spaces")
    users = tmp_path / "users.txt"
    users.write_text(USERS)
    return root, users, tmp_path / "state"


def mint(port: int, path: str, headers: dict, expires: int | None = None):
    query = f"path={path}" + (f"&expires={expires}" if expires is not None else "")
    status, head, body = call(port, "POST", f"/.zcopy/share?{query}", headers)
    return status, (json.loads(body) if status == 201 else body)


def test_a_share_link_downloads_one_file_without_credentials(tree):
    root, users, state = tree
    log = root.parent / "access.log"
    with Server(root, "--users", str(users), "--state-dir", str(state), "--access-log", str(log)) as s:
        out = zcopy("share", f"{s.url}/pub/hello.txt", "--expires", "10m", "--user", "alice", "--password-stdin",
                    stdin=PW["alice"] + "\n")
        assert out.returncode == 0, out.stderr
        link = out.stdout.strip()
        assert link.startswith(f"{s.url}/pub/hello.txt?share=")
        assert curl(link).stdout == b"hello, world"                          # no credentials
        assert curl("-r", "7-11", link).stdout == b"world"                   # ranges
        head = curl("-I", link).stdout.decode()
        assert head.startswith("HTTP/1.1 200") and "Content-Length: 12" in head
        token = link.partition("?share=")[2]
        # Only that file, only GET/HEAD: the same 403 and words whatever is wrong.
        refused = []
        for method, path in [("GET", f"/pub/other.txt?share={token}"), ("GET", f"/pub/?share={token}"),
                             ("GET", f"/secret/s.txt?share={token}"), ("GET", f"/pub/nothing?share={token}"),
                             ("PUT", f"/pub/hello.txt?share={token}"), ("DELETE", f"/pub/hello.txt?share={token}"),
                             ("GET", f"/pub/hello.txt?share={token[:-1]}{'A' if token[-1] != 'A' else 'B'}"),
                             ("GET", f"/pub/hello.txt?share=x{token}"), ("GET", "/pub/hello.txt?share=")]:
            status, _, body = call(s.port, method, path, body=b"x" if method == "PUT" else None)
            refused.append((status, body))
        assert {r for r in refused} == {(403, b"403 Forbidden\nthis share link is not valid (expired, revoked or "
                                               b"altered)\n")}, refused
        assert (root / "pub" / "hello.txt").read_bytes() == b"hello, world"
        # A link wins over credentials the request also carries (it is what is being used).
        assert call(s.port, "GET", f"/pub/hello.txt?share={token}", basic("bob"))[2] == b"hello, world"
        # The API: JSON with the link as a path, 201; names with spaces are encoded.
        status, doc = mint(s.port, "/home/alice/a%20b.txt", basic("alice"), expires=60)
        assert status == 201 and doc["path"] == "/home/alice/a b.txt"
        assert doc["url"].startswith("/home/alice/a%20b.txt?share=") and time.time() < doc["expires"] <= time.time() + 61
        assert curl(s.url + doc["url"]).stdout == b"spaces"
    assert " share:alice " in log.read_text()          # the access log names the link's minter


def test_who_may_share_and_what_a_refusal_reveals(tree):
    root, users, state = tree
    with Server(root, "--users", str(users), "--state-dir", str(state), "--token", "wtok",
                "--read-token", "rtok") as s:
        assert mint(s.port, "/pub/hello.txt", {})[0] == 401                          # anonymous: sign in
        # No right to read: 403, the same for a file that exists and one that does not.
        assert mint(s.port, "/secret/s.txt", basic("alice")) == mint(s.port, "/secret/nothing", basic("alice"))
        assert mint(s.port, "/secret/s.txt", basic("alice"))[0] == 403
        assert mint(s.port, "/inbox/x", basic("bob"))[0] == 403                     # w is not r
        assert mint(s.port, "/pub/hello.txt", {"Authorization": "Bearer rtok"})[0] == 403   # the read token
        assert mint(s.port, "/pub/nothing", basic("alice"))[0] == 404              # may read there: it is missing
        assert mint(s.port, "/pub", basic("alice"))[1]["url"].startswith("/pub/?share=")   # a folder link
        assert mint(s.port, "/.zcopy/ping", basic("reader"))[0] == 403             # never the server's own
        for bad in ("expires=0", "expires=99999999999", "expires=soon"):
            assert call(s.port, "POST", f"/.zcopy/share?path=/pub/hello.txt&{bad}", basic("alice"))[0] == 400
        assert call(s.port, "POST", "/.zcopy/share?path=pub", basic("alice"))[0] == 400
        assert call(s.port, "GET", "/.zcopy/share?path=/pub/hello.txt", basic("alice"))[0] == 405
        status, doc = mint(s.port, "/secret/s.txt", {"Authorization": "Bearer wtok"})   # the write token may
        assert status == 201
        assert curl(s.url + doc["url"]).stdout == b"s"
        # The client says the server's refusal in one line, exit 1.
        out = zcopy("share", f"{s.url}/secret/s.txt", "--user", "alice", env={"ZCOPY_PASSWORD": PW["alice"]})
        assert out.returncode == 1 and out.stderr.count("\n") == 1 and "403" in out.stderr


def test_a_link_stops_at_expiry_when_its_minter_loses_the_right_and_after_revoke_all(tree):
    root, users, state = tree
    with Server(root, "--users", str(users), "--state-dir", str(state)) as s:
        short = mint(s.port, "/pub/hello.txt", basic("alice"), expires=1)[1]["url"]
        keep = mint(s.port, "/pub/hello.txt", basic("reader"), expires=600)[1]["url"]
        (root / "a" / "b" / "x.txt").write_bytes(b"x")
        lose = mint(s.port, "/a/b/x.txt", basic("alice"), expires=600)[1]["url"]
        assert curl(s.url + lose).stdout == b"x"
        wait_for(lambda: call(s.port, "GET", short)[0] == 403, what="the 1 s link to expire")
        # alice loses /a/b: her link to it stops at the reload (the file changed); reader's stays.
        users.write_text(USERS.replace(" /a/b:r", ""))
        wait_for(lambda: call(s.port, "GET", lose)[0] == 403, what="the reload to void alice's link")
        assert call(s.port, "GET", keep)[2] == b"hello, world"
        # Every link at once: a new secret, then SIGHUP (new workers read it).
        out = zcopy("share", "--revoke-all", "--state-dir", str(state))
        assert out.returncode == 0, out.stderr
        assert (state / "secret").stat().st_mode & 0o777 == 0o600
        os.kill(s.proc.pid, signal.SIGHUP)
        wait_for(lambda: status_during_reload(s.port, keep) == 403, what="SIGHUP to void every link")
        fresh = mint(s.port, "/pub/hello.txt", basic("reader"))[1]["url"]
        assert call(s.port, "GET", fresh)[2] == b"hello, world"


def test_share_without_a_users_file_needs_the_write_token(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"data")
    with Server(tmp_path, "--token", "tok", "--allow-write", "--state-dir", str(tmp_path / ".st")) as s:
        assert mint(s.port, "/f.bin", {})[0] == 401
        # Nobody signs in without a users file: the page is told so (and shows no sign-in link).
        assert json.loads(call(s.port, "GET", "/.zcopy/me")[2]) == {"user": None, "csrf": None, "login": None,
                                                                     "logout": None}
        assert call(s.port, "GET", "/.zcopy/login")[0] == 404
        out = zcopy("share", f"{s.url}/f.bin", "--token", "tok", "--json")
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert curl(doc["url"]).stdout == b"data"


def test_share_command_line_errors_are_one_line_exit_2():
    for args in (["share"], ["share", "http://127.0.0.1:9/x", "--expires", "soon"],
                 ["share", "http://127.0.0.1:9/x", "--expires", "400d"],
                 ["share", "--revoke-all", "http://127.0.0.1:9/x"],
                 ["share", "http://127.0.0.1:9/x", "--password-stdin"]):
        out = zcopy(*args)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, (args, out.stderr)


def test_client_commands_sign_in_with_user(tree):
    root, users, state = tree
    (root / "home" / "alice" / "old").write_bytes(b"old")
    with Server(root, "--users", str(users), "--state-dir", str(state)) as s:
        env = {"ZCOPY_PASSWORD": PW["alice"]}
        src = root.parent / "up.txt"
        src.write_bytes(b"uploaded")
        assert zcopy("put", str(src), f"{s.url}/home/alice/", "-q", "--user", "alice", env=env).returncode == 0
        assert (root / "home" / "alice" / "up.txt").read_bytes() == b"uploaded"
        out = zcopy("ls", f"{s.url}/home/alice/", "--json", "--user", "alice", "--password-stdin",
                    stdin=PW["alice"] + "\n")
        assert {e["name"] for e in json.loads(out.stdout)["entries"]} == {"a b.txt", "old", "up.txt"}
        dest = root.parent / "got.txt"
        assert zcopy("get", f"{s.url}/home/alice/up.txt", "-o", str(dest), "-q", "--user", "alice",
                     env=env).returncode == 0
        assert dest.read_bytes() == b"uploaded"
        assert zcopy("mv", f"{s.url}/home/alice/old", "new", "--user", "alice", env=env).returncode == 0
        assert (root / "home" / "alice" / "new").read_bytes() == b"old"
        assert zcopy("rm", f"{s.url}/home/alice/new", "--user", "alice", env=env).returncode == 0
        assert not (root / "home" / "alice" / "new").exists()
        wrong = zcopy("get", f"{s.url}/home/alice/up.txt", "-o", str(dest) + "2", "--user", "alice",
                      env={"ZCOPY_PASSWORD": "wrong"})
        assert wrong.returncode == 1 and "401" in wrong.stderr
        assert PW["alice"] not in wrong.stderr


def test_csrf_cookie_writes_need_the_token_and_cross_site_writes_are_refused(tree):
    root, users, state = tree
    with Server(root, "--users", str(users), "--state-dir", str(state)) as s:
        status, head, _ = call(s.port, "GET", "/.zcopy/login?next=/home/alice/", basic("alice"))
        assert status == 303 and head["location"] == "/home/alice/"
        cookie = head["set-cookie"].split(";")[0]
        assert "HttpOnly" in head["set-cookie"] and "SameSite=Strict" in head["set-cookie"]
        assert "Secure" not in head["set-cookie"]              # plain HTTP (the TLS transport says secure)
        me = json.loads(call(s.port, "GET", "/.zcopy/me", {"Cookie": cookie})[2])
        assert me["user"] == "alice" and me["csrf"]
        assert json.loads(call(s.port, "GET", "/.zcopy/me")[2])["user"] is None
        # The cookie alone does not write; with the page's token it does.
        assert call(s.port, "PUT", "/home/alice/c1", {"Cookie": cookie}, body=b"1")[0] == 403
        assert call(s.port, "PUT", "/home/alice/c1", {"Cookie": cookie, "X-Zcopy-Csrf": me["csrf"][:-1] + "x"},
                    body=b"1")[0] == 403
        assert not (root / "home" / "alice" / "c1").exists()
        assert call(s.port, "PUT", "/home/alice/c1", {"Cookie": cookie, "X-Zcopy-Csrf": me["csrf"]},
                    body=b"1")[0] == 201
        assert call(s.port, "POST", "/.zcopy/share?path=/pub/hello.txt", {"Cookie": cookie})[0] == 403
        # From another site: refused whatever the credentials (a browser adds Basic and cookies itself).
        for extra in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                      {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}):
            for creds in ({"Cookie": cookie, "X-Zcopy-Csrf": me["csrf"]}, basic("alice")):
                assert call(s.port, "DELETE", "/home/alice/c1", {**creds, **extra})[0] == 403, extra
        assert (root / "home" / "alice" / "c1").exists()
        # Same origin (Origin equal to Host) passes; Basic clients without browser headers are unaffected.
        assert call(s.port, "DELETE", "/home/alice/c1", {**basic("alice"), "Origin": "http://t",
                                                         "Sec-Fetch-Site": "same-origin"})[0] == 204
        assert curl("-u", f"alice:{PW['alice']}", "-T", "-", f"{s.url}/home/alice/c2").returncode == 0
        # Reading with the cookie needs no token; the redirect after login never leaves the origin.
        assert call(s.port, "GET", "/home/alice/c2", {"Cookie": cookie})[2] == b""
        for bad in ("//evil.example/", "http://evil.example/", "/\\evil"):
            status, head, _ = call(s.port, "GET", f"/.zcopy/login?next={bad}", basic("alice"))
            assert status == 204 and "location" not in head


def test_a_folder_archive_holds_only_what_the_account_may_read(tree):
    """?download=tar for an account that reads part of the tree: the entries it may not read are
    left out (not refused), folders that lead to nothing readable too."""
    import io
    import tarfile

    root, users, state = tree
    (root / "a" / "b" / "x.txt").write_bytes(b"x")
    (root / "a" / "c").mkdir()
    (root / "a" / "c" / "y.txt").write_bytes(b"y")
    (root / "a" / "top.txt").write_bytes(b"t")
    (root / "pub" / "deep").mkdir()
    (root / "pub" / "deep" / "z.txt").write_bytes(b"z")
    with Server(root, "--users", str(users), "--state-dir", str(state)) as s:
        def members(path: str, user: str | None) -> dict:
            status, head, body = call(s.port, "GET", path, basic(user) if user else {})
            assert status == 200, (status, body)
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                return {m.name: (tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()}

        # alice reads /pub and /a/b (and her home): / holds just the way to them.
        got = members("/?download=tar", "alice")
        assert got == {"a": None, "a/b": None, "a/b/x.txt": b"x", "home": None, "home/alice": None,
                       "home/alice/a b.txt": b"spaces", "pub": None, "pub/deep": None, "pub/deep/z.txt": b"z",
                       "pub/hello.txt": b"hello, world", "pub/other.txt": b"other"}
        assert members("/a/?download=tar", "alice") == {"b": None, "b/x.txt": b"x"}
        # A reader of everything gets everything; a drop box account gets 403; anonymous 401.
        assert "secret/s.txt" in members("/?download=tar", "reader")
        assert call(s.port, "GET", "/inbox/?download=tar", basic("bob"))[0] == 403
        assert call(s.port, "GET", "/?download=tar")[0] == 401


def test_a_drop_box_link_takes_new_files_and_nothing_else(tree):
    root, users, state = tree
    (root / "inbox" / "old.txt").write_bytes(b"old")
    with Server(root, "--users", str(users), "--state-dir", str(state), "--workers", "1") as s:   # one reload
        out = zcopy("share", f"{s.url}/inbox/", "--drop", "--user", "bob", "--json",
                    env={"ZCOPY_PASSWORD": PW["bob"]})
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["rights"] == "w" and doc["url"].startswith(f"{s.url}/inbox/?share=")
        token = doc["url"].partition("?share=")[2]
        src = root.parent / "new file.txt"
        src.write_bytes(b"dropped")
        r = curl("-T", str(src), "-o", "/dev/null", "-w", "%{http_code}", f"{s.url}/inbox/new%20file.txt?share={token}")
        assert r.stdout == b"201"
        assert (root / "inbox" / "new file.txt").read_bytes() == b"dropped"
        assert call(s.port, "PUT", f"/inbox/old.txt?share={token}", body=b"x")[0] == 403     # no replacing
        assert (root / "inbox" / "old.txt").read_bytes() == b"old"
        for method, path in (("GET", "/inbox/new%20file.txt"), ("GET", "/inbox/"), ("DELETE", "/inbox/old.txt"),
                             ("PUT", "/pub/x"), ("PUT", "/inbox"), ("MKCOL", "/inbox/d/")):
            assert call(s.port, method, f"{path}?share={token}", body=b"x" if method == "PUT" else None)[0] == 403
        # Who may make one: w on the folder (alice reads /pub, cannot drop there); only a folder.
        assert mint(s.port, "/pub&rights=w", basic("alice"))[0] == 403
        assert call(s.port, "POST", "/.zcopy/share?path=/inbox/old.txt&rights=w", basic("bob"))[0] == 400
        assert call(s.port, "POST", "/.zcopy/share?path=/inbox&rights=rw", basic("bob"))[0] == 400
        # bob loses the folder: his drop link stops.
        users.write_text(USERS.replace(" /inbox:w", " /elsewhere:w"))
        wait_for(lambda: mint(s.port, "/inbox&rights=w", basic("bob"))[0] == 403, what="the reload")
        assert call(s.port, "PUT", f"/inbox/late?share={token}", body=b"l")[0] == 403
        assert not (root / "inbox" / "late").exists()


def test_browser_writes_behind_a_trusted_proxy_compare_the_origin_with_x_forwarded_host(tree):
    """A proxy that sends its own Host upstream says the browser's in X-Forwarded-Host: believed only
    from --trusted-proxy (here 127.0.0.1, the test's own address)."""
    root, users, state = tree
    headers = {**basic("alice"), "Origin": "https://files.example", "X-Forwarded-Host": "files.example",
               "Sec-Fetch-Site": "same-origin"}
    with Server(root, "--users", str(users), "--state-dir", str(state)) as s:
        assert call(s.port, "PUT", "/home/alice/p1", headers, body=b"1")[0] == 403     # not a trusted proxy
    with Server(root, "--users", str(users), "--state-dir", str(state), "--trusted-proxy", "127.0.0.1") as s:
        assert call(s.port, "PUT", "/home/alice/p1", headers, body=b"1")[0] == 201
        assert call(s.port, "PUT", "/home/alice/p2", {**headers, "X-Forwarded-Host": "evil.example"},
                    body=b"2")[0] == 403


def test_a_folder_link_lists_and_downloads_that_folder(tree):
    """A read link to a folder becomes a cookie scoped to the folder's path (so the listing's own links
    work), then the folder's page; only what is beneath it, only reads; the minter must read the
    whole subtree."""
    import io
    import tarfile

    root, users, state = tree
    (root / "pub" / "deep").mkdir()
    (root / "pub" / "deep" / "z z.txt").write_bytes(b"z")
    with Server(root, "--users", str(users), "--state-dir", str(state)) as s:
        out = zcopy("share", f"{s.url}/pub", "--user", "alice", env={"ZCOPY_PASSWORD": PW["alice"]})
        assert out.returncode == 0, out.stderr
        link = out.stdout.strip()
        assert link.startswith(f"{s.url}/pub/?share=")
        status, head, _ = call(s.port, "GET", link[len(s.url):])
        assert status == 303 and head["location"] == "/pub/"
        cookie = head["set-cookie"]
        assert cookie.startswith("zcopy_share=") and "Path=/pub/;" in cookie and "HttpOnly" in cookie
        jar = root.parent / "jar"
        listing = curl("-L", "-c", str(jar), "-b", str(jar), "-H", "Accept: application/json", link)
        assert {e["name"] for e in json.loads(listing.stdout)["entries"]} == {"deep", "hello.txt", "other.txt"}
        assert curl("-b", str(jar), f"{s.url}/pub/deep/z%20z.txt").stdout == b"z"     # the listing's links work
        tar = curl("-b", str(jar), f"{s.url}/pub/?download=tar").stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            assert sorted(t.getnames()) == ["deep", "deep/z z.txt", "hello.txt", "other.txt"]
        # Nothing outside it, nothing but reads (the cookie is not sent there, or does not count).
        value = cookie.split(";")[0]
        assert call(s.port, "GET", "/secret/s.txt", {"Cookie": value})[0] == 401
        assert call(s.port, "PUT", "/pub/new", {"Cookie": value}, body=b"n")[0] == 401
        assert call(s.port, "GET", "/pub/", {"Cookie": value + "x"})[0] == 401               # tampered: not used
        # Who may: whoever reads the whole subtree (reader reads /; alice does not read / at all).
        assert mint(s.port, "/", basic("reader"))[0] == 201
        assert mint(s.port, "/", basic("alice"))[0] == 403
    users.write_text(USERS + f"partial {HASH['mover']} /:r /secret:-\n")
    with Server(root, "--users", str(users), "--state-dir", str(state)) as s:
        assert mint(s.port, "/", basic("partial", PW["mover"]))[0] == 403                    # /secret is not theirs
        assert mint(s.port, "/pub", basic("partial", PW["mover"]))[0] == 201


def test_a_signed_in_account_keeps_its_rights_inside_a_folder_it_opened_a_link_to(tree):
    root, users, state = tree
    with Server(root, "--users", str(users), "--state-dir", str(state)) as s:
        link = mint(s.port, "/home/alice", basic("alice"))[1]["url"]
        share_cookie = call(s.port, "GET", link)[1]["set-cookie"].split(";")[0]
        session = call(s.port, "GET", "/.zcopy/login", basic("alice"))[1]["set-cookie"].split(";")[0]
        both = {"Cookie": f"{share_cookie}; {session}", "Accept": "text/html"}
        page = call(s.port, "GET", "/home/alice/", both)[2]
        assert b'data-write="1"' in page                      # alice's own rights, not the link's
        page = call(s.port, "GET", "/home/alice/", {"Cookie": share_cookie, "Accept": "text/html"})[2]
        assert b'data-write="0"' in page                      # the link's alone: read only
