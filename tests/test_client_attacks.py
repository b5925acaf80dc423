"""The client attacked: a local user racing in the folders it writes, a
malicious server, hostile names. Each test shows an attack that worked
against the client of issue 15 (items 1-7) and no longer does. Servers are
tiny raw ones on loopback (``RawServer``) or a real ``zcopy serve``; files
and races are real (a rename or symlink swap at the moment the client is
between two steps, pinned with strace's syscall delay where needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from urllib.parse import quote

import pyrage
import pytest

from serverutil import Server
from test_client import TOKEN
from serverutil import wait_for
from test_client_safety import RawServer, ok, one_line, run
from zcopy.client.seal import seal_tree


# -- seal: a folder swapped for a symlink while the tree is walked -----------------------------

def test_seal_does_not_follow_a_folder_swapped_for_a_symlink_during_the_walk(tmp_path):
    """A user who can write in a sub-folder of the sealed tree lists a file
    named like one of the victim's, then swaps the folder for a symlink to
    the victim's folder once the walk has listed it: the old seal opened
    ``ROOT/sub/NAME`` by its path, so it encrypted and deleted the victim's
    file outside the tree."""
    identity = pyrage.x25519.Identity.generate()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "id_ed25519").write_bytes(b"the victim's key")
    root = tmp_path / "pub"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "id_ed25519").write_bytes(b"bait")

    def swap(path):                          # the attacker, right after the walk listed sub/
        if path.endswith("id_ed25519") and not (root / "sub").is_symlink():
            os.rename(root / "sub", root / "sub.old")
            os.symlink(victim, root / "sub")

    report = seal_tree(str(root), {"recipients": [identity.to_public()]}, on_file=swap)
    assert (victim / "id_ed25519").read_bytes() == b"the victim's key"
    assert sorted(os.listdir(victim)) == ["id_ed25519"]
    assert sorted(os.listdir(root / "sub.old")) == ["id_ed25519.age"]       # the bait, sealed where it was
    assert pyrage.decrypt((root / "sub.old" / "id_ed25519.age").read_bytes(), [identity]) == b"bait"
    assert report.failed == []


# -- get: a partial file planted by someone else ------------------------------------------------

def test_get_does_not_resume_a_partial_file_owned_by_someone_else(tmp_path):
    """In a shared download folder another user plants ``f.part`` with their
    own first bytes and the remote file's ETag in ``user.zcopy.etag``: the
    old client resumed it, appended the real rest and saved a trojaned file
    (still owned, and writable, by that user) with exit 0."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a file owned by another user")
    body = os.urandom(64 << 10)
    dl = tmp_path / "dl"
    dl.mkdir(mode=0o777)
    part = dl / "f.part"
    part.write_bytes(b"#!/bin/sh evil" + b"\0" * (1000 - 14))
    try:
        os.setxattr(part, "user.zcopy.etag", b'"v1"')
        os.setxattr(part, "user.zcopy.part", b"1")           # as a partial file zcopy get left
    except OSError:
        pytest.skip("no user xattrs on this file system")
    os.chown(part, 65534, 65534)

    def answer(head):
        if b"Range: bytes=1000-" in head:
            rest = body[1000:]
            return (b"HTTP/1.1 206 Partial Content\r\nContent-Length: %d\r\nETag: \"v1\"\r\n"
                    b"Content-Range: bytes 1000-%d/%d\r\nConnection: close\r\n\r\n"
                    % (len(rest), len(body) - 1, len(body)) + rest)
        return ok(body)

    with RawServer(answer) as srv:
        out = run("get", f"{srv.url}/f", "-o", str(dl / "f"))
    assert out.returncode == 1 and one_line(out), out.stderr
    assert "owned by another user" in out.stderr
    assert not (dl / "f").exists()
    assert part.stat().st_uid == 65534                 # theirs, left alone


# -- get: FILE.part swapped between the last check and the final link/rename --------------------

SYSCALL_NR = {"linkat": 265, "renameat": 264, "unlinkat": 263}          # x86_64


