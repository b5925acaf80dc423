"""Names: what a remote name may be saved as locally, and how names are
shown in messages.

A URL's last segment is percent-decoded to bytes and kept as bytes
(``os.fsdecode``, so a name that is not UTF-8 is saved with its own bytes,
not with U+FFFD). It is saved only if it is a plain file name: decoding may
have produced ``/`` (``%2F``), ``..``, NUL or control characters, and a
malicious server or link must not choose where a download lands.

Messages show paths decoded, the same way for remote paths and local ones:
valid UTF-8 as text, any other byte as ``\\xNN``, control characters escaped
(a name must not move the cursor or rewrite the terminal line).
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote_to_bytes

from zcopy.client.errors import ClientError

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def remote_file_name(segment: str) -> str:
    """A percent-encoded URL segment as a local name (bytes kept via surrogateescape)."""
    return os.fsdecode(unquote_to_bytes(segment))


def plain_file_name(name: str) -> str:
    """``name`` if it names a file inside a folder and nothing else; a ClientError otherwise."""
    raw = os.fsencode(name)
    why = ("is empty" if not raw else
           "is . or .." if raw in (b".", b"..") else
           "contains /" if b"/" in raw else
           "contains NUL" if b"\0" in raw else
           "contains control characters" if _CONTROL.search(raw.decode("utf-8", "replace")) else None)
    if why:
        raise ClientError(f"refusing to save as '{shown(name)}': the name {why} (give -o FILE)")
    return name


def shown(path: str | bytes) -> str:
    """A local path (str with surrogateescape, or bytes) or a decoded remote
    path as it appears in messages."""
    try:
        raw = path if isinstance(path, bytes) else os.fsencode(path)
    except UnicodeEncodeError:            # a surrogate that no byte decodes to (from JSON "\ud800")
        raw = path.encode("utf-8", "backslashreplace")
    text = raw.decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def shown_remote(encoded_path: str) -> str:
    """A percent-encoded request path, decoded for messages."""
    return shown(unquote_to_bytes(encoded_path))
