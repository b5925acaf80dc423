"""URL path -> filesystem path on real temp dirs with real symlinks (zcopy.http.paths)."""

from __future__ import annotations

import os

import pytest

from zcopy.http import HttpError, parse_head, resolve_path


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


@pytest.mark.parametrize("url, rel", [
    ("/", ""),
    ("/a.txt", "a.txt"),
    ("/sub/b.txt", "sub/b.txt"),
    ("/sub/", "sub"),
    ("//sub///b.txt", "sub/b.txt"),
    ("/./sub/./b.txt", "sub/b.txt"),
    ("/sub/../a.txt", "a.txt"),            # normalised, still inside
    ("/sub/deep/../../a.txt", "a.txt"),
    ("/missing/file", "missing/file"),     # not our job to 404 it: uploads create paths
])
def test_resolves_inside(tree, url, rel):
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
])
def test_refused(tree, url, status):
    with pytest.raises(HttpError) as exc:
        resolve_path(tree, url)
    assert exc.value.status == status


def test_show_hidden(tree):
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


def test_link_replaced_by_escape_is_caught(tree):
    """The check is made on every call: a link retargeted outside is refused at once."""
    link = os.path.join(tree, "moving")
    os.symlink("sub", link)
    assert resolve_path(tree, "/moving/b.txt", follow_symlinks=True).endswith("/sub/b.txt")
    os.unlink(link)
    os.symlink("../outdir", link)
    with pytest.raises(HttpError):
        resolve_path(tree, "/moving/x", follow_symlinks=True)


@pytest.mark.parametrize("target, status", [
    (b"/..%2Fsecret", 403),                 # %2F decodes to a separator, then .. climbs out
    (b"/%2E%2E/secret", 403),
    (b"/sub/%2e%2e/%2e%2e/secret", 403),
    (b"/a%5C..%5Csecret", 400),             # encoded backslashes
    (b"/%2Ehidden", 404),
])
def test_percent_encoded_tricks_end_to_end(tree, target, status):
    """parse_head decodes once; resolve_path refuses what the decoding reveals."""
    req = parse_head(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(HttpError) as exc:
        resolve_path(tree, req.path)
    assert exc.value.status == status


def test_double_encoding_is_decoded_once(tree):
    """%252e%252e is the literal name "%2e%2e" after one decoding: harmless."""
    req = parse_head(b"GET /%252e%252e/secret HTTP/1.1\r\nHost: x\r\n\r\n")
    assert req.path == "/%2e%2e/secret"
    assert resolve_path(tree, req.path) == os.path.join(tree, "%2e%2e", "secret")


def test_percent_nul_refused_at_parse():
    with pytest.raises(HttpError) as exc:
        parse_head(b"GET /a.txt%00.html HTTP/1.1\r\nHost: x\r\n\r\n")
    assert exc.value.status == 400


def test_root_is_filesystem_root():
    assert resolve_path("/", "/etc") == "/etc"
    assert resolve_path("/", "/") == "/"


@pytest.mark.parametrize("real,allowed,ok", [
    ("/srv/www/a.txt", (), True),
    ("/srv/www", (), True),
    ("/srv/wwwx/a.txt", (), False),            # a prefix is not a parent
    ("/srv/shared/doc.txt", ("/srv/shared",), True),
    ("/srv/shared2/doc.txt", ("/srv/shared",), False),
    ("/etc/passwd", ("/srv/shared", "/opt/data/"), False),
    ("/opt/data/x", ("/srv/shared", "/opt/data/"), True),
])
def test_link_allowed(real, allowed, ok):
    from zcopy.http import link_allowed

    assert link_allowed(real, "/srv/www", allowed) is ok
