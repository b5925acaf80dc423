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
  link is allowed when its target, fully resolved, is still inside the root;
  one that leads out -> 404 as well.

A path that does not exist is returned as is (uploads create files); the
caller's ``stat`` says 404. Only ``realpath`` touches the disk (strict, so a
symlink loop is refused here rather than looking like a plain path).
"""

from __future__ import annotations

import errno
import os

from zcopy.http.errors import HttpError


def resolve_path(root: str, url_path: str, *, follow_symlinks: bool = False,
                 show_hidden: bool = False) -> str:
    """Absolute filesystem path for ``url_path`` inside ``root`` (which the
    caller has already passed through ``os.path.realpath``)."""
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
    if not follow_symlinks:
        raise HttpError(404, "not found")
    if real != base and not real.startswith(base + "/") and base:
        raise HttpError(404, "not found")
    return real
