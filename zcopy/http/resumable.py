"""Resumable uploads, sans I/O: the header grammar of tus 1.0.0 and of the
IETF draft (draft-ietf-httpbis-resumable-upload), and RFC 9457 problem details.

Nothing here touches a socket, a file or the database: the server
(``zcopy.server.uploads``) asks these functions what a request says and how
to phrase an answer. See docs/uploads.md for the protocol choices.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from zcopy.http.errors import HttpError

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration"
TUS_CHECKSUMS = "sha1,sha256"
TUS_CONTENT_TYPE = "application/offset+octet-stream"
#: 460 Checksum Mismatch (tus checksum extension)
CHECKSUM_MISMATCH = 460

#: The draft we implement, and the interop version it names (Appendix "Draft interop version"). -12
#: (2026-07-06) is 9: httpwg/http-extensions#3476 "Bump interop version to 9" was merged on 2026-07-05
#: for it; -09 to -11 say 8 (the tags in httpwg/http-extensions). Newer drafts exist (-13: 10; -15 is
#: dated 2026-11-02), but their text could not be read here: see docs/uploads.md before moving the pin.
IETF_DRAFT = "draft-ietf-httpbis-resumable-upload-12"
IETF_INTEROP = 9
#: Interop versions accepted: 3 (draft -01, Upload-Incomplete), 4-6 (drafts -02 to -05, tusd's table;
#: Apple's URLSession sends 6), 7 (-06 to -08), 8 (-09 to -11) and 9 (-12). They differ, for what we
#: implement, only in names: version 3 says ``Upload-Incomplete: ?1`` where the later ones say
#: ``Upload-Complete: ?0``; 3 to 5 send append bodies as ``application/offset+octet-stream`` (or any
#: type), 6 and later as ``application/partial-upload``. What -12 changed from -11 (GET as offset
#: retrieval, ``Upload-Complete: ?0`` on a 409, a completed upload's HEAD saying ``?1``) is answered to
#: every version alike: an older client ignores what it does not know.
IETF_INTEROPS = (3, 4, 5, 6, 7, 8, 9)
IETF_CONTENT_TYPE = "application/partial-upload"
#: 104 Upload Resumption Supported
UPLOAD_RESUMPTION = 104
PROBLEM_BASE = "https://iana.org/assignments/http-problem-types#"

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


# -- which protocol -------------------------------------------------------------

def is_tus(headers) -> bool:
    return "tus-resumable" in headers


def is_ietf(headers) -> bool:
    """A request of the draft: it says whether its upload is complete (either name), or its interop
    version, or sends an append body by the draft's media type."""
    return ("upload-complete" in headers or "upload-incomplete" in headers
            or "upload-draft-interop-version" in headers)


def check_tus_version(headers) -> None:
    value = headers.get("tus-resumable", "").strip()
    if value != TUS_VERSION:
        raise HttpError(412, f"Tus-Resumable {value!r} is not supported (this server speaks {TUS_VERSION})",
                        headers=[("Tus-Version", TUS_VERSION)])


# -- structured fields (RFC 8941): the two kinds the draft uses --------------------

def sf_boolean(value: str | None, name: str) -> bool | None:
    if value is None:
        return None
    value = value.strip()
    if value == "?1":
        return True
    if value == "?0":
        return False
    raise HttpError(400, f"{name} must be ?0 or ?1")