def traced_zcopy(tmp_path, syscall: str, *args: str, when: int = 1) -> subprocess.Popen:
    """``zcopy ARGS`` under strace, its ``when``-th ``syscall`` and later ones
    held for 2 s on entry: the window a racing local user needs, made wide
    and certain."""
    if os.uname().machine != "x86_64":
        pytest.skip("syscall numbers are x86_64's")
    return subprocess.Popen(["strace", "-f", "-qq", "-o", str(tmp_path / "strace.log"), "-e", f"trace={syscall}",
                             "-e", f"inject={syscall}:delay_enter=2000000:when={when}+", sys.executable, "-m", "zcopy", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "ZCOPY_TOKEN": ""})


def held_in(tracer: subprocess.Popen, syscall: str, log=None, when: int = 1) -> bool:
    """The traced zcopy is stopped on entry to ``syscall``: with ``when`` above 1, in the ``when``-th
    (strace's ``log`` has begun that many of them: it writes a call's start before the delay). Each
    traced call stops the tracee briefly, so without the count an earlier, undelayed one can be
    mistaken for the held one on a loaded machine."""
    if when > 1:
        try:
            with open(log) as f:
                if f.read().count(f"{syscall}(") < when:
                    return False
        except FileNotFoundError:
            return False
    for kid in open(f"/proc/{tracer.pid}/task/{tracer.pid}/children").read().split():
        try:
            with open(f"/proc/{kid}/syscall") as f:
                if f.read().split(" ", 1)[0] == str(SYSCALL_NR[syscall]):
                    return True
        except OSError:
            pass
    return False


@pytest.mark.parametrize("force", [False, True], ids=["link", "rename-with-force"])
def test_get_puts_in_place_the_file_it_wrote_not_what_the_part_name_points_to_by_then(tmp_path, force):
    """The old commit checked that FILE.part still was its file, then
    linked (or renamed) *the name* FILE.part into place: a user who swaps
    FILE.part in between gets their file saved as FILE, exit 0."""
    body = os.urandom(256 << 10)
    dl = tmp_path / "dl"
    dl.mkdir()
    syscall = "renameat" if force else "linkat"
    with RawServer(lambda head: ok(body)) as srv:
        proc = traced_zcopy(tmp_path, syscall, "get", f"{srv.url}/f", "-o", str(dl / "f"), "-q",
                            *(["--force"] if force else []))
        try:
            wait_for(lambda: held_in(proc, syscall) or proc.poll() is not None, what=f"zcopy in {syscall}")
            os.rename(dl / "f.part", dl / "stash")             # theirs in its place
            (dl / "f.part").write_bytes(b"E" * len(body))
        finally:
            _, err = proc.communicate(timeout=60)
    if force:       # the rename is by name: the swap is found right after it, and said
        assert proc.returncode == 1 and err.count("\n") == 1, err
        assert "replaced during the final rename" in err
        assert (dl / "stash").read_bytes() == body
    else:           # the link is of the inode that was written, whatever the name says
        assert proc.returncode == 0, err
        assert (dl / "f").read_bytes() == body
        assert (dl / "f.part").read_bytes() == b"E" * len(body)        # theirs, left alone


def test_get_saves_nothing_when_the_part_file_is_renamed_over_before_the_link(tmp_path):
    """The written inode has no name left (the swap renamed over it): nothing
    can be put in place, and the run says so instead of saving theirs."""
    body = os.urandom(64 << 10)
    dl = tmp_path / "dl"
    dl.mkdir()
    with RawServer(lambda head: ok(body)) as srv:
        proc = traced_zcopy(tmp_path, "linkat", "get", f"{srv.url}/f", "-o", str(dl / "f"), "-q")
        try:
            wait_for(lambda: held_in(proc, "linkat") or proc.poll() is not None, what="zcopy in linkat")
            (dl / "evil").write_bytes(b"E" * len(body))
            os.rename(dl / "evil", dl / "f.part")
        finally:
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and err.count("\n") == 1, err
    assert "removed or replaced just before it was put in place" in err
    assert os.listdir(dl) == ["f.part"] and (dl / "f.part").read_bytes() == b"E" * len(body)


# -- a malicious server's words reach the terminal only as text ---------------------------------

