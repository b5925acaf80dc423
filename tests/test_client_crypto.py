"""age encryption in the client: interop with the age CLI and curl both ways,
passphrases (checked against rage's own implementation in pyrage), flat
memory on a 64 MiB file, and the passphrase header swap's own checks."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys

import pyrage
import pytest

from conftest import needs_tool
from serverutil import Server, curl
from test_client import TOKEN, sha256, write_random, zcopy
from test_top import Term
from zcopy.client import agepass
from zcopy.client.errors import ClientError

PASS_ENV = {"ZCOPY_PASSPHRASE": "correct horse battery staple"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    (root / "curl").mkdir()         # curl's PUT makes no folders (a missing one is 409, as WebDAV says)
    with Server(root, "--allow-write", "--token", TOKEN) as srv:
        yield srv


@pytest.fixture
def keypair(tmp_path):
    """(identity file, recipient): made by age-keygen when installed, else by pyrage."""
    key = tmp_path / "key.txt"
    if shutil.which("age-keygen"):
        subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
        public = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True)
        return str(key), public.stdout.strip()
    identity = pyrage.x25519.Identity.generate()
    key.write_text(f"# test key\n{identity}\n")
    return str(key), str(identity.to_public())


@needs_tool("age")
def test_put_encrypted_decrypts_with_age_cli(tmp_path, server, keypair):
    key, recipient = keypair
    src = tmp_path / "plain"
    digest = write_random(src, 3 << 20)
    out = zcopy("put", str(src), f"{server.url}/enc/{tmp_path.name}.age", "--encrypt-to", recipient,
                "--token", TOKEN)
    assert out.returncode == 0, out.stderr
    stored = os.path.join(server.root, "enc", f"{tmp_path.name}.age")
    assert open(stored, "rb").read(22) == b"age-encryption.org/v1\n"   # the server holds ciphertext
    plain = subprocess.run(["age", "-d", "-i", key, "-o", str(tmp_path / "back"), stored], capture_output=True)
    assert plain.returncode == 0, plain.stderr
    assert sha256(tmp_path / "back") == digest


@needs_tool("age")
@needs_tool("curl")
def test_age_cli_file_uploaded_with_curl_decrypts_with_get(tmp_path, server, keypair):
    key, recipient = keypair
    src = tmp_path / "plain"
    digest = write_random(src, 2 << 20)
    enc = tmp_path / "file.age"
    subprocess.run(["age", "-r", recipient, "-o", str(enc), str(src)], check=True)
    url = f"{server.url}/curl/{tmp_path.name}.bin.age"
    up = curl("-f", "-T", str(enc), "-H", f"Authorization: Bearer {TOKEN}", url)
    assert up.returncode == 0, up.stderr
    got = zcopy("get", url, "--decrypt", "--identity", key, "-o", str(tmp_path / "out"))
    assert got.returncode == 0, got.stderr
    assert sha256(tmp_path / "out") == digest


@needs_tool("ssh-keygen")
@needs_tool("age")
@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_ssh_keys_interoperate_with_age_cli_both_ways(tmp_path, server, kind):
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(tmp_path / "id")], check=True)
    identity, pub = str(tmp_path / "id"), (tmp_path / "id.pub").read_text().strip()
    src = tmp_path / "plain"
    src.write_bytes(os.urandom(200_000))
    # zcopy put --encrypt-to "ssh-... " -> age -d -i id
    url = f"{server.url}/ssh/{tmp_path.name}.age"
    assert zcopy("put", str(src), url, "--encrypt-to", pub, "--token", TOKEN).returncode == 0
    stored = os.path.join(server.root, "ssh", f"{tmp_path.name}.age")
    assert f"\n-> ssh-{kind} ".encode() in open(stored, "rb").read(200)
    plain = subprocess.run(["age", "-d", "-i", identity, stored], capture_output=True)
    assert plain.returncode == 0 and plain.stdout == src.read_bytes(), plain.stderr
    # age -R id.pub + curl -T -> zcopy get --decrypt --identity id
    enc = tmp_path / "by-age.age"
    subprocess.run(["age", "-R", str(tmp_path / "id.pub"), "-o", str(enc), str(src)], check=True)
    url = f"{server.url}/ssh/{tmp_path.name}-by-age.age"
    assert curl("-f", "-T", str(enc), "-H", f"Authorization: Bearer {TOKEN}", url).returncode == 0
    got = zcopy("get", url, "--decrypt", "--identity", identity, "-o", str(tmp_path / "out"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out").read_bytes() == src.read_bytes()


def test_recipients_file_and_several_recipients(tmp_path, server):
    ids = [pyrage.x25519.Identity.generate() for _ in range(3)]
    (tmp_path / "team.txt").write_text(f"# team\n{ids[0].to_public()}\n\n{ids[1].to_public()}\n")
    src = tmp_path / "plain"
    src.write_bytes(b"for the team")
    url = f"{server.url}/team/{tmp_path.name}.age"
    out = zcopy("put", str(src), url, "-R", str(tmp_path / "team.txt"), "-r", str(ids[2].to_public()),
                "--token", TOKEN)
    assert out.returncode == 0, out.stderr
    stored = open(os.path.join(server.root, "team", f"{tmp_path.name}.age"), "rb").read()
    for identity in ids:
        assert pyrage.decrypt(stored, [identity]) == b"for the team"


def on_terminal(command: list[str], passphrase: str, prompts: list[str]) -> str:
    """Run ``command`` in a real terminal (tmux), typing ``passphrase`` when
    each prompt (a regex) shows; returns the screen once it exited."""
    term = Term(["env", "-u", "ZCOPY_PASSPHRASE", *command], {})
    try:
        for prompt in prompts:
            term.wait(prompt)
            term.keys("-l", passphrase)
            term.keys("Enter")
        return term.wait(r"EXITED \d+", timeout=60)
    finally:
        term.close()


@needs_tool("tmux")
@needs_tool("age")
@needs_tool("curl")
def test_passphrase_files_interoperate_with_age_cli_both_ways(tmp_path, server):
    secret = PASS_ENV["ZCOPY_PASSPHRASE"]
    src = tmp_path / "plain"
    digest = write_random(src, 1 << 20)
    # zcopy put --passphrase asks on the terminal (twice); age -d opens what it stored.
    url = f"{server.url}/pass/{tmp_path.name}.age"
    screen = on_terminal([sys.executable, "-m", "zcopy", "put", "-q", str(src), url, "--passphrase",
                          "--token", TOKEN], secret, ["passphrase:", r"\(again\):"])
    assert "EXITED 0" in screen, screen
    stored = os.path.join(server.root, "pass", f"{tmp_path.name}.age")
    assert b"\n-> scrypt " in open(stored, "rb").read(100)
    screen = on_terminal(["age", "-d", "-o", str(tmp_path / "by-age"), stored], secret, ["Enter passphrase:"])
    assert "EXITED 0" in screen and sha256(tmp_path / "by-age") == digest, screen
    # age -p (asks twice) + curl -T; zcopy get --decrypt --passphrase opens it.
    enc = tmp_path / "made-by-age.age"
    screen = on_terminal(["age", "-p", "-o", str(enc), str(src)], secret, ["Enter passphrase", "Confirm passphrase"])
    assert "EXITED 0" in screen, screen
    url = f"{server.url}/pass/{tmp_path.name}-by-age.age"
    assert curl("-f", "-T", str(enc), "-H", f"Authorization: Bearer {TOKEN}", url).returncode == 0
    got = zcopy("get", url, "--decrypt", "--passphrase", "-o", str(tmp_path / "back"), env=PASS_ENV)
    assert got.returncode == 0 and sha256(tmp_path / "back") == digest, got.stderr


@pytest.mark.parametrize("size", [0, 1, 65536, 65537], ids=["0B", "1B", "64KiB", "64KiB+1"])
def test_passphrase_header_swap_at_chunk_edges(size):
    """Our scrypt files open with rage, theirs with us; a low work factor
    keeps it fast (the format carries it, rage accepts it)."""
    data = os.urandom(size)
    ours = io.BytesIO()
    agepass.encrypt_io(io.BytesIO(data), ours, "pw", log_n=10)
    assert pyrage.passphrase.decrypt(ours.getvalue(), "pw") == data
    back = io.BytesIO()
    agepass.decrypt_io(io.BytesIO(ours.getvalue()), back, "pw")
    assert back.getvalue() == data
    with pytest.raises(ClientError, match="wrong passphrase"):
        agepass.decrypt_io(io.BytesIO(ours.getvalue()), io.BytesIO(), "not it")


def test_wrong_key_or_passphrase_fails_and_leaves_no_file(tmp_path, server, keypair):
    key, recipient = keypair
    src = tmp_path / "plain"
    src.write_bytes(b"secret")
    url = f"{server.url}/wrong/{tmp_path.name}.age"
    assert zcopy("put", str(src), url, "-r", recipient, "--token", TOKEN).returncode == 0
    other = tmp_path / "other.txt"
    other.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    bad = zcopy("get", url, "--decrypt", "-i", str(other), "-o", str(tmp_path / "out"))
    assert bad.returncode == 1 and bad.stderr.splitlines()[-1].startswith("zcopy get: decryption failed")
    not_pass = zcopy("get", url, "--decrypt", "--passphrase", "-o", str(tmp_path / "out"), env=PASS_ENV)
    assert not_pass.returncode == 1 and "not passphrase-encrypted" in not_pass.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.part").exists()


def test_tampered_ciphertext_is_refused(tmp_path, keypair):
    key, recipient = keypair
    sealed = bytearray(pyrage.encrypt(b"x" * 100_000, [pyrage.x25519.Recipient.from_str(recipient)]))
    sealed[-100] ^= 1
    from zcopy.client.crypto import decrypt_stream, load_identities
    from zcopy.client.errors import ClientError

    with pytest.raises(ClientError, match="decryption failed"):
        decrypt_stream(io.BytesIO(bytes(sealed)), io.BytesIO(), identities=load_identities([key]))


def test_bad_recipient_is_one_line(tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"x")
    out = zcopy("put", str(src), "http://127.0.0.1:9/x", "-r", "age1notakey")
    assert out.returncode == 1 and out.stderr.startswith("zcopy put: bad recipient")
    out = zcopy("put", str(src), "http://127.0.0.1:9/x", "-r", "pgp:abc")
    assert out.returncode == 1 and "unsupported recipient" in out.stderr


@pytest.mark.parametrize("args,message", [
    (["get", "http://127.0.0.1:9/x.age", "--identity", "k"], "--identity and --passphrase need --decrypt"),
    (["get", "http://127.0.0.1:9/x.age", "--decrypt"], "--decrypt needs either --identity"),
    (["put", "FILE", "http://127.0.0.1:9/x", "--passphrase", "--encrypt-to", "age1x"], "cannot be combined"),
    (["put", "FILE", "http://127.0.0.1:9/x", "--token", "a", "--token-file", "f"], "not allowed with"),
])
def test_flags_that_do_not_go_together_are_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "f").write_bytes(b"x")
    out = zcopy(*[str(tmp_path / "f") if a == "FILE" else a for a in args], env=PASS_ENV)
    assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1, out.stderr


_RSS_PROBE = r"""
import sys
from zcopy.cli import main
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
rc = main(sys.argv[1:])
print(rc, hwm())
"""


def _peak(*args: str) -> int:
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE, *args], capture_output=True, text=True,
                         timeout=120, env={**os.environ, **PASS_ENV})
    rc, peak = out.stdout.split()
    assert rc == "0", out.stderr
    return int(peak)


@pytest.mark.slow
def test_memory_stays_flat_encrypting_and_decrypting_64mib(tmp_path, server, keypair):
    """Peak RSS of put/get with encryption grows by far less than the file."""
    key, recipient = keypair
    big, small = tmp_path / "big", tmp_path / "small"
    digest = write_random(big, 64 << 20)
    small.write_bytes(b"x")
    base = f"{server.url}/rss/{tmp_path.name}"
    put_small = _peak("put", "-q", str(small), f"{base}/s.age", "-r", recipient, "--token", TOKEN)
    put_big = _peak("put", "-q", str(big), f"{base}/b.age", "-r", recipient, "--token", TOKEN)
    get_small = _peak("get", "-q", f"{base}/s.age", "--decrypt", "-i", key, "-o", str(tmp_path / "s.out"))
    get_big = _peak("get", "-q", f"{base}/b.age", "--decrypt", "-i", key, "-o", str(tmp_path / "b.out"))
    assert sha256(tmp_path / "b.out") == digest
    print(f"peak RSS put -r: 1 B {put_small >> 20} MiB, 64 MiB {put_big >> 20} MiB; "
          f"get --decrypt: 1 B {get_small >> 20} MiB, 64 MiB {get_big >> 20} MiB")
    assert put_big - put_small < 16 << 20, (put_small, put_big)
    assert get_big - get_small < 16 << 20, (get_small, get_big)


def test_passphrase_header_mac_is_checked():
    """A flipped bit in the header MAC is refused before any plaintext is written."""
    ours = io.BytesIO()
    agepass.encrypt_io(io.BytesIO(b"x" * 1000), ours, "pw", log_n=10)
    sealed = bytearray(ours.getvalue())
    mac_at = sealed.index(b"\n--- ") + 6
    sealed[mac_at] = ord("A") if sealed[mac_at] != ord("A") else ord("B")
    out = io.BytesIO()
    with pytest.raises(ClientError, match="bad MAC"):
        agepass.decrypt_io(io.BytesIO(bytes(sealed)), out, "pw")
    assert out.getvalue() == b""


def test_secret_scalar_read_back_from_pyrage_identity():
    """The one-time identity's scalar, read from pyrage's key string, is the
    key pyrage itself derives the recipient from (here bytes 0..31)."""
    identity = pyrage.x25519.Identity.from_str(
        "AGE-SECRET-KEY-1QQQSYQCYQ5RQWZQFPG9SCRGWPUGPZYSNZS23V9CCRYDPK8QARC0SWRYDWG")
    assert str(identity.to_public()) == "age13aqvttdk3ujkyjh9kg2w5an6dmy5mq5a84a4uxk3hfhnugfc9p0sy5p2wh"
    secret = agepass._secret_key(identity)
    assert secret.private_bytes_raw() == bytes(range(32))
    assert secret.public_key().public_bytes_raw().hex() == (
        "8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f")
