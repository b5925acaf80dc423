"""macOS Finder's own files (`._name` AppleDouble, `.DS_Store`) and what Windows' and macOS' WebDAV
clients need, against a real `zcopy serve` over real sockets (docs/webdav.md, "Finder and Windows")."""

from __future__ import annotations

from serverutil import Server
from test_dav import D, TOKEN, call, prop, responses


def test_finder_files_are_refused_by_default_as_every_dotfile(tmp_path):
    with Server(tmp_path, "--allow-write", "--token", TOKEN) as s:
        assert call(s.port, "PUT", "/._photo.jpg", body=b"appledouble")[0] == 403
        assert call(s.port, "PUT", "/.DS_Store", body=b"view")[0] == 403
        assert not (tmp_path / "._photo.jpg").exists() and not (tmp_path / ".DS_Store").exists()


def test_allow_mac_files_stores_them_and_keeps_them_out_of_listings(tmp_path):
    root, state = tmp_path / "root", tmp_path / "state"
    (root / "pics").mkdir(parents=True)
    with Server(root, "--allow-write", "--token", TOKEN, "--state-dir", str(state), "--allow-mac-files") as s:
        assert call(s.port, "PUT", "/pics/photo.jpg", body=b"jpeg")[0] == 201
        assert call(s.port, "PUT", "/pics/._photo.jpg", body=b"appledouble")[0] == 201
        assert call(s.port, "PUT", "/pics/.DS_Store", body=b"view")[0] == 201
        status, _, data = call(s.port, "GET", "/pics/._photo.jpg")
        assert (status, data) == (200, b"appledouble")
        # Finder locks and PROPFINDs them like any file
        lockinfo = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
                    b'<D:locktype><D:write/></D:locktype></D:lockinfo>')
        status, headers, _ = call(s.port, "LOCK", "/pics/.DS_Store", {"Depth": "0"}, lockinfo)
        assert status == 200
        assert call(s.port, "UNLOCK", "/pics/.DS_Store", {"Lock-Token": headers["lock-token"]})[0] == 204
        status, _, data = call(s.port, "PROPFIND", "/pics/._photo.jpg", {"Depth": "0"})
        assert status == 207 and list(responses(data)) == ["/pics/._photo.jpg"]
        # ... but no listing shows them
        status, _, data = call(s.port, "PROPFIND", "/pics/", {"Depth": "1"})
        assert status == 207 and sorted(responses(data)) == ["/pics/", "/pics/photo.jpg"]
        status, _, data = call(s.port, "GET", "/pics/", {"Accept": "application/json"})
        assert status == 200 and b"photo.jpg" in data and b"._photo" not in data and b"DS_Store" not in data
        # other dotfiles stay refused, and the names are only files' names, never folders on the way
        assert call(s.port, "PUT", "/pics/.env", body=b"SECRET=1")[0] == 403
        assert call(s.port, "PUT", "/._dir/x.txt", body=b"x")[0] == 403
        assert call(s.port, "DELETE", "/pics/._photo.jpg")[0] == 204
        assert not (root / "pics" / "._photo.jpg").exists()


def test_what_windows_and_macos_clients_need(tmp_path):
    root, state = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    (root / "doc.txt").write_bytes(b"text")
    with Server(root, "--allow-write", "--token", TOKEN, "--state-dir", str(state)) as s:
        status, headers, _ = call(s.port, "OPTIONS", "/")
        assert status == 200 and headers["ms-author-via"] == "DAV" and headers["dav"] == "1, 2"
        # a PROPFIND with no body is allprop; getlastmodified in RFC 1123 form
        status, _, data = call(s.port, "PROPFIND", "/", {"Depth": "1"})
        doc = responses(data)["/doc.txt"]
        assert status == 207 and prop(doc, D + "getlastmodified").text.endswith(" GMT")
        assert prop(doc, D + "supportedlock") is not None and prop(doc, D + "lockdiscovery") is not None
        # Depth infinity is refused with its precondition (clients then walk with Depth 1)
        status, _, data = call(s.port, "PROPFIND", "/", {"Depth": "infinity"})
        assert status == 403 and b"propfind-finite-depth" in data
        # LOCK on a missing file makes an empty, locked file (Windows and Finder create files so)
        lockinfo = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
                    b'<D:locktype><D:write/></D:locktype></D:lockinfo>')
        status, headers, _ = call(s.port, "LOCK", "/new.docx", {"Depth": "0"}, lockinfo)
        assert status == 201 and (root / "new.docx").read_bytes() == b""
        token = headers["lock-token"]
        assert call(s.port, "PUT", "/new.docx", body=b"data")[0] == 423
        assert call(s.port, "PUT", "/new.docx", {"If": f"({token})"}, b"data")[0] == 204
        assert call(s.port, "UNLOCK", "/new.docx", {"Lock-Token": token})[0] == 204
        assert (root / "new.docx").read_bytes() == b"data"
