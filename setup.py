"""The build's one step beyond pyproject.toml: zcopy's hot path compiled with Cython.

Every module with a ``.pxd`` beside its ``.py`` (the loop, the connection, the
HTTP protocol, the responder, the reply, the file cache's trust record, the stats, the
Date header) is compiled from that unchanged ``.py``, and the modules written in Cython from
their ``.pyx``: ``zcopy/sockio.pyx`` (recv and send on the socket) and ``zcopy/scan.pyx`` (a
WebDAV PROPFIND's first build of a folder: the scan and the per-member columns in C); the ``.pxd`` only
declares its classes' attribute types, so that an attribute read is a C
struct read instead of a dictionary lookup (docs/hotpath.md). Each extension
is optional: without a C compiler, or with ``ZCOPY_PURE=1`` set at build time,
the same modules run as plain Python. The build writes
``zcopy/_hotpath_sources.py``, each compiled module's source and its SHA-256,
which ``zcopy.hotpath`` compares at start-up so that a module whose ``.py``
changed since the build runs from that ``.py``, never from a stale extension.
"""

import hashlib
import os
import pathlib

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = pathlib.Path(__file__).parent


def hot_sources() -> list[str]:
    """The .py of every module with a .pxd beside it, and the modules written in Cython (.pyx:
    ``zcopy.sockio``, the socket's recv and send without the socket module's toll; ``zcopy.scan``, a
    PROPFIND's first build in C)."""
    return sorted([str(p.relative_to(HERE).with_suffix(".py")) for p in HERE.glob("zcopy/**/*.pxd")
                   if p.with_suffix(".py").exists()] + [str(p.relative_to(HERE)) for p in HERE.glob("zcopy/**/*.pyx")])


def source_of(name: str) -> pathlib.Path:
    """The file a compiled module was built from: its .py, or its .pyx when it has no .py."""
    base = HERE / name.replace(".", "/")
    py = base.with_suffix(".py")
    return py if py.exists() else base.with_suffix(".pyx")


def ext_modules() -> list:
    if os.environ.get("ZCOPY_PURE") == "1":
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:             # (pip's isolated build always has it: pyproject.toml asks for it)
        return []
    exts = cythonize(hot_sources(), language_level=3, quiet=True,
                     compiler_directives={"annotation_typing": False, "auto_pickle": False})
    for ext in exts:
        ext.optional = True         # a failed compile leaves that module in Python, not the install failed
    return exts


class BuildHotPath(build_ext):
    """build_ext on every CPU (each module is one C compile, about 8 s: the build takes half the
    time on two cores), then the manifest of what it compiled (``zcopy/_hotpath_sources.py``)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:           # (``-j N`` on the command line still decides)
            self.parallel = len(os.sched_getaffinity(0))

    def run(self) -> None:
        super().run()
        built = {}
        for ext in self.extensions:
            if os.path.exists(self.get_ext_fullpath(ext.name)):
                source = source_of(ext.name)
                built[ext.name] = (str(source.relative_to(HERE)), hashlib.sha256(source.read_bytes()).hexdigest())
        target = HERE if self.inplace else pathlib.Path(self.build_lib)
        lines = ['"""Written by setup.py\'s build: each compiled module\'s source and its SHA-256."""', "",
                 "SOURCES = {"] + [f"    {name!r}: {digest!r}," for name, digest in sorted(built.items())] + ["}", ""]
        (target / "zcopy" / "_hotpath_sources.py").write_text("\n".join(lines))


setup(ext_modules=ext_modules(), cmdclass={"build_ext": BuildHotPath})
