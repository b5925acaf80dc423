"""A tar stream as a body plan: 512-byte headers built here, file bodies left to the engines.

``FOLDER/?download=tar`` answers with a POSIX (pax) tar of the folder. Nothing is built in memory or
on disk first: for each member this module makes its header block(s) (bytes), and the plan names the
file's bytes as an ``(fd, 0, size)`` range that leaves by sendfile/splice like any download, then the
zero padding to the next 512-byte block. The total length is known before the first byte (headers,
sizes and padding are all fixed by the stat), so the reply has a Content-Length and a cut is
detectable by any client.

Names: a member's name is its path relative to the archived folder, as bytes. Names that fit ustar
(ASCII, at most 100 bytes, or split at a ``/`` into a 155-byte prefix and a 100-byte name) use the ustar
fields alone; any other name (longer, or not ASCII) gets a pax extended header with ``path=`` in UTF-8,
and with ``hdrcharset=BINARY`` when the name's bytes are not valid UTF-8 (POSIX pax, what GNU tar and
bsdtar read). Sizes of 8 GiB and more go in a pax ``size=`` record. Only regular files and folders are
archived (links, FIFOs, sockets and devices are left out, as listings leave them out).

A file that changes while it is archived: its header already promised a size. A file that grew is
sent up to the promised size (the extra bytes are not in the archive). A file that shrank cannot fill
its member: the engine reports it (FileShrank) and the connection is closed before the promised
length, so the client sees a short download, never a well-formed archive with wrong bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

BLOCK = 512
END = b"\0" * (2 * BLOCK)
_USTAR_SIZE_MAX = 8 ** 11 - 1        # 11 octal digits
_ZEROS = b"\0" * BLOCK


@dataclass(frozen=True, slots=True)
class Member:
    name: bytes            # relative path; folders without a trailing slash
    is_dir: bool
    size: int              # 0 for folders
    mtime: int             # whole seconds
    mode: int              # permission bits


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) fitting ustar's 155 + 100 bytes, or None."""
    if len(name) <= 100:
        return b"", name
    for i in range(len(name) - 1, 0, -1):
        if name[i:i + 1] == b"/" and i <= 155 and len(name) - i - 1 <= 100 and i < len(name) - 1:
            return name[:i], name[i + 1:]
    return None


def _block(name: bytes, prefix: bytes, size: int, mtime: int, mode: int, typeflag: bytes) -> bytes:
    header = bytearray(BLOCK)
    header[0:len(name)] = name
    header[100:108] = _octal(mode & 0o7777, 8)
    header[108:116] = _octal(0, 8)                       # uid
    header[116:124] = _octal(0, 8)                       # gid
    header[124:136] = _octal(size, 12)
    header[136:148] = _octal(max(0, min(mtime, _USTAR_SIZE_MAX)), 12)
    header[148:156] = b" " * 8                           # checksum: spaces while summing
    header[156:157] = typeflag
    header[257:263] = b"ustar\0"
    header[263:265] = b"00"
    header[345:345 + len(prefix)] = prefix
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:         # the length counts its own digits
        n = len(str(n).encode()) + len(body)
    return str(n).encode() + body


def header(member: Member) -> bytes:
    """The header block(s) for one member: a pax extended header first when ustar cannot hold it."""
    name = member.name + (b"/" if member.is_dir else b"")
    records = b""
    try:
        name.decode("ascii")
        fits = _split_ustar(name)
    except UnicodeDecodeError:
        fits = None
    if fits is None:
        try:
            name.decode("utf-8")
        except UnicodeDecodeError:
            records += _pax_record(b"hdrcharset", b"BINARY")
        records += _pax_record(b"path", name)
    size = 0 if member.is_dir else member.size
    if size > _USTAR_SIZE_MAX:
        records += _pax_record(b"size", str(size).encode())
    out = b""
    if records:
        pax_name = b"PaxHeader/" + (name[-80:].decode("ascii", "replace").encode("ascii", "replace")
                                    .replace(b"?", b"_"))
        out += _block(pax_name[:100], b"", len(records), member.mtime, 0o644, b"x")
        out += records + b"\0" * (-len(records) % BLOCK)
        # The ustar fields then carry a stand-in that any reader ignores in favour of the pax record.
        fits = (b"", name[:100].decode("ascii", "replace").encode("ascii", "replace").replace(b"?", b"_")) \
            if fits is None else fits
    prefix, short = fits
    out += _block(short, prefix, min(size, _USTAR_SIZE_MAX), member.mtime, member.mode,
                  b"5" if member.is_dir else b"0")
    return out


def padding(size: int) -> bytes:
    return _ZEROS[: -size % BLOCK]


def plan(members) -> tuple[list, int]:
    """Body segments and total length for ``members``: an iterable of (Member, fd or None). Segments
    are bytes or (fd, 0, size) ranges, as a Reply's body holds them. Consecutive bytes are joined, so
    a file's padding and the next header leave in one send."""
    body: list = []
    length = 0
    pending = b""
    for member, fd in members:
        pending += header(member)
        if not member.is_dir and member.size:
            body.append(pending)
            length += len(pending)
            body.append((fd, 0, member.size))
            length += member.size
            pending = padding(member.size)
    pending += END
    body.append(pending)
    length += len(pending)
    return body, length
