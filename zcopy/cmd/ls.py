"""List a remote folder (a table, or the server's JSON with --json).

examples:
  zcopy ls http://127.0.0.1:8000/
  zcopy ls http://host:8000/iso --json
"""

from __future__ import annotations

HELP = "list a remote folder"


def configure(p) -> None:
    from zcopy.client.options import add_auth_args

    p.add_argument("url", help="http://HOST:PORT/PATH")
    p.add_argument("--json", action="store_true", help="print the listing as JSON")
    add_auth_args(p)


def run(args) -> int:
    from zcopy.client.options import run_reporting

    return run_reporting("ls", lambda: _ls(args))


def _ls(args) -> int:
    import json
    import sys

    from zcopy.client.options import resolve_token
    from zcopy.client.remote import list_remote
    from zcopy.client.url import parse_url

    doc = list_remote(parse_url(args.url), token=resolve_token(args))
    if args.json:
        json.dump(doc, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        render(doc)
    return 0


def render(doc: dict) -> None:
    import time

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from zcopy.units import format_size

    entries = doc.get("entries", [])
    table = Table(title=escape(doc.get("path", "")), title_justify="left", box=None, pad_edge=False)
    table.add_column("name")
    table.add_column("size", justify="right")
    table.add_column("modified (UTC)")
    for e in entries:
        is_dir = e.get("type") == "dir"
        name = escape(e["name"] + ("/" if is_dir else ""))
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e.get("mtime", 0)))
        table.add_row(f"[bold blue]{name}[/]" if is_dir else name,
                      "-" if is_dir else format_size(e.get("size", 0)), when)
    console = Console()
    console.print(table)
    files = [e for e in entries if e.get("type") != "dir"]
    console.print(f"{len(entries) - len(files)} folder(s), {len(files)} file(s), "
                  f"{format_size(sum(e.get('size', 0) for e in files))}", style="dim", highlight=False)
