"""WebDAV methods (issue 17) against a real `zcopy serve --allow-write`, over real sockets: OPTIONS,
PROPFIND, PROPPATCH, DELETE of a folder, MKCOL with a body, 409 for a missing parent, COPY, MOVE over a
folder, LOCK/UNLOCK and the If header. The whole of litmus runs in tests/test_dav_litmus.py."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET

import pytest

from serverutil import Server, connect, read_response

TOKEN = "dav-token"
D = "{DAV:}"


def call(port, method, path, headers=None, body: bytes = b""):
    extra = "".join(f"{k}: {v}\r\n" for k, v in {"Authorization": f"Bearer {TOKEN}", **(headers or {})}.items())
    raw = (f"{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}Content-Length: {len(body)}\r\n\r\n").encode() + body
    with connect(port) as s:
        s.sendall(raw)
        status, hdrs, data, _ = read_response(s)
    return status, hdrs, data


@pytest.fixture(scope="module")
def dav(tmp_path_factory):
    root = tmp_path_factory.mktemp("davroot")
    state = tmp_path_factory.mktemp("davstate")
    (root / "a.txt").write_bytes(b"alpha")
    (root / "dir").mkdir()
    (root / "dir" / "one.txt").write_bytes(b"1")
    (root / "dir" / ".hidden").write_bytes(b"h")
    with Server(root, "--allow-write", "--token", TOKEN, "--state-dir", str(state)) as s:
        yield s


def responses(body: bytes) -> dict[str, ET.Element]:
    doc = ET.fromstring(body)
    assert doc.tag == D + "multistatus"
    return {r.find(D + "href").text: r for r in doc.findall(D + "response")}


def prop(resp: ET.Element, name: str, status: str = "200") -> ET.Element | None:
    for ps in resp.findall(D + "propstat"):
        if status in ps.find(D + "status").text:
            found = ps.find(D + "prop").find(name)
            if found is not None:
                return found
    return None


def test_options_says_class_1_and_2(dav):
    status, headers, _ = call(dav.port, "OPTIONS", "/")
    assert status == 200
    assert headers["dav"] == "1, 2" and headers["ms-author-via"] == "DAV"
    for method in ("PROPFIND", "PROPPATCH", "COPY", "MOVE", "LOCK", "UNLOCK", "MKCOL"):
        assert method in headers["allow"]


def test_propfind_depth_0_and_1(dav):
    before = call(dav.port, "GET", "/a.txt")[1]["etag"]
    status, headers, body = call(dav.port, "PROPFIND", "/a.txt", {"Depth": "0"})
    assert status == 207 and headers["content-type"].startswith("application/xml")
    r = responses(body)["/a.txt"]
    assert prop(r, D + "getcontentlength").text == "5"
    after = call(dav.port, "GET", "/a.txt")[1]["etag"]
    # The same validator as GET's (which turns into the content ETag once this worker has the digest).
    assert prop(r, D + "getetag").text in (before, after)
    assert re.match(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", prop(r, D + "getlastmodified").text)
    status, _, body = call(dav.port, "PROPFIND", "/dir/", {"Depth": "1"})
    listed = responses(body)
    assert status == 207 and set(listed) == {"/dir/", "/dir/one.txt"}     # dotfiles stay hidden
    assert prop(listed["/dir/"], D + "resourcetype").find(D + "collection") is not None


def test_propfind_depth_infinity_is_refused_with_its_precondition(dav):
    status, _, body = call(dav.port, "PROPFIND", "/", {"Depth": "infinity"})
    assert status == 403 and b"propfind-finite-depth" in body
    status, _, body = call(dav.port, "PROPFIND", "/")                 # no Depth means infinity
    assert status == 403


def test_propfind_named_props_and_propname(dav):
    asked = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:z"><D:prop><D:getcontentlength/>'
             b'<Z:nothing/></D:prop></D:propfind>')
    status, _, body = call(dav.port, "PROPFIND", "/a.txt", {"Depth": "0"}, asked)
    r = responses(body)["/a.txt"]
    assert status == 207 and prop(r, D + "getcontentlength").text == "5"
    assert prop(r, "{urn:z}nothing", "404") is not None
    status, _, body = call(dav.port, "PROPFIND", "/a.txt", {"Depth": "0"},
                           b'<D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>')
    r = responses(body)["/a.txt"]
    assert prop(r, D + "getetag") is not None and prop(r, D + "getetag").text is None


@pytest.mark.parametrize("body", [b"<D:propfind xmlns:D='DAV:'><D:prop>", b"not xml",
                                  b'<!DOCTYPE x [<!ENTITY a "aaaa">]><D:propfind xmlns:D="DAV:"><D:allprop/>'
                                  b"</D:propfind>"])
def test_a_malformed_propfind_is_400_and_the_server_keeps_serving(dav, body):
    assert call(dav.port, "PROPFIND", "/a.txt", {"Depth": "0"}, body)[0] == 400
    assert call(dav.port, "GET", "/a.txt")[2] == b"alpha"


def test_proppatch_sets_and_removes_dead_props_and_refuses_live_ones(dav):
    set_body = (b'<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop><Z:colour>blue</Z:colour>'
                b"</D:prop></D:set></D:propertyupdate>")
    status, _, body = call(dav.port, "PROPPATCH", "/a.txt", {}, set_body)
    assert status == 207 and prop(responses(body)["/a.txt"], "{urn:z}colour") is not None
    _, _, body = call(dav.port, "PROPFIND", "/a.txt", {"Depth": "0"})
    assert prop(responses(body)["/a.txt"], "{urn:z}colour").text == "blue"
    both = (b'<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop><Z:colour>red</Z:colour>'
            b"<D:getetag>x</D:getetag></D:prop></D:set></D:propertyupdate>")
    status, _, body = call(dav.port, "PROPPATCH", "/a.txt", {}, both)
    r = responses(body)["/a.txt"]
    assert status == 207 and prop(r, D + "getetag", "403") is not None and prop(r, "{urn:z}colour", "424") is not None
    _, _, body = call(dav.port, "PROPFIND", "/a.txt", {"Depth": "0"})
    assert prop(responses(body)["/a.txt"], "{urn:z}colour").text == "blue"     # all or nothing
    assert call(dav.port, "PROPPATCH", "/a.txt", {}, b"<broken")[0] == 400


def test_delete_of_a_folder_is_recursive(dav):
    root = dav.root
    os.makedirs(os.path.join(root, "gone", "deep"))
    open(os.path.join(root, "gone", "deep", "f"), "wb").close()
    assert call(dav.port, "DELETE", "/gone/")[0] == 204
    assert not os.path.exists(os.path.join(root, "gone"))


def test_mkcol_with_a_body_is_415_and_missing_parents_are_409(dav):
    assert call(dav.port, "MKCOL", "/withbody", {}, b"<x/>")[0] == 415
    assert not os.path.exists(os.path.join(dav.root, "withbody"))
    assert call(dav.port, "PUT", "/nowhere/f.txt", {}, b"x")[0] == 409
    assert call(dav.port, "MKCOL", "/nowhere/sub")[0] == 409
    assert call(dav.port, "COPY", "/a.txt", {"Destination": "/nowhere/b.txt"})[0] == 409
    assert call(dav.port, "MOVE", "/a.txt", {"Destination": "/nowhere/b.txt"})[0] == 409
    assert not os.path.exists(os.path.join(dav.root, "nowhere"))


def test_copy_file_and_folder_with_overwrite_and_props(dav):
    root, port = dav.root, dav.port
    set_body = (b'<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop><Z:tag>t</Z:tag>'
                b"</D:prop></D:set></D:propertyupdate>")
    os.makedirs(os.path.join(root, "src", "in"))
    with open(os.path.join(root, "src", "in", "f.bin"), "wb") as f:
        f.write(os.urandom(300_000))
    assert call(port, "PROPPATCH", "/src/in/f.bin", {}, set_body)[0] == 207
    assert call(port, "COPY", "/src/", {"Destination": "/copied/"})[0] == 201
    with open(os.path.join(root, "src", "in", "f.bin"), "rb") as a, open(os.path.join(root, "copied", "in", "f.bin"),
                                                                          "rb") as b:
        assert a.read() == b.read()
    _, _, body = call(port, "PROPFIND", "/copied/in/f.bin", {"Depth": "0"})
    assert prop(responses(body)["/copied/in/f.bin"], "{urn:z}tag").text == "t"      # dead props go along
    assert call(port, "COPY", "/src/", {"Destination": "/copied/", "Overwrite": "F"})[0] == 412
    assert call(port, "COPY", "/a.txt", {"Destination": "/copied/"})[0] == 204      # a file replaces the folder
    assert open(os.path.join(root, "copied"), "rb").read() == b"alpha"
    assert call(port, "COPY", "/src/", {"Destination": "/shallow/", "Depth": "0"})[0] == 201
    assert os.listdir(os.path.join(root, "shallow")) == []
    assert call(port, "COPY", "/a.txt", {"Destination": "http://elsewhere.example/x"})[0] == 502


def test_move_replaces_a_folder(dav):
    root, port = dav.root, dav.port
    os.makedirs(os.path.join(root, "mv-dest", "full"))
    with open(os.path.join(root, "mv-src"), "wb") as f:
        f.write(b"moved")
    assert call(port, "MOVE", "/mv-src", {"Destination": "/mv-dest"})[0] == 204
    assert open(os.path.join(root, "mv-dest"), "rb").read() == b"moved"


def test_lock_unlock_and_the_if_header(dav):
    port = dav.port
    lockinfo = (b'<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/>'
                b"</D:locktype><D:owner>me</D:owner></D:lockinfo>")
    status, headers, body = call(port, "LOCK", "/locked.txt", {"Timeout": "Second-60"}, lockinfo)
    assert status == 201                                     # lock-null: an empty file now exists
    assert os.path.getsize(os.path.join(dav.root, "locked.txt")) == 0
    token = headers["lock-token"]
    assert token.startswith("<urn:uuid:")
    assert call(port, "PUT", "/locked.txt", {}, b"no token")[0] == 423
    assert call(port, "DELETE", "/locked.txt")[0] == 423
    assert call(port, "LOCK", "/locked.txt", {}, lockinfo)[0] == 423      # exclusive: no second lock
    assert call(port, "PUT", "/locked.txt", {"If": "(<urn:uuid:00000000-0000-4000-8000-000000000000>)"},
                b"wrong token")[0] == 412
    assert call(port, "PUT", "/locked.txt", {"If": f"({token})"}, b"with token")[0] == 204
    _, _, body = call(port, "PROPFIND", "/locked.txt", {"Depth": "0"})
    active = prop(responses(body)["/locked.txt"], D + "lockdiscovery")
    assert active.find(f"{D}activelock/{D}locktoken/{D}href").text == token[1:-1]
    assert call(port, "LOCK", "/locked.txt", {"If": f"({token})", "Timeout": "Second-120"})[0] == 200   # refresh
    assert call(port, "UNLOCK", "/locked.txt", {"Lock-Token": "<urn:uuid:nope>"})[0] == 409
    assert call(port, "UNLOCK", "/locked.txt", {"Lock-Token": token})[0] == 204
    assert call(port, "PUT", "/locked.txt", {}, b"free again")[0] == 204
    assert call(port, "PUT", "/a.txt", {"If": '(["not-the-etag"])'}, b"x")[0] == 412
    assert call(port, "GET", "/a.txt")[2] == b"alpha"


def test_a_depth_infinity_lock_covers_the_tree_and_goes_with_delete(dav):
    port, root = dav.port, dav.root
    os.makedirs(os.path.join(root, "tree", "sub"))
    lockinfo = (b'<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/>'
                b"</D:locktype></D:lockinfo>")
    status, headers, _ = call(port, "LOCK", "/tree/", {}, lockinfo)
    assert status == 200
    token = headers["lock-token"]
    assert call(port, "PUT", "/tree/sub/new.txt", {}, b"x")[0] == 423
    assert call(port, "MKCOL", "/tree/sub/c")[0] == 423
    assert call(port, "DELETE", "/tree/", {"If": f"({token})"})[0] == 204
    assert call(port, "MKCOL", "/tree/")[0] == 201                     # its lock went with it


def test_x_oc_mtime_sets_the_modification_time(dav):
    status, headers, _ = call(dav.port, "PUT", "/timed.txt", {"X-OC-Mtime": "1577934245"}, b"t")
    assert status == 201 and headers["x-oc-mtime"] == "accepted"
    assert os.stat(os.path.join(dav.root, "timed.txt")).st_mtime == 1577934245
    assert call(dav.port, "PUT", "/timed.txt", {"X-OC-Mtime": "soon"}, b"u")[0] == 400
    assert open(os.path.join(dav.root, "timed.txt"), "rb").read() == b"t"


def test_a_read_only_server_answers_propfind_only(tmp_path):
    (tmp_path / "f").write_bytes(b"f")
    with Server(tmp_path, "--read-token", "r") as s:
        headers = {"Authorization": "Bearer r", "Depth": "0"}
        status, hdrs, _ = call(s.port, "OPTIONS", "/", headers)
        assert status == 200 and hdrs["dav"] == "1" and "PROPPATCH" not in hdrs["allow"]
        assert call(s.port, "PROPFIND", "/f", headers)[0] == 207
        assert call(s.port, "PROPFIND", "/f", {"Authorization": "Bearer wrong", "Depth": "0"})[0] == 401
        assert call(s.port, "PROPPATCH", "/f", headers, b"<x/>")[0] == 403
        assert call(s.port, "LOCK", "/f", headers, b"")[0] == 403


def test_proppatch_of_win32_times_sets_the_files_mtime(dav):
    """Windows' redirector sets times with PROPPATCH (urn:schemas-microsoft-com:)."""
    path = os.path.join(dav.root, "win.txt")
    with open(path, "wb") as f:
        f.write(b"w")
    body = (b'<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop>'
            b"<Z:Win32LastModifiedTime>Thu, 02 Jan 2020 03:04:05 GMT</Z:Win32LastModifiedTime>"
            b"</D:prop></D:set></D:propertyupdate>")
    status, _, data = call(dav.port, "PROPPATCH", "/win.txt", {}, body)
    assert status == 207 and b"200 OK" in data
    assert os.stat(path).st_mtime == 1577934245


