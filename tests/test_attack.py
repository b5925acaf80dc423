"""Adversarial regressions (the review of resumable uploads, share links and WebDAV): each test is an
attack that once worked against a real `zcopy serve`, and now must not."""

from __future__ import annotations

import base64
import json
import os

import pytest
from resumableutil import exchange, wait_for
from serverutil import Server

TUS = "Tus-Resumable: 1.0.0\r\n"


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f.txt").write_bytes(b"hello")
    return root, tmp_path / "state"


def test_access_log_never_holds_a_share_token_or_an_upload_id(tree, tmp_path):
    """A share link's token and an upload's id are bearer capabilities: the access log (and the
    Referer it copies) showed them whole, so whoever reads the log could download or take over."""
    root, state = tree
    log = tmp_path / "access.log"
    with Server(root, "--allow-write", "--state-dir", str(state), "--workers", "1", "--access-log", str(log)) as s:
        (status, _, body), = exchange(s.port, "POST /.zcopy/share?path=/d/f.txt HTTP/1.1\r\nHost: t\r\n"
                                              "Content-Length: 0\r\n")
        assert status == 201
        link = json.loads(body)["url"]
        token = link.partition("share=")[2]
        (status, _, body), = exchange(s.port, f"GET {link} HTTP/1.1\r\nHost: t\r\nReferer: http://t{link}\r\n")
        assert status == 200 and body == b"hello"
        name = base64.b64encode(b"up.bin").decode()
        (status, headers, _), = exchange(s.port, f"POST /d/ HTTP/1.1\r\nHost: t\r\n{TUS}Upload-Length: 3\r\n"
                                                 f"Upload-Metadata: filename {name}\r\nContent-Length: 0\r\n")
        assert status == 201
        upload = headers["location"].partition("upload=")[2]
        (status, _, _), = exchange(s.port, f"HEAD {headers['location']} HTTP/1.1\r\nHost: t\r\n{TUS}"
                                           "Connection: close\r\n")
        assert status == 200
        text = wait_for(lambda: (t := log.read_text()).count("\n") >= 4 and t, what="four log lines")
    assert len(token) > 40 and len(upload) == 32
    assert token not in text and upload not in text
    assert '"GET /d/f.txt?share=- HTTP/1.1" 200' in text and "?upload=- HTTP/1.1" in text
