"""Which of the hot path's modules run compiled, and the guard that keeps a stale one out.

``setup.py`` compiles every module with a ``.pxd`` beside it (Cython, from the
unchanged ``.py``) and records each source it compiled, with its SHA-256, in
``zcopy._hotpath_sources``. ``install()``, run once when ``zcopy`` is
imported, hashes those sources again: if any ``.py`` changed since the build
(an editable install edited, a checkout moved), every compiled module is
imported from its ``.py``, as with ``ZCOPY_PURE=1`` in the environment. Either
way the code that runs is the code in the ``.py``; ``state()`` says which
ran how (``zcopy serve`` shows it, docs/hotpath.md).

``zcopy.sockio`` and ``zcopy.scan`` are written in Cython (a ``.pyx``, no ``.py``): the
manifest names and hashes each ``.pyx``, and when the others run from their ``.py`` they are
not imported at all (their importers, ``zcopy.transport`` and ``zcopy.server.propfind``, ask
``compiled()`` and fall back to the socket's own methods, or to propfind's own Python).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _manifest() -> dict:
    """What the build compiled: {module: (its source, relative to the package's parent; SHA-256)}."""
    try:
        from zcopy._hotpath_sources import SOURCES
    except ImportError:             # nothing was compiled
        return {}
    return SOURCES


#: The build's manifest, read once per process.
SOURCES = _manifest()
#: Why every compiled module runs from its source instead ("ZCOPY_PURE=1", "... changed since the
#: build"); None while they run compiled. One reason for all: see ``install``.
_why: str | None = None


class _SourceFirst:
    """A meta path finder for the compiled modules while ``_why`` is set: their ``.py``, not the
    extension beside it. A module that has no ``.py`` (written in Cython, a ``.pyx``) cannot be
    imported then: its stale or unwanted extension must not load either."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if _why is None or name not in SOURCES:
            return None
        source = os.path.join(_ROOT, SOURCES[name][0])
        if not source.endswith(".py"):
            raise ModuleNotFoundError(f"{name} has no .py to run instead of its extension ({_why})", name=name)
        return importlib.util.spec_from_file_location(name, source,
                                                      loader=importlib.machinery.SourceFileLoader(name, source))


def install() -> None:
    """All or nothing: the compiled modules cimport each other's classes (the connection
    reads the stats' and the protocol's fields as C structs), so one stale module sends
    every one of them to its ``.py``."""
    global _why
    if not SOURCES:
        return
    if os.environ.get("ZCOPY_PURE") == "1":
        _why = "ZCOPY_PURE=1"
    else:
        changed = []
        for name, (source, digest) in SOURCES.items():
            try:
                with open(os.path.join(_ROOT, source), "rb") as f:
                    current = hashlib.sha256(f.read()).hexdigest()
            except OSError:
                current = None
            if current != digest:
                changed.append(name)
        if not changed:
            return
        _why = f"{', '.join(sorted(changed))} changed since the build"
    if _SourceFirst not in sys.meta_path:
        sys.meta_path.insert(0, _SourceFirst)


def state() -> tuple[list[str], dict[str, str]]:
    """(modules running compiled, {module: why it runs from its source}) for what was compiled."""
    if _why is None:
        return list(SOURCES), {}
    return [], dict.fromkeys(SOURCES, _why)


def compiled(name: str) -> bool:
    """``name``'s extension was built and runs: its source unchanged since the build, no ``ZCOPY_PURE=1``."""
    return _why is None and name in SOURCES


def extension(name: str):
    """``name``'s compiled module when it runs (``compiled``), else None: what a module with a Python
    fallback takes it from. None too when it cannot be imported (built for another interpreter, or
    removed since the build)."""
    if not compiled(name):
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def summary() -> str:
    """One line for ``zcopy serve``'s panel."""
    if not SOURCES:
        return "Python (not compiled: no C compiler or Cython at install)"
    if _why is None:
        return f"compiled ({len(SOURCES)} modules, Cython)"
    return f"Python: {_why}"