ERROR_BODY = "\x1b[2J\x1b[1;1Hall fine\x9b2J\r\nx\n".encode()
HOSTILE_ERROR = (b"HTTP/1.1 403 No\x1b]0;owned\x07pe\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%b" % (len(ERROR_BODY), ERROR_BODY))
HOSTILE_MOVE = b"HTTP/1.1 301 Moved\r\nLocation: /a\x9b2J\x9b1;1Hb/\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize("command", ["get", "ls", "rm", "mv", "put", "get-moved"])
def test_a_server_cannot_write_terminal_controls_through_client_messages(tmp_path, command):
    """The reason phrase, the detail line of an error body and a Location are
    the server's text; the old client printed them raw, so a server could
    clear the screen, set the window title or rewrite the line before."""
    src = tmp_path / "src"
    src.write_bytes(b"x")
    args = {"get": ["get", "URL/f", "-o", str(tmp_path / "f")], "ls": ["ls", "URL/d/"], "rm": ["rm", "URL/f"],
            "mv": ["mv", "URL/f", "g"], "put": ["put", str(src), "URL/f"],
            "get-moved": ["get", "URL/f", "-o", str(tmp_path / "f")]}[command]
    with RawServer(lambda head: HOSTILE_MOVE if command == "get-moved" else HOSTILE_ERROR) as srv:
        out = run(*[a.replace("URL", srv.url) for a in args])
    assert out.returncode == 1 and one_line(out), out.stderr
    assert not any(c in out.stderr for c in "\x1b\x07\x9b\r"), repr(out.stderr)
    assert ("\\x1b" if command != "get-moved" else "\\x9b") in out.stderr       # shown, escaped


# -- URLs that could not be parsed or sent: one line, or sent with their bytes -----------------

def request_target(head: bytes) -> bytes:
    return head.split(b"\r\n", 1)[0].split(b" ")[1]


def test_a_redirect_to_an_unparsable_url_is_one_line():
    moved = b"HTTP/1.1 301 Moved Permanently\r\nLocation: http://[::1/list/\r\nContent-Length: 0\r\n\r\n"
    with RawServer(lambda head: moved) as srv:
        out = run("ls", f"{srv.url}/list")
    assert out.returncode == 1 and one_line(out), out.stderr
    assert "bad URL (Invalid IPv6 URL): http://[::1/list/" in out.stderr


@pytest.mark.parametrize("url, says", [("http://[::1/x", "Invalid IPv6 URL"),
                                       ("http://127.0.0.1:99999/x", "Port out of range")])
def test_an_unparsable_url_on_the_command_line_is_one_line(url, says):
    out = run("get", url)
    assert out.returncode == 1 and one_line(out), out.stderr
    assert says in out.stderr


