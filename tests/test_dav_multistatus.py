"""Multi-Status pieces: well-formed XML (read back with the stdlib parser), the live properties of a real
file and folder, hrefs escaped."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from zcopy.dav import multistatus as ms
from zcopy.dav.xmlbody import DAV

D = "{DAV:}"


def test_file_and_folder_responses(tmp_path):
    f = tmp_path / "a b&c.txt"
    f.write_bytes(b"12345")
    body = ms.HEAD
    for path, p in (("/dir/a b&c.txt", f), ("/dir", tmp_path)):
        st = os.stat(p)
        found, missing = [], []
        for name in ms.LIVE + ("quota-used-bytes",):
            v = ms.live_value(name, st=st, url_path=path, etag='"z1-x"', content_type="text/plain",
                              quota=(100, 5))
            (found if v is not None else missing).append(v if v is not None else ms.empty_element(DAV, name))
        missing.append(ms.empty_element("http://example.com/ns", "dead"))
        body += ms.response(path, os.path.isdir(p), {200: found, 404: missing})
    body += ms.TAIL
    root = ET.fromstring(body)
    responses = root.findall(f"{D}response")
    assert [r.find(f"{D}href").text for r in responses] == ["/dir/a%20b&c.txt", "/dir/"]
    file_props = responses[0].find(f"{D}propstat/{D}prop")
    assert file_props.find(f"{D}getcontentlength").text == "5"
    assert file_props.find(f"{D}getetag").text == '"z1-x"'
    assert file_props.find(f"{D}displayname").text == "a b&c.txt"
    assert file_props.find(f"{D}getlastmodified").text.endswith(" GMT")
    assert file_props.find(f"{D}resourcetype/{D}collection") is None
    dir_stats = responses[1].findall(f"{D}propstat")
    assert dir_stats[0].find(f"{D}prop/{D}resourcetype/{D}collection") is not None
    assert dir_stats[1].find(f"{D}status").text == "HTTP/1.1 404 Not Found"
    assert dir_stats[1].find(f"{D}prop/{D}getcontentlength") is not None
    assert dir_stats[1].find("{http://example.com/ns}dead") is not None or \
        dir_stats[1].find(f"{D}prop/{{http://example.com/ns}}dead") is not None


def test_status_response():
    root = ET.fromstring(ms.HEAD + ms.status_response("/x/é", False, 423, "<D:lock-token-submitted/>") + ms.TAIL)
    r = root.find(f"{D}response")
    assert r.find(f"{D}href").text == "/x/%C3%A9"
    assert r.find(f"{D}status").text == "HTTP/1.1 423 Locked"
