"""The ``zcopy`` command line: one parser, one module per subcommand.

Each subcommand lives in ``zcopy/cmd/<name>.py`` and exposes ``HELP`` (one
line), ``configure(parser)`` and ``run(args) -> int``. Command modules keep
their imports light at module level so ``zcopy --help`` stays fast; heavy
imports happen inside ``run``.

Usage errors are one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys

from zcopy import __version__

#: Subcommands in the order ``zcopy --help`` lists them.
COMMANDS = ["probe", "serve", "bench", "get", "put", "ls", "rm", "mv", "seal", "share", "relay", "top", "user"]


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are a single line and exit 2."""

    #: The command line being parsed (set by ``main``), to name a bad flag in any error.
    argv: list[str] = []

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        # argparse checks required arguments before it reports unknown flags:
        # `zcopy get --bogus` would blame the missing URL, not the typo.
        unknown = self.unknown_flags()
        if unknown and message.startswith("the following arguments are required"):
            message = f"unrecognized arguments: {' '.join(unknown)}"
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)

    def unknown_flags(self) -> list[str]:
        """Flags in ``argv`` (after this subcommand's name) that no option of this parser matches,
        whole or as the unique-prefix abbreviation argparse accepts."""
        name = self.prog.split()[-1]
        tokens = self.argv[self.argv.index(name) + 1:] if name in self.argv else []
        known = list(self._option_string_actions)
        unknown = []
        for tok in tokens:
            if tok == "--":
                break
            if not tok.startswith("-") or tok == "-" or _is_number(tok):
                continue
            flag = tok.split("=", 1)[0]
            if not any(k.startswith(flag) for k in known if k.startswith("--") == flag.startswith("--")) \
                    and not (not flag.startswith("--") and flag[:2] in known):
                unknown.append(tok)
        return unknown


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def size_arg(text: str) -> int:
    """argparse type for byte sizes (``64KiB``, ``1GiB``)."""
    from zcopy.units import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_size_arg(text: str) -> int:
    """argparse type for a size that must be at least 1 byte (``--max-upload``)."""
    value = size_arg(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte: {text!r}")
    return value


#: The kernel refuses pipes above 2 GiB; a buffer (copy) this big is a mistake too.
MAX_PIPE_SIZE = 1 << 30


def pipe_size_arg(text: str) -> int:
    """argparse type for ``--pipe-size``: a size from 1 B to 1 GiB."""
    value = size_arg(text)
    if not 0 < value <= MAX_PIPE_SIZE:
        raise argparse.ArgumentTypeError(f"must be between 1 B and 1 GiB: {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0 (``inf`` and ``nan`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number: {text!r}")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def seconds_arg(text: str) -> float:
    """argparse type for a delay that may be 0: finite, 0 or more, at most a week."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:   # nan fails isfinite
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0: {text!r}")
    if value > MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_TIMEOUT} seconds (a week): {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


#: The longest timeout any flag takes: a week. Longer is a typo, or ``inf`` spelled otherwise.
MAX_TIMEOUT = 7 * 86400


def timeout_arg(text: str) -> float:
    """argparse type for timeouts: finite, above 0, at most a week."""
    value = positive_float(text)
    if value > MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_TIMEOUT} seconds (a week): {text!r}")
    return value


def build_parser() -> Parser:
    parser = Parser(
        prog="zcopy",
        description="Zero-copy file transfer toolkit for Linux: measure what the kernel does, "
        "then serve, copy and relay files without copying them through user space.",
        epilog="Run 'zcopy COMMAND --help' for a command's options. Start with 'zcopy probe'.",
    )
    parser.add_argument("--version", action="version", version=f"zcopy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"zcopy.cmd.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        p.formatter_class = argparse.RawDescriptionHelpFormatter
        module.configure(p)
        p.set_defaults(_run=module.run, _parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    Parser.argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Say it in the subcommand's name, so the hint points at the right --help.
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `zcopy probe --json | head` must not print a traceback.
        sys.stderr.close()
        return 1


if __name__ == "__main__":
    sys.exit(main())
