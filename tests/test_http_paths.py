"""URL path -> the walk from ROOT's fd, on real temp dirs with real symlinks (zcopy.http.paths, zcopy.server.root)."""

from __future__ import annotations

import os
import stat

import pytest

from zcopy.http import HttpError, normalised, parse_head, url_segments
from zcopy.server import root as root_mod
from zcopy.server.root import Root


@pytest.fixture
def tree(tmp_path):
    """root/ with files, a dotfile, symlinks inside and outside, and a secret next to root."""
    root = tmp_path / "root"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.txt").write_text("b")
    (root / ".hidden").write_text("h")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("c")
    (tmp_path / "secret").write_text("s")
    (tmp_path / "outdir").mkdir()
    (tmp_path / "outdir" / "x").write_text("x")
    os.symlink("sub/b.txt", root / "inside_link")
    os.symlink("sub", root / "dir_link")
    os.symlink(tmp_path / "secret", root / "outside_link")
    os.symlink("../outdir", root / "outside_dir")
    os.symlink("loop", root / "loop")
    return os.path.realpath(root)


def resolve_path(root: str, url: str, **policy) -> str:
    """Where the walk from ROOT's fd leads (the path string it went through),
    checked against the fd itself: the entry it names is the one expected."""
    fs = Root(root, **policy)
    try:
        with fs.locate(url) as place:
            st = place.stat()
            if stat.S_ISLNK(st.st_mode):      # a link not followed: callers open with O_NOFOLLOW, so 404
                raise HttpError(404, "not found")
            assert (st.st_dev, st.st_ino) == (os.lstat(place.path).st_dev, os.lstat(place.path).st_ino)
            return place.path
    finally:
        fs.close()


@pytest.fixture(params=[True, False], ids=["openat2", "walker"])
def both_walks(request, monkeypatch):
    """Run with openat2 where the kernel has it, and with the segment walker."""
    if not request.param:
        monkeypatch.setattr(root_mod, "has_openat2", lambda fd: False)
    return request.param


@pytest.mark.parametrize("url, rel", [
    ("/", ""),
    ("/a.txt", "a.txt"),
    ("/sub/b.txt", "sub/b.txt"),
    ("/sub/", "sub"),
    ("//sub///b.txt", "sub/b.txt"),
    ("/./sub/./b.txt", "sub/b.txt"),
    ("/sub/../a.txt", "a.txt"),            # normalised, still inside
    ("/sub/deep/../../a.txt", "a.txt"),
    ("/sub/..", ""),
    ("/sub/.", "sub"),
])
def test_resolves_inside(tree, both_walks, url, rel):
    expected = os.path.join(tree, rel) if rel else tree
    assert resolve_path(tree, url) == expected


@pytest.mark.parametrize("url, status", [
    ("/..", 403),
    ("/../secret", 403),
    ("/sub/../../secret", 403),
    ("/a\x00b", 400),
    ("/a\\..\\secret", 400),
    ("/..\\secret", 400),
    ("relative", 400),
    ("", 400),
    ("*", 400),
    ("/.hidden", 404),
    ("/.git/config", 404),
    ("/sub/.x", 404),
    ("/inside_link", 404),                  # symlinks refused without follow_symlinks
    ("/dir_link/b.txt", 404),
    ("/outside_link", 404),
    ("/outside_dir/x", 404),
    ("/loop", 404),
    ("/a.txt/.", 404),                      # a dot segment after a file is not the file (issue 15.11)
    ("/a.txt/..", 404),
    ("/a.txt/", 404),
    ("/missing/file", 404),
    ("/.zcopy/x", 404),                     # the server's own namespace
    ("/.zcopy-upload-1234", 404),           # an upload's temp name
])
def test_refused(tree, both_walks, url, status):
    with pytest.raises(HttpError) as exc:
        resolve_path(tree, url)
    assert exc.value.status == status


def test_reserved_and_temp_names_refused_even_with_show_hidden(tree):
    for url in ("/.zcopy", "/.zcopy/", "/sub/../.zcopy/x", "/.zcopy-upload-1234"):
        with pytest.raises(HttpError) as exc:
            resolve_path(tree, url, show_hidden=True)
        assert exc.value.status == 404
    assert url_segments("/sub/.zcopy", show_hidden=True) == ["sub", ".zcopy"]   # only at the top


def test_show_hidden(tree, both_walks):
    assert resolve_path(tree, "/.hidden", show_hidden=True) == os.path.join(tree, ".hidden")
    assert resolve_path(tree, "/.git/config", show_hidden=True) == os.path.join(tree, ".git", "config")


def test_follow_symlinks_inside_only(tree):
    follow = {"follow_symlinks": True}
    assert resolve_path(tree, "/inside_link", **follow) == os.path.join(tree, "sub", "b.txt")
    assert resolve_path(tree, "/dir_link/b.txt", **follow) == os.path.join(tree, "sub", "b.txt")
    for url in ("/outside_link", "/outside_dir/x", "/loop"):
        with pytest.raises(HttpError) as exc:
            resolve_path(tree, url, **follow)
        assert exc.value.status == 404


