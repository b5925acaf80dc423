"""`zcopy put` resumes over tus: a 64 MiB put through `zcopy relay` whose relay is SIGKILLed mid-way,
then the same command again through a new relay on the same port sends less than the file and the
stored file is byte-identical; the client's record (0600) is gone after; --retries continues by itself;
small files and --encrypt-to stay plain PUTs (docs/client.md)."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys

from resumableutil import group_gone
from serverutil import wait_for
from serverutil import Server
from test_relay_cli import RelayProcess
from test_resumable_tus import free_port, partials, rows

MiB = 1 << 20


def put(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "zcopy", "put", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, **env})


def up_bytes(log) -> int:
    return sum(int(m.group(1)) for m in re.finditer(r" up=(\d+) ", log.read_text()))


def test_put_through_a_killed_relay_resumes_and_sends_less(tmp_path):
    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    state = tmp_path / "state"
    client_state = tmp_path / "client-state"
    env = {"XDG_STATE_HOME": str(client_state)}
    data = os.urandom(64 * MiB)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    listen = f"127.0.0.1:{free_port()}"
    with Server(root, "--allow-write", "--state-dir", str(state)) as s:
        log1 = tmp_path / "relay1.log"
        # a slow relay (8 MiB/s), so the cut lands mid-way
        relay = RelayProcess("--upstream", f"127.0.0.1:{s.port}", "--rate", "8MiB", "--log", str(log1),
                             listen=listen)
        try:
            first = put(str(src), f"http://{listen}/in/", "-q", env=env)
            wait_for(lambda: any(r[1] >= 16 * MiB for r in rows(state)) if (state / "state.db").exists() else False,
                     timeout=60, what="16 MiB durable on the server")
            workers = relay.worker_pids()
            for pid in [relay.proc.pid, *workers]:      # every process of the relay, SIGKILL
                os.kill(pid, signal.SIGKILL)
            relay.proc.wait(10)
            out, err = first.communicate(timeout=60)
            assert first.returncode == 1 and b"run the same command again" in err, err
        finally:
            if relay.proc.poll() is None:
                relay.stop()
            relay.proc.stderr.close()
        assert not (root / "in" / "big.bin").exists()
        records = os.listdir(client_state / "zcopy" / "put")
        assert len(records) == 1
        assert stat.S_IMODE(os.stat(client_state / "zcopy" / "put" / records[0]).st_mode) == 0o600
        (_, durable, _), = rows(state)

        log2 = tmp_path / "relay2.log"
        relay = RelayProcess("--upstream", f"127.0.0.1:{s.port}", "--log", str(log2), listen=listen)
        try:
            second = put(str(src), f"http://{listen}/in/", env=env)
            out, err = second.communicate(timeout=120)
            assert second.returncode == 0, err
            assert b"resumed: sent" in err, err
        finally:
            relay.stop()
        assert (root / "in" / "big.bin").read_bytes() == data
        sent = wait_for(lambda: up_bytes(log2), what="the relay's log")
        assert sent < 64 * MiB - durable + MiB, (sent, durable)     # the rest, plus a few heads
        assert os.listdir(client_state / "zcopy" / "put") == []
        assert partials(root) == [] and rows(state) == []


def test_retries_continue_by_themselves_and_small_or_encrypted_puts_stay_plain(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    state = tmp_path / "state"
    env = {"XDG_STATE_HOME": str(tmp_path / "cs")}
    data = os.urandom(24 * MiB)
    src = tmp_path / "f.bin"
    src.write_bytes(data)
    port = free_port()
    args = ("--allow-write", "--state-dir", str(state), "--port", str(port), "--access-log", str(tmp_path / "a.log"))
    server = Server(root, *args, own_session=True).start()
    try:
        # rate-limited through a relay so that the server can be killed under it; --retries brings it back
        listen = f"127.0.0.1:{free_port()}"
        relay = RelayProcess("--upstream", f"127.0.0.1:{port}", "--rate", "8MiB", listen=listen)
        try:
            p = put(str(src), f"http://{listen}/new/dir/f.bin", "-q", "--retries", "8", env=env)
            wait_for(lambda: any(r[1] > 0 for r in rows(state)) if (state / "state.db").exists() else False,
                     timeout=60, what="some bytes durable")
            server.kill_node()
            wait_for(lambda: group_gone(server.proc.pid), what="every process of the node gone")
            server = Server(root, *args, own_session=True).start()
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        finally:
            relay.stop()
            relay.proc.stderr.close()
        assert (root / "new" / "dir" / "f.bin").read_bytes() == data      # its folders were made too
        # small: a plain PUT (no POST/PATCH in the access log)
        small = tmp_path / "s.txt"
        small.write_bytes(b"small")
        assert put(str(small), f"http://127.0.0.1:{port}/s.txt", "-q", env=env).wait(30) == 0
        assert (root / "s.txt").read_bytes() == b"small"
        # encrypted (age is a stream with a fresh file key each time): a plain PUT too, restarted when cut
        import pyrage
        recipient = str(pyrage.x25519.Identity.generate().to_public())
        assert put(str(src), f"http://127.0.0.1:{port}/f.bin.age", "-q", "-r", recipient, env=env).wait(60) == 0
        log = wait_for(lambda: (lambda t: t if '"PUT /f.bin.age' in t else None)((tmp_path / "a.log").read_text()),
                       what="the access log")
        assert '"PUT /s.txt' in log and "PATCH /new/dir/f.bin?upload=" in log
        assert "POST /f.bin.age" not in log and "PATCH /f.bin.age" not in log
    finally:
        server.kill()


def test_bad_resumable_flags_are_one_line_and_exit_2(tmp_path):
    for args, says in ((["put", "--retries", "x", "f", "http://127.0.0.1:9/"], "argument --retries: not a number"),
                       (["serve", str(tmp_path), "--upload-expiry", "0"], "argument --upload-expiry: must be positive")):
        out = subprocess.run([sys.executable, "-m", "zcopy", *args], capture_output=True, text=True, timeout=30)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and says in lines[0], out.stderr


def test_an_upload_completed_by_a_lost_answer_is_not_sent_again(tmp_path, monkeypatch):
    """The server remembers a completed upload until it expires: a client whose final PATCH answer was
    lost finds the whole file's offset on HEAD and sends nothing again (before: 404, a new upload)."""
    import base64

    from resumableutil import exchange

    from zcopy.client import resumable
    from zcopy.client.upload import upload
    from zcopy.client.url import parse_url

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "cs"))
    root = tmp_path / "root"
    root.mkdir()
    src = tmp_path / "c.bin"
    data = os.urandom(resumable.MIN_SIZE + 1)
    src.write_bytes(data)
    with Server(root, "--allow-write", "--state-dir", str(tmp_path / "state")) as s:
        tus = "Tus-Resumable: 1.0.0\r\n"
        (status, h, _), = exchange(s.port, f"POST / HTTP/1.1\r\nHost: t\r\n{tus}Upload-Length: {len(data)}\r\n"
                                           f"Upload-Metadata: filename {base64.b64encode(b'c.bin').decode()}\r\n"
                                           "Content-Length: 0\r\n")
        assert status == 201
        location = h["location"]
        remote = parse_url(f"http://127.0.0.1:{s.port}/c.bin")
        resumable.Record(remote, os.stat(src)).save(location, remote, len(data))     # the client's note
        (status, h, _), = exchange(s.port, f"PATCH {location} HTTP/1.1\r\nHost: t\r\n{tus}Upload-Offset: 0\r\n"
                                           f"Content-Type: application/offset+octet-stream\r\n"
                                           f"Content-Length: {len(data)}\r\n", data)
        assert status == 204 and (root / "c.bin").read_bytes() == data     # ... whose answer it never saw
        done = upload(str(src), remote, quiet=True, timeout=30)
        assert (done.status, done.sent) == (200, 0)
        assert resumable.Record(remote, os.stat(src)).load() is None
        assert (root / "c.bin").read_bytes() == data
