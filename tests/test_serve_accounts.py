"""`zcopy serve --users FILE` over real sockets: HTTP Basic with curl and raw sockets, the rules of
docs/accounts.md per method, listings filtered, drop boxes, tokens beside accounts, the access log's
user field, throttling, the verification cap, and reloads (file change, SIGHUP). Hashes are real
argon2id (cheap ones, except where the cost is the point)."""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import time

import pytest

from serverutil import Server, connect, curl, read_response, request, serve_refused
from zcopy.accounts import passwords

FAST = dict(time_cost=1, memory_kib=passwords.MIN_MEMORY_KIB)
PW = {name: f"{name}-pw" for name in ("alice", "reader", "bob", "mover")}
HASH = {name: passwords.make(pw, **FAST) for name, pw in PW.items()}
USERS = (f"alice {HASH['alice']} /pub:r /a/b:r /home/alice:rwd\n"
         f"reader {HASH['reader']} /:r\n"
         f"bob {HASH['bob']} /inbox:w\n"
         f"mover {HASH['mover']} /src:rd /dst:w\n"
         "* - /pub:r\n")


def basic(user: str, password: str | None = None) -> dict:
    password = PW[user] if password is None else password
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def call(port: int, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    if body is not None:
        extra += f"Content-Length: {len(body)}\r\n"
    raw = f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n".encode() + (body or b"")
    return request(port, raw, head_only=method == "HEAD")


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    for folder in ("pub", "a/b", "a/c", "secret", "inbox", "home/alice", "src", "dst"):
        (root / folder).mkdir(parents=True)
    (root / "pub" / "hello.txt").write_bytes(b"hello")
    (root / "a" / "b" / "x.txt").write_bytes(b"x")
    (root / "a" / "c" / "y.txt").write_bytes(b"y")
    (root / "secret" / "s.txt").write_bytes(b"s")
    (root / "src" / "f").write_bytes(b"f")
    users = tmp_path / "users.txt"
    users.write_text(USERS)
    # Each test its own state folder: failed sign-ins are counted there, shared by the workers.
    return root, users


def test_anonymous_gets_the_star_account_and_a_basic_challenge(tree):
    root, users = tree
    with Server(root, "--users", str(users), "--state-dir", str(users.parent / "state")) as s:
        assert call(s.port, "GET", "/pub/hello.txt")[2] == b"hello"          # '*' reads /pub
        status, headers, _ = call(s.port, "GET", "/secret/s.txt")
        assert status == 401
        assert headers["www-authenticate"] == 'Basic realm="zcopy", charset="UTF-8"'
        assert call(s.port, "PUT", "/pub/new", body=b"n")[0] == 401        # writes never anonymous
        assert not (root / "pub" / "new").exists()
        # Refused before the walk: what is there stays unsaid (not 409 "a file is not a folder", not 404).
        assert call(s.port, "PUT", "/pub/hello.txt/x", body=b"x")[0] == 401
        assert call(s.port, "DELETE", "/nothing/here")[0] == 401
        assert call(s.port, "MOVE", "/pub/hello.txt", {**basic("reader"), "Destination": "/nothing/x"})[0] == 403
        assert call(s.port, "PUT", "/secret/s.txt/x", basic("reader"), body=b"x")[0] == 403
        # curl signs in after the challenge, as a browser would.
        r = curl("-u", f"reader:{PW['reader']}", f"{s.url}/secret/s.txt")
        assert r.stdout == b"s"
        r = curl("-o", "/dev/null", "-w", "%{http_code}", "-u", "reader:wrong", f"{s.url}/secret/s.txt")
        assert r.stdout == b"401"


def test_read_only_user_reads_and_cannot_write(tree):
    root, users = tree
    with Server(root, "--users", str(users), "--state-dir", str(users.parent / "state")) as s:
        auth = basic("reader")
        assert call(s.port, "GET", "/secret/s.txt", auth)[2] == b"s"
        for method, path in (("PUT", "/secret/s.txt"), ("PUT", "/new"), ("DELETE", "/secret/s.txt"),
                             ("MKCOL", "/newdir")):
            status, _, _ = call(s.port, method, path, auth, body=b"z" if method == "PUT" else None)
            assert status == 403, (method, path)
        assert (root / "secret" / "s.txt").read_bytes() == b"s"
        assert not (root / "new").exists() and not (root / "newdir").exists()


def test_a_write_only_folder_is_a_drop_box(tree):
    root, users = tree
    with Server(root, "--users", str(users), "--state-dir", str(users.parent / "state")) as s:
        auth = basic("bob")
        report = root.parent / "report.txt"
        report.write_bytes(b"report")
        r = curl("-u", f"bob:{PW['bob']}", "-T", str(report), "-o", "/dev/null", "-w", "%{http_code}",
                 f"{s.url}/inbox/report.txt")
        assert r.stdout == b"201" and (root / "inbox" / "report.txt").read_bytes() == b"report"
        assert call(s.port, "PUT", "/inbox/new.txt", auth, body=b"data")[0] == 201
        assert (root / "inbox" / "new.txt").read_bytes() == b"data"
        assert call(s.port, "PUT", "/inbox/new.txt", auth, body=b"evil")[0] == 403     # replacing needs d
        assert (root / "inbox" / "new.txt").read_bytes() == b"data"
        assert call(s.port, "GET", "/inbox/new.txt", auth)[0] == 403
        assert call(s.port, "GET", "/inbox/", auth)[0] == 403                          # no listing
        assert call(s.port, "DELETE", "/inbox/new.txt", auth)[0] == 403
        assert call(s.port, "MKCOL", "/inbox/sub", auth)[0] == 201
        assert call(s.port, "PUT", "/inbox2/x", auth, body=b"x")[0] == 403              # whole segments
        assert call(s.port, "PUT", "/pub/x", auth, body=b"x")[0] == 403
        assert (root / "inbox" / "new.txt").read_bytes() == b"data"


def test_listings_show_only_what_the_user_may_read(tree):
    root, users = tree
    with Server(root, "--users", str(users), "--state-dir", str(users.parent / "state")) as s:
        auth = {**basic("alice"), "Accept": "application/json"}

        def names(path):
            status, _, body = call(s.port, "GET", path, auth)
            assert status == 200, path
            return sorted(e["name"] for e in json.loads(body)["entries"])

        assert names("/") == ["a", "home", "pub"]         # folders that lead to something readable
        assert names("/a/") == ["b"]
        assert names("/a/b/") == ["x.txt"]
        assert call(s.port, "GET", "/a/c/", auth)[0] == 403
        assert call(s.port, "GET", "/a/c/y.txt", auth)[0] == 403
        assert call(s.port, "GET", "/secret/s.txt", auth)[0] == 403
        # Anonymous ('*': /pub:r) sees pub alone.
        status, _, body = call(s.port, "GET", "/", {"Accept": "application/json"})
        assert status == 200 and [e["name"] for e in json.loads(body)["entries"]] == ["pub"]


def test_move_needs_d_on_the_source_and_w_on_the_destination(tree):
    root, users = tree
    with Server(root, "--users", str(users), "--state-dir", str(users.parent / "state")) as s:
        auth = basic("mover")
        assert call(s.port, "MOVE", "/src/f", {**auth, "Destination": "/pub/f"})[0] == 403   # no w there
        assert call(s.port, "MOVE", "/src/f", {**auth, "Destination": "/dst/f"})[0] == 201
        assert (root / "dst" / "f").read_bytes() == b"f"
        (root / "src" / "g").write_bytes(b"g")
        assert call(s.port, "MOVE", "/src/g", {**auth, "Destination": "/dst/f"})[0] == 403   # replacing: w+d
        assert (root / "dst" / "f").read_bytes() == b"f"
        assert call(s.port, "MOVE", "/dst/f", {**auth, "Destination": "/src/h"})[0] == 403   # no d on /dst
        alice = basic("alice")
        assert call(s.port, "PUT", "/home/alice/n", alice, body=b"1")[0] == 201
        assert call(s.port, "PUT", "/home/alice/n", alice, body=b"2")[0] == 204             # w+d: replaces
        assert call(s.port, "DELETE", "/home/alice/n", alice)[0] == 204


def test_tokens_keep_working_beside_accounts(tree):
    root, users = tree
    with Server(root, "--users", str(users), "--state-dir", str(users.parent / "state"), "--token", "T0KEN") as s:
        assert call(s.port, "PUT", "/secret/t", {"Authorization": "Bearer T0KEN"}, body=b"t")[0] == 201
        r = curl("-u", "anyone:T0KEN", f"{s.url}/secret/t")
        assert r.stdout == b"t"
        assert call(s.port, "GET", "/secret/t", basic("alice", "T0KEN"))[0] == 401   # never opens an account


def test_keep_alive_signs_in_once_and_the_access_log_names_the_user(tree, tmp_path):
    root, users = tree
    log = tmp_path / "access.log"
    with Server(root, "--users", str(users), "--state-dir", str(users.parent / "state"), "--access-log", str(log)) as s:
        head = (b"GET /pub/hello.txt HTTP/1.1\r\nHost: t\r\n" +
                f"Authorization: {basic('alice')['Authorization']}\r\n\r\n".encode())
        with connect(s.port) as sock:
            for _ in range(5):
                sock.sendall(head)
                status, _, body, _ = read_response(sock)
                assert (status, body) == (200, b"hello")
            sock.sendall(b"GET /pub/hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")     # then anonymous, same connection
            assert read_response(sock)[0] == 200
        assert call(s.port, "GET", "/secret/s.txt", basic("alice", "nope"))[0] == 401
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and log.read_text().count("\n") < 7:
            time.sleep(0.05)
    lines = log.read_text().splitlines()
    assert [line.split()[2] for line in lines] == ["alice"] * 5 + ["-", "-"]


def test_wrong_passwords_are_throttled_per_address(tree):
    root, users = tree
    with Server(root, "--users", str(users), "--state-dir", str(users.parent / "state")) as s:
        statuses = [call(s.port, "GET", "/pub/hello.txt", basic("alice", f"guess{i}"))[0] for i in range(30)]
        assert statuses[0] == 401 and statuses[-1] == 429
        status, headers, _ = call(s.port, "GET", "/pub/hello.txt", basic("alice"))    # even the right one waits
        assert status == 429 and int(headers["retry-after"]) > 0
        assert call(s.port, "GET", "/pub/hello.txt")[0] == 200                         # anonymous reads are not held


def test_verifications_are_capped(tree, tmp_path):
    """Beyond 2 running and 16 queued checks, 503 with Retry-After; the loop keeps serving meanwhile."""
    root, users = tree
    slow = passwords.make("slow-pw")            # the default cost: about 0.15 s each
    users.write_text(USERS + f"slow {slow} /:r\n")
    header = ("Authorization: Basic " + base64.b64encode(b"slow:slow-pw").decode()).encode()
    with Server(root, "--users", str(users), "--state-dir", str(users.parent / "state"), "--workers", "1") as s:
        socks = [connect(s.port, timeout=60) for _ in range(30)]
        try:
            for sock in socks:
                sock.sendall(b"GET /pub/hello.txt HTTP/1.1\r\nHost: t\r\n" + header + b"\r\n\r\n")
            # The loop is not held by the checks: an anonymous request is answered meanwhile.
            assert call(s.port, "GET", "/pub/hello.txt")[0] == 200
            results = [read_response(sock) for sock in socks]
        finally:
            for sock in socks:
                sock.close()
    statuses = [r[0] for r in results]
    assert statuses.count(200) >= 18 and 503 in statuses
    assert all(r[1]["retry-after"] == "1" for r in results if r[0] == 503)


def stderr_until(server, needle: bytes, timeout: float = 10.0) -> bytes:
    """The server's stderr from now until ``needle`` has appeared twice (once per worker) or time is up."""
    got = b""
    deadline = time.monotonic() + timeout
    while got.count(needle) < 2 and time.monotonic() < deadline:
        r, _, _ = select.select([server.proc.stderr], [], [], 0.2)
        if r:
            got += os.read(server.proc.stderr.fileno(), 65536)
    return got


def wait_status(port, path, headers, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        status = call(port, "GET", path, headers)[0]
        if status == want or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def test_the_users_file_is_reread_when_it_changes(tree):
    root, users = tree
    with Server(root, "--users", str(users), "--state-dir", str(users.parent / "state"), "--workers", "2") as s:
        auth = basic("reader")
        assert call(s.port, "GET", "/secret/s.txt", auth)[0] == 200
        users.write_text(USERS.replace(f"reader {HASH['reader']} /:r", f"reader {HASH['reader']} /pub:r"))
        deadline = time.monotonic() + 10                                        # each worker, within its tick
        while [call(s.port, "GET", "/secret/s.txt", auth)[0] for _ in range(8)] != [403] * 8:
            assert time.monotonic() < deadline, "the changed rule was not applied by every worker"
            time.sleep(0.2)
        users.write_text("reader broken-hash /:r\n")                            # malformed: old accounts stay
        said = stderr_until(s, b"--users not reloaded")
        assert said.count(b"--users not reloaded") == 2 and b"users.txt:1:" in said   # each worker says why
        assert call(s.port, "GET", "/pub/hello.txt", auth)[0] == 200
        assert call(s.port, "GET", "/secret/s.txt", auth)[0] == 403


def test_sighup_rereads_the_users_file(tree):
    root, users = tree
    with Server(root, "--users", str(users), "--state-dir", str(users.parent / "state")) as s:
        auth = basic("reader")
        assert call(s.port, "GET", "/secret/s.txt", auth)[0] == 200
        st = users.stat()
        # The same size and mtime: the workers' own change check cannot see it; SIGHUP must.
        users.write_text(USERS.replace(f"reader {HASH['reader']} /:r", f"reader {HASH['reader']} /:-"))
        os.utime(users, ns=(st.st_atime_ns, st.st_mtime_ns))
        s.proc.send_signal(signal.SIGHUP)
        assert wait_status(s.port, "/secret/s.txt", auth, 403) == 403


def test_a_malformed_users_file_stops_the_start(tmp_path):
    users = tmp_path / "users.txt"
    users.write_text(f"alice {HASH['alice']} /:r\nbob not-a-hash /:r\n")
    r = serve_refused(str(tmp_path), "--port", "0", "--users", str(users))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{users}:2:" in lines[0]
    r = serve_refused(str(tmp_path), "--port", "0", "--users", str(tmp_path / "missing"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_trusted_proxy_throttles_the_forwarded_address(tree):
    root, users = tree
    with Server(root, "--users", str(users), "--state-dir", str(users.parent / "state"), "--trusted-proxy", "127.0.0.1") as s:
        for i in range(12):
            call(s.port, "GET", "/pub/hello.txt", {**basic("alice", "bad"), "X-Forwarded-For": "203.0.113.9"})
        held = {**basic("alice"), "X-Forwarded-For": "203.0.113.9"}
        assert call(s.port, "GET", "/pub/hello.txt", held)[0] == 429
        other = {**basic("alice"), "X-Forwarded-For": "198.51.100.1"}
        assert call(s.port, "GET", "/pub/hello.txt", other)[0] == 200
    # Without the flag the header is the client's word and counts for nothing.
    with Server(root, "--users", str(users), "--state-dir", str(users.parent / "state")) as s:
        for i in range(12):
            call(s.port, "GET", "/pub/hello.txt", {**basic("alice", "bad"), "X-Forwarded-For": f"10.0.0.{i}"})
        assert call(s.port, "GET", "/pub/hello.txt", {**basic("alice"), "X-Forwarded-For": "10.9.9.9"})[0] == 429


def test_throttling_holds_across_workers(tree):
    """Ten failures in all, whichever worker took them: the state database counts for every worker."""
    root, users = tree
    with Server(root, "--users", str(users), "--state-dir", str(users.parent / "state"), "--workers", "2") as s:
        statuses = [call(s.port, "GET", "/pub/hello.txt", basic("alice", f"guess{i}"))[0] for i in range(30)]
    assert statuses.count(401) == 10 and statuses[10:] == [429] * 20


def test_an_upload_without_d_never_replaces_a_file_that_appears_meanwhile(tree):
    """The rights were checked when the name was free; the commit must not replace what appeared
    while the body arrived (linkat, not rename): 403, the other file intact, nothing left behind."""
    root, users = tree
    with Server(root, "--users", str(users)) as s:
        with connect(s.port) as sock:
            sock.sendall(b"PUT /inbox/race HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n"
                         + f"Authorization: {basic('bob')['Authorization']}\r\n\r\n".encode())
            assert read_response(sock)[0] == 100               # checked, the upload started
            (root / "inbox" / "race").write_bytes(b"theirs")
            sock.sendall(b"mine")
            status, _, body, _ = read_response(sock)
        assert status == 403 and b"d right" in body
        assert (root / "inbox" / "race").read_bytes() == b"theirs"
        assert sorted(os.listdir(root / "inbox")) == ["race"]
        # With d the same race replaces, as a PUT of an existing name would.
        with connect(s.port) as sock:
            sock.sendall(b"PUT /home/alice/race HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n"
                         + f"Authorization: {basic('alice')['Authorization']}\r\n\r\n".encode())
            assert read_response(sock)[0] == 100
            (root / "home" / "alice" / "race").write_bytes(b"theirs")
            sock.sendall(b"mine")
            assert read_response(sock)[0] == 204
        assert (root / "home" / "alice" / "race").read_bytes() == b"mine"


def test_browser_login_gives_a_session_cookie(tree, tmp_path):
    root, users = tree
    jar = tmp_path / "cookies.txt"
    with Server(root, "--users", str(users), "--state-dir", str(users.parent / "state")) as s:
        # Without credentials: the Basic challenge (the browser then asks for name and password).
        status, headers, _ = call(s.port, "GET", "/.zcopy/login")
        assert status == 401 and headers["www-authenticate"].startswith("Basic ")
        r = curl("-u", f"reader:{PW['reader']}", "-c", str(jar), "-D", "-", "-o", "/dev/null",
                 f"{s.url}/.zcopy/login")
        head = r.stdout.decode()
        assert " 204 " in head.splitlines()[0]
        cookie = [line for line in head.splitlines() if line.lower().startswith("set-cookie:")]
        assert len(cookie) == 1
        for attr in ("zcopy_session=", "HttpOnly", "SameSite=Strict", "Path=/"):
            assert attr in cookie[0]
        # The cookie alone signs the browser in; what it reads that way is not for a shared cache.
        assert curl("-b", str(jar), f"{s.url}/secret/s.txt").stdout == b"s"
        r = curl("-b", str(jar), "-D", "-", "-o", "/dev/null", f"{s.url}/secret/s.txt")
        assert b"\r\nCache-Control: private\r\n" in r.stdout
        r = curl("-D", "-", "-o", "/dev/null", f"{s.url}/pub/hello.txt")       # anonymous: cacheable
        assert r.stdout.startswith(b"HTTP/1.1 200") and b"Cache-Control" not in r.stdout
        token = cookie[0].split("zcopy_session=", 1)[1].split(";", 1)[0]
        assert call(s.port, "GET", "/secret/s.txt", {"Cookie": f"a=b; zcopy_session={token}"})[0] == 200
        # Tampered: anonymous (401 with the challenge), never an error.
        bad = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        assert call(s.port, "GET", "/secret/s.txt", {"Cookie": f"zcopy_session={bad}"})[0] == 401
        # A GET of the logout URL (a link or an image on another site) signs nobody out: POST only.
        r = curl("-b", str(jar), "-c", str(jar), "-D", "-", "-o", "/dev/null", f"{s.url}/.zcopy/logout")
        assert r.stdout.startswith(b"HTTP/1.1 405") and b"Max-Age=0" not in r.stdout
        assert curl("-b", str(jar), f"{s.url}/secret/s.txt").stdout == b"s"
        # Logout clears it.
        r = curl("-b", str(jar), "-c", str(jar), "-X", "POST", "-D", "-", "-o", "/dev/null", f"{s.url}/.zcopy/logout")
        assert "Max-Age=0" in r.stdout.decode()
        assert curl("-b", str(jar), "-o", "/dev/null", "-w", "%{http_code}", f"{s.url}/secret/s.txt").stdout == b"401"
        # A changed password ends every session made before (the cookie names the old hash).
        users.write_text(USERS.replace(HASH["reader"], passwords.make("new-pw", **FAST)))
        deadline = time.monotonic() + 10
        while call(s.port, "GET", "/secret/s.txt", {"Cookie": f"zcopy_session={token}"})[0] != 401:
            assert time.monotonic() < deadline, "a session outlived its password"
            time.sleep(0.1)


def test_webdav_methods_follow_the_rules(tree):
    """PROPFIND needs r and lists only what the account may see; COPY needs r on the source and w
    on the Destination; PROPPATCH and LOCK need w."""
    root, users = tree
    with Server(root, "--users", str(users), "--state-dir", str(users.parent / "state")) as s:
        status, _, body = call(s.port, "PROPFIND", "/a/", {**basic("alice"), "Depth": "1"})
        assert status == 207 and b"/a/b/" in body and b"/a/c/" not in body      # only the readable member
        status, _, body = call(s.port, "PROPFIND", "/", {**basic("alice"), "Depth": "1"})
        assert status == 207 and b"/pub/" in body and b"/secret/" not in body
        assert call(s.port, "PROPFIND", "/secret/", {**basic("alice"), "Depth": "0"})[0] == 403
        assert call(s.port, "PROPFIND", "/secret/", {"Depth": "0"})[0] == 401
        # mover: r and d on /src, w on /dst
        assert call(s.port, "COPY", "/src/f", {**basic("mover"), "Destination": "/dst/f"})[0] == 201
        assert (root / "dst" / "f").read_bytes() == b"f"
        assert call(s.port, "COPY", "/src/f", {**basic("mover"), "Destination": "/dst/f"})[0] == 403  # replace: no d
        assert call(s.port, "COPY", "/src/f", {**basic("mover"), "Destination": "/src/g"})[0] == 403  # no w
        assert not (root / "src" / "g").exists()
        assert call(s.port, "COPY", "/secret/s.txt", {**basic("mover"), "Destination": "/dst/s"})[0] == 403
        assert call(s.port, "PROPPATCH", "/pub/hello.txt", basic("reader"), b"<x/>")[0] == 403
        assert call(s.port, "LOCK", "/pub/hello.txt", basic("reader"), b"")[0] == 403


def test_a_lock_belongs_to_the_account_that_took_it(tmp_path):
    """RFC 4918 6.4: another account that knows the lock token (lockdiscovery shows it to any
    reader) can neither write through the lock nor remove it; its owner can do both."""
    root = tmp_path / "root"
    (root / "team").mkdir(parents=True)
    (root / "team" / "plan.txt").write_bytes(b"v1")
    users = tmp_path / "users.txt"
    users.write_text(f"alice {HASH['alice']} /team:rwd\nbob {HASH['bob']} /team:rwd\n")
    with Server(root, "--allow-write", "--users", str(users), "--state-dir", str(tmp_path / "state")) as s:
        lockinfo = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
                    b'<D:locktype><D:write/></D:locktype></D:lockinfo>')
        status, headers, _ = call(s.port, "LOCK", "/team/plan.txt", basic("alice"), lockinfo)
        assert status == 200, status
        token = headers["lock-token"]
        if_header = {"If": f"({token})"}
        # bob holds the token but is not its owner: 423 for writes, 403 for UNLOCK; nothing changes.
        assert call(s.port, "PUT", "/team/plan.txt", {**basic("bob"), **if_header}, b"bob")[0] == 423
        assert call(s.port, "DELETE", "/team/plan.txt", {**basic("bob"), **if_header})[0] == 423
        assert call(s.port, "PROPPATCH", "/team/plan.txt", {**basic("bob"), **if_header},
                    b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop>'
                    b'<Z:note>x</Z:note></D:prop></D:set></D:propertyupdate>')[0] == 423
        assert call(s.port, "UNLOCK", "/team/plan.txt", {**basic("bob"), "Lock-Token": token})[0] == 403
        assert (root / "team" / "plan.txt").read_bytes() == b"v1"
        # alice writes through her lock and removes it; then bob may write again.
        assert call(s.port, "PUT", "/team/plan.txt", {**basic("alice"), **if_header}, b"v2")[0] in (200, 204)
        assert call(s.port, "UNLOCK", "/team/plan.txt", {**basic("alice"), "Lock-Token": token})[0] == 204
        assert call(s.port, "PUT", "/team/plan.txt", basic("bob"), b"v3")[0] in (200, 204)
        assert (root / "team" / "plan.txt").read_bytes() == b"v3"
