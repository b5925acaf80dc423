"""The IETF resumable-upload draft (pinned -12, interop version 9) over raw sockets against a real
`zcopy serve`: 104 Upload Resumption Supported on HTTP/1.1 and never on 1.0, a creation cut mid-body then
HEAD and PATCH ?1 with the rest, the older interop versions (8 of -09 to -11, Apple's 6 on a PUT, 3
with Upload-Incomplete), problem details (RFC 9457) for a mismatched offset, a completed upload and an
inconsistent length; what -12 changed (GET as offset retrieval, Upload-Complete: ?0 on a 409, a
completed upload remembered: HEAD says ?1, an append or a cancel is 400 completed-upload, until it
expires); plus the sans-I/O header functions by table."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time

import pytest
from resumableutil import exchange, send
from serverutil import wait_for
from serverutil import Server

from zcopy.http import HttpError
from zcopy.http import resumable as rs
from zcopy.server.state import MIGRATIONS

MiB = 1 << 20


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    with Server(root, "--allow-write", "--state-dir", str(tmp_path / "state")) as s:
        yield s, root


def test_post_incomplete_then_head_then_patch_complete(server):
    s, root = server
    data = os.urandom(3 * MiB)
    part = MiB
    got = exchange(s.port, f"POST /f.bin HTTP/1.1\r\nHost: t\r\nUpload-Draft-Interop-Version: 9\r\n"
                           f"Upload-Complete: ?0\r\nUpload-Length: {len(data)}\r\n"
                           f"Content-Length: {part}\r\n", data[:part])
    (interim, ih, _), (status, h, _) = got
    assert interim == 104 and ih["location"] == h["location"] and ih["upload-draft-interop-version"] == "9"
    assert "max-age=" in ih["upload-limit"]
    assert status == 201 and h["upload-offset"] == str(part) and h["upload-complete"] == "?0"
    loc = h["location"]
    assert loc.startswith("/f.bin?upload=")
    (status, h, _), = exchange(s.port, f"HEAD {loc} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n")
    assert (status, h["upload-offset"], h["upload-complete"], h["upload-length"]) == (204, str(part), "?0", str(len(data)))
    assert h["cache-control"] == "no-store"
    assert not (root / "f.bin").exists()
    (status, h, _), = exchange(s.port, f"PATCH {loc} HTTP/1.1\r\nHost: t\r\nUpload-Complete: ?1\r\n"
                                       f"Upload-Offset: {part}\r\nContent-Type: application/partial-upload\r\n"
                                       f"Content-Length: {len(data) - part}\r\n", data[part:])
    assert status == 201 and h["upload-complete"] == "?1"
    assert (root / "f.bin").read_bytes() == data


def test_a_cut_creation_resumes_from_the_durable_offset(server):
    s, root = server
    data = os.urandom(4 * MiB)
    sock = send(s.port, f"POST /cut.bin HTTP/1.1\r\nHost: t\r\nUpload-Draft-Interop-Version: 9\r\n"
                        f"Upload-Complete: ?1\r\nContent-Length: {len(data)}\r\n",
                data[:2 * MiB])
    sock.settimeout(10)
    interim = b""
    while b"\r\n\r\n" not in interim:
        interim += sock.recv(4096)
    assert interim.startswith(b"HTTP/1.1 104 ")
    loc = next(line.split(b": ", 1)[1] for line in interim.split(b"\r\n") if line.lower().startswith(b"location:")).decode()
    sock.close()                      # cut mid-body

    def offset():
        (status, h, _), = exchange(s.port, f"HEAD {loc} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n")
        return status == 204 and int(h["upload-offset"]) > 0 and int(h["upload-offset"])
    off = wait_for(offset, what="a durable offset after the cut")
    assert off < len(data) and not (root / "cut.bin").exists()
    # a wrong offset: 409 problem details naming the right one (a small body: the refusal closes the
    # connection unread, and megabytes still being sent would meet a reset instead of the answer)
    (status, h, body), = exchange(s.port, f"PATCH {loc} HTTP/1.1\r\nHost: t\r\nUpload-Complete: ?0\r\n"
                                          f"Upload-Offset: 0\r\nContent-Type: application/partial-upload\r\n"
                                          f"Content-Length: 1\r\n", data[:1])
    assert status == 409 and h["content-type"] == "application/problem+json" and h["upload-offset"] == str(off)
    assert h["upload-complete"] == "?0"           # -12: a 409 MUST say so
    problem = json.loads(body)
    assert problem["type"].endswith("#mismatching-upload-offset")
    assert problem["expected-offset"] == off and problem["provided-offset"] == 0
    (status, h, _), = exchange(s.port, f"PATCH {loc} HTTP/1.1\r\nHost: t\r\nUpload-Complete: ?1\r\n"
                                       f"Upload-Offset: {off}\r\nContent-Type: application/partial-upload\r\n"
                                       f"Content-Length: {len(data) - off}\r\n", data[off:])
    assert status == 201
    assert (root / "cut.bin").read_bytes() == data
    assert os.listdir(root / ".zcopy" / "uploads") == []         # the partial is the file now
    # Remembered as completed: HEAD (and GET, -12) say so, for a client that lost the final response
    for method in ("HEAD", "GET"):
        (status, h, body), = exchange(s.port, f"{method} {loc} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n")
        assert (status, h["upload-complete"], h["upload-offset"], h["upload-length"]) == (204, "?1", str(len(data)),
                                                                                         str(len(data))), method
        assert body == b"" and h["cache-control"] == "no-store"
    # an append to it is refused as completed (not 404), and nothing changes
    (status, h, body), = exchange(s.port, f"PATCH {loc} HTTP/1.1\r\nHost: t\r\nUpload-Complete: ?1\r\n"
                                          f"Upload-Offset: {len(data)}\r\nContent-Type: application/partial-upload\r\n"
                                          f"Content-Length: 3\r\n", b"xyz")
    assert status == 400 and json.loads(body)["type"] == rs.PROBLEM_BASE + "completed-upload"
    assert h["upload-complete"] == "?0" and h["upload-offset"] == str(len(data))
    # a cancel too: the file stays (never "deleted" for an upload that is a file)
    (status, h, body), = exchange(s.port, f"DELETE {loc} HTTP/1.1\r\nHost: t\r\n")
    assert status == 400 and json.loads(body)["type"].endswith("#completed-upload")
    assert (root / "cut.bin").read_bytes() == data
    (status, h, _), = exchange(s.port, f"HEAD {loc} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n")
    assert status == 204 and h["upload-complete"] == "?1"


def test_no_104_to_http_1_0_nor_without_an_interop_version(server):
    s, root = server
    got = exchange(s.port, "POST /old.txt HTTP/1.0\r\nUpload-Draft-Interop-Version: 9\r\nUpload-Complete: ?0\r\n"
                           "Content-Length: 3\r\n", b"abc")
    assert [g[0] for g in got] == [201]
    assert got[0][1]["upload-offset"] == "3"
    # HTTP/1.1 without Upload-Draft-Interop-Version: taken as version 9 (-12's), but no 104 (the draft: MUST NOT)
    got = exchange(s.port, "POST /plain.txt HTTP/1.1\r\nHost: t\r\nUpload-Complete: ?1\r\nContent-Length: 3\r\n",
                   b"abc")
    assert [g[0] for g in got] == [201] and got[0][1]["upload-complete"] == "?1"
    assert got[0][1]["upload-draft-interop-version"] == "9"
    assert (root / "plain.txt").read_bytes() == b"abc"


def test_options_offer_partial_upload_and_limits(server):
    s, root = server
    (status, h, _), = exchange(s.port, "OPTIONS /any/file HTTP/1.1\r\nHost: t\r\n")
    assert status == 200 and "application/partial-upload" in h["accept-patch"]
    assert "max-age=86400" in h["upload-limit"] and h["tus-version"] == "1.0.0"


def test_apple_urlsession_put_interop_6_and_interop_3(server):
    s, root = server
    got = exchange(s.port, "PUT /apple.txt HTTP/1.1\r\nHost: t\r\nUpload-Draft-Interop-Version: 6\r\n"
                           "Upload-Complete: ?1\r\nContent-Length: 5\r\n", b"apple")
    assert [g[0] for g in got] == [104, 201]
    assert got[0][1]["upload-draft-interop-version"] == "6"
    assert (root / "apple.txt").read_bytes() == b"apple"
    # version 3: Upload-Incomplete, answered in its own words
    got = exchange(s.port, "POST /three.txt HTTP/1.1\r\nHost: t\r\nUpload-Draft-Interop-Version: 3\r\n"
                           "Upload-Incomplete: ?1\r\nContent-Length: 2\r\n", b"ab")
    status, h, _ = got[-1]
    assert status == 201 and h["upload-incomplete"] == "?1" and "upload-complete" not in h
    (status, h, _), = exchange(s.port, f"PATCH {h['location']} HTTP/1.1\r\nHost: t\r\n"
                                       "Upload-Draft-Interop-Version: 3\r\nUpload-Incomplete: ?0\r\n"
                                       "Upload-Offset: 2\r\nContent-Length: 1\r\n", b"c")
    assert status == 201 and h["upload-incomplete"] == "?0"
    assert (root / "three.txt").read_bytes() == b"abc"
    # an unknown version is refused
    (status, h, body), = exchange(s.port, "POST /x HTTP/1.1\r\nHost: t\r\nUpload-Draft-Interop-Version: 99\r\n"
                                          "Upload-Complete: ?0\r\nContent-Length: 0\r\n")
    assert status == 400 and h["content-type"] == "application/problem+json"


def test_inconsistent_length_completed_upload_and_cancel(server):
    s, root = server
    got = exchange(s.port, "POST /l.txt HTTP/1.1\r\nHost: t\r\nUpload-Complete: ?0\r\nUpload-Length: 4\r\n"
                           "Content-Length: 2\r\n", b"ab")
    loc = got[-1][1]["location"]
    # completing at the wrong length
    (status, h, body), = exchange(s.port, f"PATCH {loc} HTTP/1.1\r\nHost: t\r\nUpload-Complete: ?1\r\n"
                                          "Upload-Offset: 2\r\nContent-Type: application/partial-upload\r\n"
                                          "Content-Length: 1\r\n", b"c")
    assert status == 400 and json.loads(body)["type"].endswith("#inconsistent-upload-length")
    # the wrong media type for version 9
    (status, h, body), = exchange(s.port, f"PATCH {loc} HTTP/1.1\r\nHost: t\r\nUpload-Complete: ?0\r\n"
                                          "Upload-Offset: 2\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n", b"c")
    assert status == 415
    (status, h, _), = exchange(s.port, f"DELETE {loc} HTTP/1.1\r\nHost: t\r\n")
    assert status == 204
    (status, h, _), = exchange(s.port, f"HEAD {loc} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n")
    assert status == 404
    assert os.listdir(root / ".zcopy" / "uploads") == []


@pytest.mark.parametrize("headers,version,complete", [
    ({}, 9, None),
    ({"upload-complete": "?1"}, 9, True),
    ({"upload-complete": "?0", "upload-draft-interop-version": "9"}, 9, False),
    ({"upload-complete": "?1", "upload-draft-interop-version": "8"}, 8, True),
    ({"upload-complete": "?0", "upload-draft-interop-version": "7"}, 7, False),
    ({"upload-complete": "?0", "upload-draft-interop-version": "6"}, 6, False),
    ({"upload-incomplete": "?1", "upload-draft-interop-version": "3"}, 3, False),
    ({"upload-incomplete": "?0", "upload-draft-interop-version": "3"}, 3, True),
])
def test_interop_versions_and_completeness(headers, version, complete):
    assert rs.interop_version(headers) == version
    assert rs.upload_complete(headers, version) is complete


@pytest.mark.parametrize("bad", [{"upload-complete": "1"}, {"upload-complete": "?2"},
                                 {"upload-draft-interop-version": "2"}, {"upload-draft-interop-version": "x"},
                                 {"upload-draft-interop-version": "10"}])     # -13's: its text was not read
def test_bad_fields_are_400(bad):
    with pytest.raises(HttpError) as info:
        rs.upload_complete(bad, rs.interop_version(bad))
    assert info.value.status == 400


def test_tus_metadata_checksum_and_problem():
    meta = rs.parse_metadata("filename aGVsbG8udHh0,is_confidential,type dGV4dA==")
    assert meta == {"filename": b"hello.txt", "is_confidential": None, "type": b"text"}
    assert rs.filename_of(meta) == "hello.txt"
    for bad in ("filename ???", "filename a b c", "a YQ==,a YQ=="):
        with pytest.raises(HttpError):
            rs.parse_metadata(bad)
    for name in ("Li4=", "YS9i", ""):             # "..", "a/b", empty
        with pytest.raises(HttpError):
            rs.filename_of(rs.parse_metadata(f"filename {name}" if name else "other YQ=="))
    algo, digest = rs.parse_checksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=")
    assert algo == "sha1" and len(digest) == 20
    with pytest.raises(HttpError):
        rs.parse_checksum("md5 Kq5sNclPz7QV2+lfQIuc6R7oRu0=")
    body = json.loads(rs.problem(409, "mismatching-upload-offset", "t", **{"expected-offset": 5}))
    assert body == {"type": rs.PROBLEM_BASE + "mismatching-upload-offset", "title": "t", "status": 409,
                    "expected-offset": 5}


def test_interop_8_clients_of_drafts_09_to_11_work_unchanged(server):
    """Version 8 (-09 to -11) differs from 9 only in what -12 added; its 104 and answers name 8."""
    s, root = server
    got = exchange(s.port, "PUT /eight.txt HTTP/1.1\r\nHost: t\r\nUpload-Draft-Interop-Version: 8\r\n"
                           "Upload-Complete: ?0\r\nContent-Length: 2\r\n", b"ab")
    assert [g[0] for g in got] == [104, 201]
    assert got[0][1]["upload-draft-interop-version"] == "8" == got[1][1]["upload-draft-interop-version"]
    loc = got[1][1]["location"]
    (status, h, _), = exchange(s.port, f"PATCH {loc} HTTP/1.1\r\nHost: t\r\nUpload-Draft-Interop-Version: 8\r\n"
                                       "Upload-Complete: ?1\r\nUpload-Offset: 2\r\n"
                                       "Content-Type: application/partial-upload\r\nContent-Length: 1\r\n", b"c")
    assert status == 201 and h["upload-complete"] == "?1" and h["upload-draft-interop-version"] == "8"
    assert (root / "eight.txt").read_bytes() == b"abc"
    # version 3 hears completeness in its own words on a completed upload too
    (status, h, _), = exchange(s.port, f"HEAD {loc} HTTP/1.1\r\nHost: t\r\nUpload-Draft-Interop-Version: 3\r\n"
                                       "Connection: close\r\n")
    assert status == 204 and h["upload-incomplete"] == "?0" and "upload-complete" not in h


def test_get_retrieves_the_offset_like_head(server):
    """-12: GET on an upload resource is an offset retrieval (no content); tus keeps 405 for GET."""
    s, _ = server
    got = exchange(s.port, "POST /g.bin HTTP/1.1\r\nHost: t\r\nUpload-Complete: ?0\r\nUpload-Length: 10\r\n"
                           "Content-Length: 4\r\n", b"0123")
    loc = got[-1][1]["location"]
    (status, h, body), = exchange(s.port, f"GET {loc} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n")
    assert (status, h["upload-offset"], h["upload-complete"], h["upload-length"], body) == (204, "4", "?0", "10", b"")
    assert "max-age=" in h["upload-limit"]
    (status, h, _), = exchange(s.port, f"GET {loc} HTTP/1.1\r\nHost: t\r\nTus-Resumable: 1.0.0\r\n"
                                       "Connection: close\r\n")
    assert status == 405 and "GET" not in h["allow"]
    (status, h, _), = exchange(s.port, f"POST {loc} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n")
    assert status == 405 and h["allow"].startswith("GET, HEAD")


def test_a_completed_uploads_record_expires_and_is_not_a_pending_upload(tmp_path):
    """The record of a completed upload (a row with ``completed`` set, no file) is swept with the
    expiry like an unfinished upload, and never counts against --max-pending-uploads."""
    root = tmp_path / "root"
    root.mkdir()
    state = tmp_path / "state"
    with Server(root, "--allow-write", "--state-dir", str(state), "--upload-expiry", "2",
                "--max-pending-uploads", "1") as s:
        got = exchange(s.port, "PUT /done.txt HTTP/1.1\r\nHost: t\r\nUpload-Complete: ?0\r\n"
                               "Content-Length: 0\r\n")
        loc = got[-1][1]["location"]
        (status, _, _), = exchange(s.port, f"PATCH {loc} HTTP/1.1\r\nHost: t\r\nUpload-Complete: ?1\r\n"
                                           "Upload-Offset: 0\r\nContent-Type: application/partial-upload\r\n"
                                           "Content-Length: 4\r\n", b"done")
        assert status == 201 and (root / "done.txt").read_bytes() == b"done"

        def rows():
            db = sqlite3.connect(f"file:{state}/state.db?mode=ro", uri=True, timeout=10)
            try:
                return db.execute("SELECT target, offset, length, completed FROM uploads").fetchall()
            finally:
                db.close()
        assert rows() == [("/done.txt", 4, 4, 1)]
        # the cap of one unfinished upload: the completed one leaves room
        got = exchange(s.port, "PUT /next.txt HTTP/1.1\r\nHost: t\r\nUpload-Complete: ?0\r\n"
                               "Content-Length: 0\r\n")
        assert got[-1][0] == 201
        wait_for(lambda: rows() == [], what="the sweep of both records")
        (status, _, _), = exchange(s.port, f"HEAD {loc} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n")
        assert status == 404
        assert (root / "done.txt").read_bytes() == b"done"     # the record went, never the file


def test_a_state_database_of_migration_5_is_upgraded_with_its_uploads(tmp_path):
    """Migration 6 adds ``completed`` to a live uploads table: an upload made before the upgrade
    resumes after it and is then remembered as completed."""
    root = tmp_path / "root"
    (root / ".zcopy" / "uploads").mkdir(parents=True)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    uid = "ab" * 16
    key = hashlib.sha256(uid.encode()).hexdigest()
    (root / ".zcopy" / "uploads" / key).write_bytes(b"01234")
    db = sqlite3.connect(state / "state.db")
    for statement in MIGRATIONS[:5]:
        db.executescript(statement)
    db.execute("PRAGMA user_version = 5")
    now = time.time()
    db.execute("INSERT INTO uploads VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
               (key, "/old.bin", "ietf", 5, 8, "", "anonymous:-", now, now + 3600, 1, 1, None))
    db.commit()
    db.close()
    os.chmod(state / "state.db", 0o600)
    with Server(root, "--allow-write", "--state-dir", str(state)) as s:
        loc = f"/old.bin?upload={uid}"
        (status, h, _), = exchange(s.port, f"HEAD {loc} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n")
        assert (status, h["upload-offset"], h["upload-complete"]) == (204, "5", "?0"), (status, h)
        (status, h, _), = exchange(s.port, f"PATCH {loc} HTTP/1.1\r\nHost: t\r\nUpload-Complete: ?1\r\n"
                                           "Upload-Offset: 5\r\nContent-Type: application/partial-upload\r\n"
                                           "Content-Length: 3\r\n", b"567")
        assert status == 201 and (root / "old.bin").read_bytes() == b"01234567"
        (status, h, _), = exchange(s.port, f"HEAD {loc} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n")
        assert (status, h["upload-complete"], h["upload-offset"]) == (204, "?1", "8")
    db = sqlite3.connect(state / "state.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 6
    db.close()
