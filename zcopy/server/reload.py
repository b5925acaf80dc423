"""What SIGHUP reloads: a list of hooks, each re-reading one source.

A hook is ``fn(config) -> str | None``: it re-reads its source (a token file
today; user databases and certificates register theirs later), updates the
config in place when the value changed and says so in one line, or returns
None when nothing changed. A hook that cannot read its source raises
``ReloadError``: the old value stays and the line says why. The supervisor
runs the hooks on SIGHUP and, when any changed something, forks new workers
with the new config (the old ones drain), so a hook never has to reach into a
running worker.
"""

from __future__ import annotations

from typing import Callable


class ReloadError(Exception):
    """The source could not be read: keep the old value."""


class Reloader:
    def __init__(self) -> None:
        self.hooks: list[tuple[str, Callable]] = []

    def register(self, name: str, fn: Callable) -> None:
        self.hooks.append((name, fn))

    def run(self, config) -> tuple[bool, list[str]]:
        """Run every hook: (anything changed, one log line per hook)."""
        changed = False
        lines = []
        for name, fn in self.hooks:
            try:
                what = fn(config)
            except ReloadError as exc:
                lines.append(f"{name}: not reloaded ({exc}); keeping the old one")
                continue
            if what:
                changed = True
                lines.append(f"{name}: reloaded ({what})")
            else:
                lines.append(f"{name}: unchanged")
        if not self.hooks:
            lines.append("nothing can be reloaded (no token file given)")
        return changed, lines


def token_file_hook(path: str, attribute: str) -> Callable:
    """Re-read a token file (``--token-file``/``--read-token-file``) into
    ``config.<attribute>``. The token itself is never logged."""
    from zcopy.tokens import read_token_file

    def reload(config) -> str | None:
        try:
            token = read_token_file(path)
        except OSError as exc:
            raise ReloadError(f"cannot read {path}: {exc.strerror}") from None
        except ValueError:
            raise ReloadError(f"{path} is empty") from None
        if token == getattr(config, attribute):
            return None
        setattr(config, attribute, token)
        return f"new value from {path}"
    return reload
