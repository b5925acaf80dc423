"""List a remote folder (a table, or the server's JSON with --json).

examples:
  zcopy ls http://127.0.0.1:8000/
  zcopy ls http://host:8000/iso --json
"""

from __future__ import annotations

HELP = "list a remote folder"


def configure(p) -> None:
    from zcopy.client.options import add_auth_args

    p.add_argument("url", help="http(s)://HOST:PORT/PATH")
    p.add_argument("--json", action="store_true", help="print the listing as JSON")
    add_auth_args(p)


def run(args) -> int:
    from zcopy.client.options import run_reporting

    from zcopy.client import tls

    tls.configure(args, "ls")      # --cacert / --insecure, for https:// URLs
    return run_reporting("ls", lambda: _ls(args))


def _ls(args) -> int:
    import json
    import re
    import sys

    from zcopy.client.options import resolve_token
    from zcopy.client.remote import list_remote
    from zcopy.client.url import parse_url

    doc = list_remote(parse_url(args.url), token=resolve_token(args))
    if args.json:
        text = json.dumps(doc, indent=2, ensure_ascii=False)
        # C1 controls (U+009B is CSI) and DEL are left raw by json.dumps; only strings can hold them
        text = re.sub("[\x7f-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", text)
        try:
            text.encode(sys.stdout.encoding or "utf-8")
        except UnicodeEncodeError:          # a lone surrogate from "\ud800" in the server's JSON
            text = json.dumps(doc, indent=2)
        sys.stdout.write(text + "\n")
    else:
        render(doc)
    return 0


def render(doc: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text        # names are text: never read as markup

    from zcopy.client.names import shown
    from zcopy.units import format_size

    entries = doc["entries"]                   # checked: a list of objects with a string name
    path = doc.get("path")
    table = Table(title=Text(shown(path) if isinstance(path, str) else ""), title_justify="left",
                  box=None, pad_edge=False)
    table.add_column("name")
    table.add_column("size", justify="right")
    table.add_column("modified (UTC)")
    for e in entries:
        is_dir = e.get("type") == "dir"
        name = Text(shown(e["name"]) + ("/" if is_dir else ""), style="bold blue" if is_dir else "")
        size = _size(e)
        table.add_row(name,
                      "-" if is_dir else ("?" if size is None else format_size(size)), _when(e.get("mtime")))
    console = Console()
    console.print(table)
    files = [e for e in entries if e.get("type") != "dir"]
    console.print(f"{len(entries) - len(files)} folder(s), {len(files)} file(s), "
                  f"{format_size(sum(_size(e) or 0 for e in files))}", style="dim", highlight=False)


def _size(entry: dict) -> int | None:
    size = entry.get("size", 0)
    return size if isinstance(size, int) and not isinstance(size, bool) and 0 <= size < 1 << 80 else None


def _when(mtime) -> str:
    """A date as the table shows it; "?" for one that is not a date."""
    import time

    if isinstance(mtime, bool) or not isinstance(mtime, (int, float)):
        return "?"
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.gmtime(mtime))
    except (OverflowError, OSError, ValueError):
        return "?"
