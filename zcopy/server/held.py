"""Small files held in memory, so that a 200 leaves in one send of head + body.

For a small body, ``send(head, MSG_MORE)`` + ``sendfile`` costs more than one
copying ``send`` of head and body from a buffer (``small_reply.crossover``
measures where the two meet on this machine; the profile calls it
``small_reply_max``). A body at or below that size is read once into memory
and kept with its file's cache entry (``FileEntry.data``), then every reply of
that second is one ``bytes`` (head + body) and one ``send``.

Only watched files are held: the file watch (``zcopy.server.watch``) drops
the entry, and with it the bytes, when the file changes; a file checked by a
stat per request keeps the sendfile path. The whole store is capped in bytes
per worker; past the cap a file is simply not held (first come, first held:
the cache's own eviction frees room).

Reading never blocks the loop: the body is read with ``RWF_NOWAIT`` and a
file not wholly in the page cache is not held now (its reply goes by
sendfile, which the prefetch pool keeps from blocking, and a later second's
reply tries again). Memory filesystems refuse ``RWF_NOWAIT``; their pages are
in memory, so a plain read is taken there.
"""

from __future__ import annotations

import errno
import os

from zcopy.fsinfo import IN_MEMORY, fs_type

#: Without a probe (no ``--auto``): a size below every crossover the probe has
#: measured here (8-16 KiB with the receiver on another CPU, docs/probe.md), so holding never loses.
DEFAULT_MAX = 8 << 10
#: Bytes held per worker at most.
DEFAULT_CAP = 32 << 20


class HeldBodies:
    """The bytes of small watched files, capped in total."""

    __slots__ = ("max_size", "cap", "used", "_in_memory")

    def __init__(self, max_size: int = DEFAULT_MAX, cap: int = DEFAULT_CAP) -> None:
        self.max_size = max_size
        self.cap = cap
        self.used = 0
        self._in_memory: dict[int, bool] = {}     # st_dev -> on a memory filesystem

    def body(self, entry) -> bytes | None:
        """``entry``'s whole body, read now if it may be held and is resident;
        None: send it from the file."""
        data = entry.data
        if data is not None:
            return data
        size = entry.size
        trust = entry.trust         # (the cache's record: only a watched file's bytes may be held)
        if trust is None or not trust.watched or size > self.max_size or self.used + size > self.cap or entry.fd < 0:
            return None
        buf = bytearray(size)
        try:
            if self._memory(entry):
                n = os.preadv(entry.fd, [buf], 0)
            else:
                n = os.preadv(entry.fd, [buf], 0, os.RWF_NOWAIT)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EOPNOTSUPP, errno.EIO):
                raise
            return None         # not resident (or not readable so): sendfile, try again next time
        if n != size:           # shorter now than its entry says: the watch drops it soon
            return None
        entry.data = data = bytes(buf)
        self.used += size
        return data

    def forget(self, entry) -> None:
        """The entry left the cache (or is no longer watched): its bytes go."""
        if entry.data is not None:
            self.used -= len(entry.data)
            entry.data = None

    def _memory(self, entry) -> bool:
        dev = entry.key[0]
        known = self._in_memory.get(dev)
        if known is None:
            try:
                known = fs_type(entry.fd)[0] in IN_MEMORY
            except OSError:
                known = False
            self._in_memory[dev] = known
        return known
