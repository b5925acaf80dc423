"""URL path -> filesystem path, never outside the served root.

The URL path arrives percent-decoded once (``Request.path``). Here it is
checked and normalised lexically, then the filesystem is asked, once, where
it really leads (``os.path.realpath``):

* NUL or a backslash anywhere -> 400. A backslash is a legal Linux file-name
  character, but refusing it removes every ``..\\`` trick and any doubt
  about what a Windows-minded client meant.
* ``.`` and ``..`` segments are resolved lexically; a ``..`` that climbs
  above the root -> 403 (the request can only be an attack: browsers
  normalise before sending).
* A segment starting with ``.`` (dotfiles, ``.git``) -> 404 unless
  ``show_hidden``: we answer as if it did not exist, as listings hide it.
* Symlinks: without ``follow_symlinks`` any symlink in any segment -> 404
  (listings hide symlinks too, so it is consistently "not there"). With it, a
  link is allowed when its target, fully resolved, is still inside the root
  or inside one of the ``allowed`` folders the operator named
  (``serve --symlink-target DIR``); one that leads anywhere else -> 404 too.

A path that does not exist is returned as is (uploads create files); the
caller's ``stat`` says 404. Only ``realpath`` touches the disk (strict, so a
symlink loop is refused here rather than looking like a plain path).
"""

from __future__ import annotations

import errno
import os

from zcopy.http.errors import HttpError


def resolve_path(root: str, url_path: str, *, follow_symlinks: bool = False,
                 show_hidden: bool = False, allowed: tuple[str, ...] = ()) -> str:
    """Absolute filesystem path for ``url_path`` inside ``root`` (which the
    caller has already passed through ``os.path.realpath``, as it has each of
    ``allowed``: further folders that followed symlinks may lead into)."""
    if not url_path.startswith("/"):
        raise HttpError(400, "path must start with /")
    if "\x00" in url_path or "\\" in url_path:
        raise HttpError(400, "invalid character in path")
    parts: list[str] = []
    for seg in url_path.split("/"):
        if seg == "" or seg == ".":
            continue
        if seg == "..":
            if not parts:
                raise HttpError(403, "path leaves the served folder")
            parts.pop()
            continue
        parts.append(seg)
    if not show_hidden:
        for seg in parts:
            if seg[0] == ".":
                raise HttpError(404, "not found")
    base = root.rstrip("/")
    path = base + "/" + "/".join(parts) if parts else root
    try:
        real = os.path.realpath(path, strict=True)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise HttpError(404, "not found") from None
        real = os.path.realpath(path)       # missing or unreadable tail: the caller's stat decides
    if real == path:
        return path
    if not follow_symlinks or not link_allowed(real, root, allowed):
        raise HttpError(404, "not found")
    return real


def link_allowed(real: str, root: str, allowed: tuple[str, ...] = ()) -> bool:
    """Is a fully resolved path inside ``root`` or one of the ``allowed`` folders?"""
    for base in (root, *allowed):
        base = base.rstrip("/")
        if not base or real == base or real.startswith(base + "/"):
            return True
    return False