def test_absolute_links_inside_root_are_followed_by_the_walker(tree):
    # RESOLVE_BENEATH would refuse these (EXDEV): the walker resolves them itself.
    os.symlink(os.path.join(tree, "sub"), os.path.join(tree, "abs_dir"))
    os.symlink(os.path.join(tree, "sub", "b.txt"), os.path.join(tree, "abs_file"))
    os.symlink(tree + "/sub/../../secret", os.path.join(tree, "abs_dotdot"))
    follow = {"follow_symlinks": True}
    assert resolve_path(tree, "/abs_dir/b.txt", **follow) == os.path.join(tree, "sub", "b.txt")
    assert resolve_path(tree, "/abs_file", **follow) == os.path.join(tree, "sub", "b.txt")
    with pytest.raises(HttpError):
        resolve_path(tree, "/abs_dotdot", **follow)


def test_symlink_target_folders(tree):
    outdir = os.path.join(os.path.dirname(tree), "outdir")
    follow = {"follow_symlinks": True, "allowed": (outdir,)}
    assert resolve_path(tree, "/outside_dir/x", **follow) == os.path.join(outdir, "x")
    os.symlink("..", os.path.join(outdir, "up"))            # out of the allowed folder again
    with pytest.raises(HttpError):
        resolve_path(tree, "/outside_dir/up/secret", **follow)
    with pytest.raises(HttpError):
        resolve_path(tree, "/outside_link", **follow)


def test_link_replaced_by_escape_is_caught(tree):
    """The check is made on every call: a link retargeted outside is refused at once."""
    link = os.path.join(tree, "moving")
    os.symlink("sub", link)
    assert resolve_path(tree, "/moving/b.txt", follow_symlinks=True).endswith("/sub/b.txt")
    os.unlink(link)
    os.symlink("../outdir", link)
    with pytest.raises(HttpError):
        resolve_path(tree, "/moving/x", follow_symlinks=True)


def test_writes_name_missing_folders_and_never_follow_the_last_segment(tree, both_walks):
    fs = Root(tree)
    try:
        with fs.locate("/sub/new/deeper/f", write=True) as place:
            assert (place.folder, place.missing, place.name) == (os.path.join(tree, "sub"), ["new", "deeper"], "f")
        with fs.locate("/inside_link", write=True) as place:     # the link itself is what a write acts on
            assert (place.folder, place.name) == (tree, "inside_link")
        for url, status in [("/dir_link/x", 403), ("/a.txt/x", 409), ("/", 403), ("/sub/../a.txt", 400),
                            ("/.hidden", 403), ("/.zcopy/x", 403), ("/.zcopy-upload-1", 403)]:
            with pytest.raises(HttpError) as exc:
                fs.locate(url, write=True)
            assert exc.value.status == status, url
    finally:
        fs.close()


@pytest.mark.parametrize("target, status", [
    (b"/..%2Fsecret", 403),                 # %2F decodes to a separator, then .. climbs out
    (b"/%2E%2E/secret", 403),
    (b"/sub/%2e%2e/%2e%2e/secret", 403),
    (b"/a%5C..%5Csecret", 400),             # encoded backslashes
    (b"/%2Ehidden", 404),
])
def test_percent_encoded_tricks_end_to_end(tree, target, status):
    """parse_head decodes once; the walk refuses what the decoding reveals."""
    req = parse_head(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(HttpError) as exc:
        resolve_path(tree, req.path)
    assert exc.value.status == status


def test_double_encoding_is_decoded_once(tree):
    """%252e%252e is the literal name "%2e%2e" after one decoding: harmless."""
    req = parse_head(b"GET /%252e%252e/secret HTTP/1.1\r\nHost: x\r\n\r\n")
    assert req.path == "/%2e%2e/secret"
    os.mkdir(os.path.join(tree, "%2e%2e"))
    open(os.path.join(tree, "%2e%2e", "secret"), "w").close()
    assert resolve_path(tree, req.path) == os.path.join(tree, "%2e%2e", "secret")


@pytest.mark.parametrize("url, expected", [
    ("/", "/"), ("//evil.example/..", "/"), ("//evil.example/x", "/evil.example/x"), ("/a/./b/../c", "/a/c"),
    ("/a/b/", "/a/b"),
])
def test_normalised(url, expected):
    assert normalised(url) == expected


def test_percent_nul_refused_at_parse():
    with pytest.raises(HttpError) as exc:
        parse_head(b"GET /a.txt%00.html HTTP/1.1\r\nHost: x\r\n\r\n")
    assert exc.value.status == 400


def test_root_is_filesystem_root():
    assert resolve_path("/", "/etc") == "/etc"
    assert resolve_path("/", "/") == "/"
