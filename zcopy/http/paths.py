"""URL paths, checked lexically (no filesystem here).

The URL path arrives percent-decoded once (``Request.path``). ``url_segments``
checks it and returns the segments the server's filesystem walk
(``zcopy.server.root``) takes from the ROOT folder's fd:

* NUL or a backslash anywhere -> 400. A backslash is a legal Linux file-name
  character, but refusing it removes every ``..\\`` trick and any doubt
  about what a Windows-minded client meant.
* A ``..`` that climbs above the root -> 403 (the request can only be an
  attack: browsers normalise before sending).
* ``.`` and ``..`` are kept, not resolved here: the walk applies them to the
  folders it has opened, so a dot segment after a file (``/a.txt/.``,
  ``/a.txt/..``) is 404, never the file or its folder. Writes refuse them (400).
  A read's trailing slash becomes a ``.`` (``/a.txt/`` is 404 too).
* A segment starting with ``.`` (dotfiles, ``.git``) -> 404 unless
  ``show_hidden``: we answer as if it did not exist, as listings hide it.
* ``mac_files`` (``serve --allow-mac-files``): a last segment that is one of
  macOS Finder's own files (``._name`` AppleDouble, ``.DS_Store``: ``mac_file``)
  is an ordinary name, read and written like any other (listings still hide it).
* ``/.zcopy/`` is the server's own namespace (``RESERVED``): never a user file,
  whatever ``show_hidden`` says (404; writes 403).

``normalised`` is the lexical form of a path (dot segments applied, no empty
segments), used to build a redirect's Location: it never starts with ``//``.
"""

from __future__ import annotations

from zcopy.http.errors import HttpError

#: The first segment of the server's own URL namespace (``/.zcopy/...``).
RESERVED = ".zcopy"


def mac_file(name: str) -> bool:
    """A file macOS Finder writes next to others on a network volume: ``._name`` (AppleDouble: the
    extended attributes and resource fork of ``name``) and ``.DS_Store`` (the folder's view)."""
    return name.startswith("._") or name == ".DS_Store"


def url_segments(url_path: str, *, show_hidden: bool = False, write: bool = False,
                 mac_files: bool = False) -> list[str]:
    """The non-empty segments of ``url_path``, dot segments included, after the
    checks above (raises HttpError). ``write``: the path names something to
    create, replace, move or delete."""
    if not url_path.startswith("/"):
        raise HttpError(400, "path must start with /")
    if "\x00" in url_path or "\\" in url_path:
        raise HttpError(400, "invalid character in path")
    segments = [seg for seg in url_path.split("/") if seg]
    if not write and url_path.endswith("/") and segments:
        segments.append(".")            # "/a.txt/" names a folder: never the file
    depth = 0
    for seg in segments:
        if seg == "..":
            if depth == 0:
                raise HttpError(403, "path leaves the served folder")
            depth -= 1
        elif seg != ".":
            depth += 1
    for seg in segments:
        if seg in (".", ".."):
            if write:
                raise HttpError(400, f"invalid path segment {seg!r}")
        elif seg[0] == "." and not show_hidden and not (mac_files and seg is segments[-1] and mac_file(seg)):
            raise HttpError(403 if write else 404, "hidden names cannot be written" if write else "not found")
    top = normalised_parts(segments)
    if top and top[0] == RESERVED:
        raise HttpError(403 if write else 404, "reserved for the server" if write else "not found")
    return segments


def normalised_parts(segments: list[str]) -> list[str]:
    """Dot segments applied lexically (``..`` above the top is dropped)."""
    parts: list[str] = []
    for seg in segments:
        if seg == "..":
            if parts:
                parts.pop()
        elif seg and seg != ".":
            parts.append(seg)
    return parts


def normalised(url_path: str) -> str:
    """``url_path`` with empty and dot segments applied: ``/a/b``, or ``/``."""
    return "/" + "/".join(normalised_parts(url_path.split("/")))