def test_a_url_typed_with_bytes_that_are_not_utf8_is_sent_with_them(tmp_path):
    """argv decodes such bytes to surrogates, which the old client could not
    quote (UnicodeEncodeError, a traceback); a query was sent raw (a space
    broke the request line, a character above U+00FF raised)."""
    with RawServer(lambda head: ok(b"bytes")) as srv:
        out = subprocess.run([sys.executable, "-m", "zcopy", "get", os.fsencode(srv.url) + b"/caf\xe9?q=a b\xe4\xbe\x8b",
                              "-q"], capture_output=True, timeout=60, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert request_target(srv.heads[0]) == b"/caf%E9?q=a%20b%E4%BE%8B"
    assert os.listdir(bytes(tmp_path)) == [b"caf\xe9"]


def test_put_and_mv_to_a_url_typed_with_bytes_that_are_not_utf8(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"x")
    created = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    with RawServer(lambda head: created) as srv:
        put = subprocess.run([sys.executable, "-m", "zcopy", "put", str(src), os.fsencode(srv.url) + b"/na\xefve",
                              "-q"], capture_output=True, timeout=60)
        mv = subprocess.run([sys.executable, "-m", "zcopy", "mv", srv.url + "/a", b"b\xe9"],
                            capture_output=True, timeout=60)
        assert put.returncode == 0 and mv.returncode == 0, (put.stderr, mv.stderr)
        assert request_target(srv.heads[0]) == b"/na%EFve"
        assert b"\r\nDestination: /b%E9\r\n" in srv.heads[1]
    assert mv.stderr == b"moved: /a -> /b\\xe9\n"


# -- mv: a folder name with "%" in it does not choose another destination ----------------------

@pytest.mark.parametrize("folder", ["d%2F..%2Fvictim", "victim%2F", "50%"])
def test_mv_to_a_relative_name_stays_in_a_folder_whose_name_holds_percent(tmp_path, folder):
    """NEWPATH relative to the source's folder: the old client decoded the
    folder's name, joined, and re-encoded it keeping "%": a folder named
    ``victim%2F`` (anyone who can write may create one) sent the file to
    /victim/b, replacing what was there; the others were bad requests."""
    root = tmp_path / "root"
    (root / folder).mkdir(parents=True)
    (root / folder / "a").write_bytes(b"moved")
    (root / "victim").mkdir()
    (root / "victim" / "b").write_bytes(b"precious")
    with Server(root, "--allow-write", "--token", TOKEN) as srv:
        out = run("mv", f"{srv.url}/{quote(folder)}/a", "b", "--token", TOKEN)
    assert out.returncode == 0, out.stderr
    assert out.stderr == f"moved: /{folder}/a -> /{folder}/b\n"
    assert (root / folder / "b").read_bytes() == b"moved" and not (root / folder / "a").exists()
    assert (root / "victim" / "b").read_bytes() == b"precious"


# -- seal: a new version renamed over NAME between the last check and the unlink ----------------

def seal_racing_an_upload(tmp_path, syscall: str, when: int):
    """``zcopy seal`` of a folder holding ``x``; while it is held in the
    ``when``-th ``syscall``, a new version is renamed over ``x`` (as an
    upload or an editor saves). Returns (identity, root, proc, stderr)."""
    identity = pyrage.x25519.Identity.generate()
    root = tmp_path / "pub"
    root.mkdir()
    (root / "x").write_bytes(b"old version")
    proc = traced_zcopy(tmp_path, syscall, "seal", str(root), "-r", str(identity.to_public()), "-q", when=when)
    try:
        wait_for(lambda: held_in(proc, syscall, tmp_path / "strace.log", when) or proc.poll() is not None,
                 what=f"seal in {syscall} #{when}")
        (root / "upload.tmp").write_bytes(b"new version, uploaded")
        os.rename(root / "upload.tmp", root / "x")
    finally:
        _, err = proc.communicate(timeout=60)
    assert (root / "x").read_bytes() == b"new version, uploaded"
    assert pyrage.decrypt((root / "x.age").read_bytes(), [identity]) == b"old version"
    assert sorted(os.listdir(root)) == ["x", "x.age"]
    return proc, err


def test_seal_does_not_delete_a_version_renamed_over_the_name_just_before_the_unlink(tmp_path):
    """The old seal compared NAME with the sealed file (fstatat) and then
    unlinked *the name*: an upload renamed over NAME in between was deleted,
    with exit 0 and only the old version left, sealed. (unlinkat #1 removes
    the temp name after the link to x.age; #2 is the one that removes x.)"""
    proc, err = seal_racing_an_upload(tmp_path, "unlinkat", when=2)
    assert proc.returncode == 0, err          # the new x came after the sealed one was taken: a new file


def test_seal_puts_back_a_version_it_took_by_its_name(tmp_path):
    """The name is taken aside (rename) and then compared: the new version
    it took is put back as x, both are kept, and the run says so."""
    proc, err = seal_racing_an_upload(tmp_path, "renameat", when=1)
    assert proc.returncode == 1, err
    assert "changed while it was being sealed; kept both x and x.age" in err



def test_seal_puts_back_a_folder_made_at_the_name_it_takes(tmp_path):
    """What the rename takes aside may be a folder made at NAME meanwhile
    (link(2) cannot put a folder back): it is renamed back, not left hidden."""
    identity = pyrage.x25519.Identity.generate()
    root = tmp_path / "pub"
    root.mkdir()
    (root / "x").write_bytes(b"old version")
    proc = traced_zcopy(tmp_path, "renameat", "seal", str(root), "-r", str(identity.to_public()), "-q")
    try:
        wait_for(lambda: held_in(proc, "renameat") or proc.poll() is not None, what="seal in renameat")
        os.unlink(root / "x")
        (root / "x").mkdir()
        (root / "x" / "inside").write_bytes(b"kept")
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "changed while it was being sealed; kept both x and x.age" in err, err
    assert sorted(os.listdir(root)) == ["x", "x.age"]
    assert (root / "x" / "inside").read_bytes() == b"kept"

# -- seal: the longest names a folder takes -------------------------------------------------------

def test_seal_seals_a_file_whose_name_is_as_long_as_name_age_allows(tmp_path):
    """NAME.age fits in 255 bytes, but the temp file was ``.NAME.<hex>.sealing``,
    17+ bytes longer: such a file failed with ENAMETOOLONG."""
    identity = pyrage.x25519.Identity.generate()
    root = tmp_path / "pub"
    root.mkdir()
    name = "é" * 100 + "n" * 51                                     # 251 bytes: NAME.age is 255
    (root / name).write_bytes(b"long")
    report = seal_tree(str(root), {"recipients": [identity.to_public()]})
    assert report.failed == [] and report.sealed == [str(root / name)]
    assert os.listdir(root) == [name + ".age"]
    assert pyrage.decrypt((root / (name + ".age")).read_bytes(), [identity]) == b"long"


def test_ls_json_does_not_print_raw_c1_controls():
    """json.dumps(ensure_ascii=False) escapes C0 controls but prints U+007F-
    U+009F raw; U+009B is CSI, which terminals act on like ESC [."""
    doc = json.dumps({"path": "/d/", "entries": [{"name": "a\u009b2J\u009b1;1Hb\u0085c\u007f", "type": "file"}]})
    with RawServer(lambda head: ok(doc.encode(), content_type="application/json")) as srv:
        out = run("ls", f"{srv.url}/d/", "--json")
    assert out.returncode == 0, out.stderr
    assert not any("\x7f" <= c <= "\x9f" for c in out.stdout), repr(out.stdout)
    assert json.loads(out.stdout)["entries"][0]["name"] == "a\u009b2J\u009b1;1Hb\u0085c\u007f"


# -- put: a FIFO where a file was expected ---------------------------------------------------------

def test_put_of_a_fifo_is_refused_instead_of_hanging(tmp_path):
    """The file was opened O_RDONLY before it was checked: a FIFO (planted
    where a script uploads from a shared folder) blocked the open forever."""
    os.mkfifo(tmp_path / "f")
    created = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    with RawServer(lambda head: created) as srv:
        try:
            out = run("put", str(tmp_path / "f"), f"{srv.url}/up", timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("zcopy put hung opening a FIFO")
        assert srv.heads == []
    assert out.returncode == 1 and one_line(out), out.stderr
    assert "is not a regular file" in out.stderr


# -- the progress bar shows a remote name as text, not as rich markup -------------------------------

@pytest.mark.parametrize("segment, label", [("x%5B%2Fb%5D", "x[/b]"),
                                            ("%5Blink=http:%2F%2Fevil%5Dclick%5B%2Flink%5D",
                                             "[link=http://evil]click[/link]")])
def test_the_progress_bar_does_not_read_a_remote_name_as_markup(tmp_path, segment, label):
    """The bar's label went through rich markup: a name with "[/b]" was a
    MarkupError traceback, one with "[link=...]" a terminal hyperlink."""
    with RawServer(lambda head: ok(b"x" * 1000)) as srv:
        out = run("get", f"{srv.url}/{segment}", "-o", str(tmp_path / "o"))
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert f"get {label} " in out.stderr
    assert (tmp_path / "o").read_bytes() == b"x" * 1000


def test_ls_shows_names_with_backslashes_and_brackets_as_they_are():
    """The table built rich markup from names: "b\\\\[" was shown as "b[" (the
    same as a file really named "b["), "a\\\\" as "a\\\\\\\\"."""
    names = ["a\\", "b\\[", "b[", "[/]", "[link=http://e]c[/link]\\"]
    doc = json.dumps({"path": "/p\\", "entries": [{"name": n, "type": "file", "size": 1, "mtime": 0}
                                                  for n in names]}).encode()
    with RawServer(lambda head: ok(doc, content_type="application/json")) as srv:
        out = run("ls", f"{srv.url}/d/")
    assert out.returncode == 0, out.stderr
    shown_names = [line.split("  ")[0].strip() for line in out.stdout.splitlines()[2:2 + len(names)]]
    assert shown_names == names, out.stdout
    assert out.stdout.splitlines()[0].strip() == "/p\\"


def test_seal_of_a_folder_given_through_a_symlink_seals_it(tmp_path):
    """DIR itself may be a symlink the user typed (only symlinks met during
    the walk are not followed): os.fwalk on it alone yields nothing."""
    identity = pyrage.x25519.Identity.generate()
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "sub" / "a").write_bytes(b"a")
    os.symlink("real", tmp_path / "pub")
    report = seal_tree(str(tmp_path / "pub"), {"recipients": [identity.to_public()]})
    assert report.sealed == [str(tmp_path / "pub" / "sub" / "a")] and report.failed == []
    assert os.listdir(tmp_path / "real" / "sub") == ["a.age"]


# -- get: a finished file that happens to be named FILE.part ----------------------------------------

def test_get_does_not_truncate_a_file_named_like_its_partial_that_it_did_not_leave(tmp_path):
    """``zcopy get .../report.part`` saves report.part (its validator removed
    once complete); a later ``zcopy get .../report`` took that file as its
    partial, found no validator, truncated it and renamed it to report:
    a whole file lost without --force. A partial without the validator that
    has bytes in it is now only started over with --force."""
    body = os.urandom(10_000)
    with RawServer(lambda head: ok(b"the finished report.part" if b" /report.part " in head else body)) as srv:
        first = run("get", f"{srv.url}/report.part", "-q", cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        second = run("get", f"{srv.url}/report", cwd=tmp_path)
        assert second.returncode == 1 and one_line(second), second.stderr
        assert "report.part holds bytes that zcopy get cannot resume" in second.stderr
        assert sorted(os.listdir(tmp_path)) == ["report.part"]
        assert (tmp_path / "report.part").read_bytes() == b"the finished report.part"
        forced = run("get", f"{srv.url}/report", "--force", "-q", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert sorted(os.listdir(tmp_path)) == ["report"] and (tmp_path / "report").read_bytes() == body


def test_a_download_kept_in_the_partial_file_is_resumed_not_fetched_again(tmp_path):
    """FILE appeared during the download, so the finished bytes stayed in
    FILE.part; the old commit had already dropped its validator (and the
    mark), so ``--force`` later fetched it all again instead of asking
    whether it was complete."""
    body = os.urandom(256 << 10)
    release = threading.Event()

    def answer(head):
        if b"Range: bytes=" in head:
            return (b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */%d\r\n"
                    b"Content-Length: 0\r\n\r\n" % len(body))
        def slow(conn):
            conn.sendall(ok(body)[:-1000])
            release.wait(30)
            conn.sendall(body[-1000:])
        return slow

    dl = tmp_path / "dl"
    dl.mkdir()
    with RawServer(answer) as srv:
        proc = subprocess.Popen([sys.executable, "-m", "zcopy", "get", f"{srv.url}/f", "-o", str(dl / "f"), "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: (dl / "f.part").exists() and (dl / "f.part").stat().st_size > 0, what="f.part")
            (dl / "f").write_bytes(b"someone else's f")
        finally:
            release.set()
            _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "appeared during the download; kept the download in" in err, err
        again = run("get", f"{srv.url}/f", "-o", str(dl / "f"), "--force")
        assert again.returncode == 0, again.stderr
        assert b"Range: bytes=%d-" % len(body) in srv.heads[1]
    assert "resumed at" in again.stderr
    assert sorted(os.listdir(dl)) == ["f"] and (dl / "f").read_bytes() == body
