"""Which of the hot path's modules run compiled, and the guard that keeps a stale one out.

``setup.py`` compiles every module with a ``.pxd`` beside it (Cython, from the
unchanged ``.py``) and records the SHA-256 of each source it compiled in
``zcopy._hotpath_sources``. ``install()``, run once when ``zcopy`` is
imported, hashes those sources again: if any ``.py`` changed since the build
(an editable install edited, a checkout moved), every compiled module is
imported from its ``.py``, as with ``ZCOPY_PURE=1`` in the environment. Either
way the code that runs is the code in the ``.py``; ``state()`` says which
ran how (``zcopy serve`` shows it, docs/hotpath.md).

``zcopy.sockio`` is written in Cython (a ``.pyx``, no ``.py``): the manifest
hashes its ``.pyx``, and when the others run from their ``.py`` it is not
imported at all (its importer, ``zcopy.transport``, asks ``compiled()`` and
falls back to the socket's own methods).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
#: module name -> why it runs from its .py although it was compiled ("ZCOPY_PURE=1", "changed since the build")
_SOURCE_FIRST: dict[str, str] = {}


def _source_path(name: str) -> str:
    """The file a compiled module is built from: its ``.py``, or its ``.pyx`` when it has no ``.py``."""
    base = os.path.join(_ROOT, *name.split("."))
    return base + ".py" if os.path.exists(base + ".py") or not os.path.exists(base + ".pyx") else base + ".pyx"


class _SourceFirst:
    """A meta path finder for the modules in ``_SOURCE_FIRST``: their ``.py``, not the extension beside it.
    A module that has no ``.py`` (written in Cython) cannot be imported then: its stale or unwanted
    extension must not load either."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name not in _SOURCE_FIRST:
            return None
        source = _source_path(name)
        if not source.endswith(".py"):
            raise ModuleNotFoundError(f"{name} has no .py to run instead of its extension ({_SOURCE_FIRST[name]})", name=name)
        return importlib.util.spec_from_file_location(name, source,
                                                      loader=importlib.machinery.SourceFileLoader(name, source))


def install() -> None:
    """All or nothing: the compiled modules cimport each other's classes (the connection
    reads the stats' and the protocol's fields as C structs), so one stale module sends
    every one of them to its ``.py``."""
    try:
        from zcopy._hotpath_sources import SOURCES
    except ImportError:             # nothing was compiled
        return
    if os.environ.get("ZCOPY_PURE") == "1":
        why = "ZCOPY_PURE=1"
    else:
        changed = []
        for name, digest in SOURCES.items():
            try:
                with open(_source_path(name), "rb") as f:
                    current = hashlib.sha256(f.read()).hexdigest()
            except OSError:
                current = None
            if current != digest:
                changed.append(name)
        if not changed:
            return
        why = f"{', '.join(sorted(changed))} changed since the build"
    for name in SOURCES:
        _SOURCE_FIRST[name] = why
    if _SourceFirst not in sys.meta_path:
        sys.meta_path.insert(0, _SourceFirst)


def state() -> tuple[list[str], dict[str, str]]:
    """(modules running compiled, {module: why it runs from its .py}) for what was compiled."""
    try:
        from zcopy._hotpath_sources import SOURCES
    except ImportError:
        return [], {}
    compiled = [name for name in SOURCES if name not in _SOURCE_FIRST]
    return compiled, dict(_SOURCE_FIRST)


def compiled(name: str) -> bool:
    """``name``'s extension was built and runs: its source unchanged since the build, no ``ZCOPY_PURE=1``."""
    try:
        from zcopy._hotpath_sources import SOURCES
    except ImportError:
        return False
    return name in SOURCES and name not in _SOURCE_FIRST


def summary() -> str:
    """One line for ``zcopy serve``'s panel."""
    compiled, source_first = state()
    if compiled:
        return f"compiled ({len(compiled)} modules, Cython)"
    if source_first:
        return f"Python: {next(iter(source_first.values()))}"
    return "Python (not compiled: no C compiler or Cython at install)"