def sf_integer(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 15:      # RFC 8941 integers: at most 15 digits; ours are >= 0
        raise HttpError(400, f"{name} must be a non-negative integer")
    return int(value)


def tus_integer(value: str | None, name: str) -> int | None:
    """tus integers: plain decimal digits (no sign), like Content-Length."""
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 19:
        raise HttpError(400, f"{name} must be a non-negative integer")
    return int(value)


# -- the IETF draft -----------------------------------------------------------------

def interop_version(headers) -> int:
    """The request's interop version; a request without one is the pinned draft's."""
    value = headers.get("upload-draft-interop-version")
    if value is None:
        return IETF_INTEROP
    value = value.strip()
    if not value.isdigit() or int(value) not in IETF_INTEROPS:
        raise HttpError(400, f"Upload-Draft-Interop-Version {value!r} is not supported "
                             f"(accepted: {', '.join(map(str, IETF_INTEROPS))})")
    return int(value)


def upload_complete(headers, version: int) -> bool | None:
    """Whether this request's content ends the upload; None when it says nothing (both names are
    read: a client that sends the other name than its version's means the same thing)."""
    complete = sf_boolean(headers.get("upload-complete"), "Upload-Complete")
    if complete is not None:
        return complete
    incomplete = sf_boolean(headers.get("upload-incomplete"), "Upload-Incomplete")
    if incomplete is not None:
        return not incomplete
    return None


def complete_header(complete: bool, version: int) -> tuple[str, str]:
    """The field a response says completeness with, named as the request's version names it."""
    if version == 3:
        return ("Upload-Incomplete", "?0" if complete else "?1")
    return ("Upload-Complete", "?1" if complete else "?0")


def upload_limit(max_size: int | None, max_age: int | None) -> str:
    """The Upload-Limit dictionary (draft -05 and later)."""
    parts = []
    if max_size is not None:
        parts.append(f"max-size={max_size}")
    if max_age is not None:
        parts.append(f"max-age={int(max_age)}")
    return ", ".join(parts)


def problem(status: int, kind: str | None, title: str, **members) -> bytes:
    """An RFC 9457 problem details object (application/problem+json). ``kind``: a type from the
    IANA HTTP Problem Types registry (``mismatching-upload-offset``, ``completed-upload``,
    ``inconsistent-upload-length``), or None for ``about:blank``."""
    body = {"type": PROBLEM_BASE + kind if kind else "about:blank", "title": title, "status": status}
    body.update(members)
    return json.dumps(body, separators=(",", ":")).encode()


class UploadError(HttpError):
    """A refusal of the upload protocols: its problem type and members travel with it (the IETF
    flow answers them as problem+json; tus as text)."""

    def __init__(self, status: int, reason: str, kind: str | None = None, headers=(), close: bool = False,
                 **members) -> None:
        super().__init__(status, reason, headers, close)
        self.kind = kind
        self.members = members


def mismatch(expected: int, provided: int, headers=()) -> UploadError:
    return UploadError(409, f"Upload-Offset {provided} does not match the upload's offset {expected}",
                       "mismatching-upload-offset", headers=[("Upload-Offset", str(expected)), *headers],
                       **{"expected-offset": expected, "provided-offset": provided})


# -- tus ------------------------------------------------------------------------------

def parse_metadata(value: str | None) -> dict[str, bytes | None]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs (the value may be absent)."""
    out: dict[str, bytes | None] = {}
    if not value or not value.strip():
        return out
    for pair in value.split(","):
        parts = pair.strip().split(" ")
        if not parts[0] or len(parts) > 2 or not _TOKEN.match(parts[0]):
            raise HttpError(400, "malformed Upload-Metadata")
        key = parts[0]
        if key in out:
            raise HttpError(400, f"Upload-Metadata names {key!r} twice")
        if len(parts) == 1:
            out[key] = None
            continue
        try:
            out[key] = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            raise HttpError(400, f"Upload-Metadata: {key!r} is not base64") from None
    return out


def filename_of(metadata: dict[str, bytes | None]) -> str:
    """The file name a tus creation asks for (``filename``, or ``name`` as some clients say): one
    path segment, UTF-8, no NUL or slash, not a dot name."""
    raw = metadata.get("filename") or metadata.get("name")
    if not raw:
        raise HttpError(400, "Upload-Metadata must name the file (filename)")
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "the filename in Upload-Metadata is not UTF-8") from None
    if "/" in name or "\x00" in name or name in (".", "..") or len(name.encode()) > 255:
        raise HttpError(400, "the filename in Upload-Metadata must be one plain name")
    return name


CHECKSUMS = {"sha1": 20, "sha256": 32}


def parse_checksum(value: str | None) -> tuple[str, bytes] | None:
    """``Upload-Checksum: <algorithm> <base64 digest>``."""
    if value is None:
        return None
    parts = value.strip().split(" ")
    if len(parts) != 2:
        raise HttpError(400, "malformed Upload-Checksum")
    algo = parts[0].lower()
    if algo not in CHECKSUMS:
        raise HttpError(400, f"checksum algorithm {parts[0]!r} is not supported (only {TUS_CHECKSUMS})",
                        headers=[("Tus-Checksum-Algorithm", TUS_CHECKSUMS)])
    try:
        digest = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise HttpError(400, "Upload-Checksum: the digest is not base64") from None
    if len(digest) != CHECKSUMS[algo]:
        raise HttpError(400, f"Upload-Checksum: a {algo} digest is {CHECKSUMS[algo]} bytes")
    return algo, digest


def http_date(t: float) -> str:
    from email.utils import formatdate

    return formatdate(t, usegmt=True)
