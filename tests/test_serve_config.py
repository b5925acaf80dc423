"""`zcopy serve` start-up rules, through the real CLI: which flag combinations
are refused (one line, exit 2) and what the start-up panel says."""

from __future__ import annotations

import pytest

from serverutil import Server, get, request, serve_refused


def put(port: int, path: str, body: bytes, headers: dict | None = None) -> int:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    raw = (f"PUT {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
           f"{extra}\r\n").encode() + body
    return request(port, raw)[0]


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("a")
    (tmp_path / "read.tok").write_text("r3ad\n")
    (tmp_path / "write.tok").write_text("wr1te\n")
    return root


@pytest.mark.parametrize("args, says", [
    # anonymous writes where reads need a token
    (["--allow-write", "--read-token", "R"], "--allow-write with a read token needs a write token"),
    (["--allow-write", "--read-token-file", "{tmp}/read.tok"], "--allow-write with a read token needs a write token"),
    # a write token on a read-only server was silently ignored
    (["--token", "T"], "--token guards writes, but this server is read-only"),
    (["--token-file", "{tmp}/write.tok"], "--token-file guards writes, but this server is read-only"),
    (["--read-token", "R", "--token", "T"], "--token guards writes, but this server is read-only"),
    (["--allow-write", "--token", ""], "--token is empty"),
    (["--read-token", ""], "--read-token is empty"),
])
def test_token_combinations_refused_at_start(root, args, says):
    args = [a.replace("{tmp}", str(root.parent)) for a in args]
    out = serve_refused(str(root), "--port", "0", *args, env={"ZCOPY_TOKEN": ""})
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"zcopy serve: error: {says}"), out.stderr


def test_environment_token_is_allowed_on_a_read_only_server_and_opens_nothing(root):
    """$ZCOPY_TOKEN is the client's variable too: a read-only server starts with
    it set, and it neither opens reads nor enables writes."""
    with Server(root, "--read-token", "r3ad", env={"ZCOPY_TOKEN": "from-env"}) as s:
        assert get(s.port, "/a.txt")[0] == 401
        assert get(s.port, "/a.txt", {"Authorization": "Bearer from-env"})[0] == 401
        assert get(s.port, "/a.txt", {"Authorization": "Bearer r3ad"})[2] == b"a"
        assert put(s.port, "/a.txt", b"x", {"Authorization": "Bearer from-env"}) == 403
    assert (root / "a.txt").read_bytes() == b"a"


def test_read_token_with_writes_and_environment_token_keeps_writes_guarded(root):
    with Server(root, "--allow-write", "--read-token", "r3ad", env={"ZCOPY_TOKEN": "wr1te"}) as s:
        assert put(s.port, "/a.txt", b"anonymous") == 401
        assert put(s.port, "/a.txt", b"reader", {"Authorization": "Bearer r3ad"}) == 401
        assert put(s.port, "/a.txt", b"writer", {"Authorization": "Bearer wr1te"}) == 204
        assert get(s.port, "/a.txt", {"Authorization": "Bearer r3ad"})[2] == b"writer"
    assert (root / "a.txt").read_bytes() == b"writer"


@pytest.mark.parametrize("args, shown, hidden", [
    ([], {"send engine": "sendfile", "step": "2.0 MiB a turn (8.0 MiB alone)", "writes": "off (read-only)", "reads": "open (no token)"},
     ["upload engine", "pipe size"]),
    (["--allow-write"], {"upload engine": "recv_pwrite", "writes": "on, NO TOKEN: anyone who can connect may write",
                         "step": "2.0 MiB a turn (8.0 MiB alone), 1.0 MiB for copies"},
     ["pipe size"]),
    # a splicing upload engine on a read-only server is not in effect: neither it nor its pipes are shown
    (["--upload-engine", "splice", "--pipe-size", "64KiB"], {"send engine": "sendfile"},
     ["upload engine", "pipe size"]),
    (["--allow-write", "--upload-engine", "splice", "--pipe-size", "64KiB"],
     {"upload engine": "splice", "pipe size": "64.0 KiB"}, []),
    (["--engine", "splice", "--read-token", "r"], {"send engine": "splice", "pipe size": "1.0 MiB", "step": "1.0 MiB a turn",
                                                  "reads": "token required"}, ["upload engine"]),
    # a splice step is one pipe-full, but never more than 1 MiB: --pipe-size takes up to 1 GiB
    (["--engine", "splice", "--pipe-size", "64KiB"], {"step": "64.0 KiB a turn"}, []),
    (["--engine", "splice", "--pipe-size", "16MiB"], {"step": "1.0 MiB a turn"}, []),
])
def test_panel_shows_only_what_is_in_effect(root, args, shown, hidden):
    with Server(root, *args, env={"ZCOPY_TOKEN": "", "COLUMNS": "400"}) as s:
        rows = s.panel()
        assert rows["root"] == str(root) and rows["workers"] == "1", rows
        for name, value in shown.items():
            assert rows.get(name) == value, rows
        for name in hidden:
            assert name not in rows, rows
        assert "unused" not in s.stderr.decode()