def test_a_depth_1_listing_shows_dead_properties_brought_by_proppatch_copy_and_move(dav):
    """A Depth 1 PROPFIND asks a member for its attributes only in a folder marked as holding some
    (``deadprops.MARK``): PROPPATCH marks the member's folder, COPY and MOVE the destination's folder,
    so every property zcopy gave shows in the listing of the folder it is in now."""
    from zcopy.dav import deadprops

    root, port = dav.root, dav.port
    for folder in ("marks", "marks-copy", "marks-move", "marks-plain"):
        os.makedirs(os.path.join(root, folder))
    for name in ("a.txt", "b.txt"):
        with open(os.path.join(root, "marks", name), "wb") as f:
            f.write(b"m")
    with open(os.path.join(root, "marks-plain", "p.txt"), "wb") as f:
        f.write(b"p")
    set_body = (b'<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop><Z:mark>on</Z:mark>'
                b"</D:prop></D:set></D:propertyupdate>")
    assert deadprops.MARK not in os.listxattr(os.path.join(root, "marks-plain"))   # nothing set there
    for name in ("a.txt", "b.txt"):
        assert call(port, "PROPPATCH", f"/marks/{name}", {}, set_body)[0] == 207
    assert deadprops.MARK in os.listxattr(os.path.join(root, "marks"))
    assert call(port, "COPY", "/marks/a.txt", {"Destination": "/marks-copy/a.txt"})[0] == 201
    assert call(port, "MOVE", "/marks/b.txt", {"Destination": "/marks-move/b.txt"})[0] == 201
    for folder, name in (("marks", "a.txt"), ("marks-copy", "a.txt"), ("marks-move", "b.txt")):
        assert deadprops.MARK in os.listxattr(os.path.join(root, folder))
        for body in (b"", b'<D:propfind xmlns:D="DAV:" xmlns:Z="urn:z"><D:prop><Z:mark/></D:prop></D:propfind>'):
            status, _, data = call(port, "PROPFIND", f"/{folder}/", {"Depth": "1"}, body)
            assert status == 207
            assert prop(responses(data)[f"/{folder}/{name}"], "{urn:z}mark").text == "on"
    _, _, data = call(port, "PROPFIND", "/marks-plain/", {"Depth": "1"})
    assert prop(responses(data)["/marks-plain/p.txt"], "{DAV:}getcontentlength").text == "1"
