"""What SIGHUP reloads: a list of hooks, each re-reading one source.

A hook is ``fn(config) -> str | None``: it re-reads its source (a token file,
the users file, the TLS certificate and key), updates the
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


def users_file_hook(path: str) -> Callable:
    """Re-read the users file (``--users``) into ``config.accounts``; a malformed file keeps the
    old accounts, and the log line says which line is wrong. (Workers also re-read it themselves
    when its mtime changes: ``zcopy.server.worker``.)"""
    from zcopy.accounts.users import UsersFileError, load

    def reload(config) -> str | None:
        try:
            accounts = load(path)
        except UsersFileError as exc:
            raise ReloadError(str(exc)) from None
        except OSError as exc:
            raise ReloadError(f"cannot read {path}: {exc.strerror}") from None
        if _same_accounts(accounts, config.accounts):
            return None
        config.accounts = accounts
        return f"{len(accounts)} accounts from {path}"
    return reload


def _same_accounts(a, b) -> bool:
    if b is None or a.keys() != b.keys():
        return False
    return all(a[n].hash == b[n].hash and a[n].rules == b[n].rules for n in a)


def tls_hook() -> Callable:
    """Re-read ``--tls-cert``/``--tls-key`` into a new context when their bytes changed; the new
    workers serve it, the old ones finish their connections with the old one. A pair that cannot
    be used keeps the old context, and the line says why."""
    from zcopy.tls import TlsConfigError, make_context, pem_stamp

    def reload(config) -> str | None:
        old = config.tls
        try:
            stamp = pem_stamp(old.cert, old.key)
            if stamp == old.stamp:
                return None
            context = make_context(old.cert, old.key, ktls=old.ktls)
        except TlsConfigError as exc:
            raise ReloadError(str(exc)) from None
        from zcopy.server.tlsaccept import TlsSettings

        config.tls = TlsSettings(old.cert, old.key, context, stamp, ktls=old.ktls, redirect=old.redirect,
                                 redirect_port=old.redirect_port, ulp=old.ulp)
        return f"new certificate from {old.cert}"
    return reload
