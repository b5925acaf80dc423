"""The XDG Base Directory folders zcopy keeps its files in.

One rule for all of them, as the spec says: the environment variable if it
holds an absolute path (a relative one is ignored), else the default under
the home folder; zcopy's own folder is ``zcopy`` inside it.
"""

from __future__ import annotations

import os

_DEFAULTS = {
    "XDG_CACHE_HOME": (".cache",),           # the probe's saved profile
    "XDG_STATE_HOME": (".local", "state"),   # the server's state database
}


def folder(variable: str) -> str:
    """``$variable/zcopy``, or the spec's default for it under ``~``."""
    base = os.environ.get(variable, "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), *_DEFAULTS[variable])
    return os.path.join(base, "zcopy")
