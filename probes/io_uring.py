"""io_uring: may this process set up a ring at all?

Calls io_uring_setup(2) (syscall 425 on every architecture since 5.1) with
a zeroed io_uring_params and 4 entries, then closes the ring fd. Also reads
/proc/sys/kernel/io_uring_disabled (6.6+): 0 allowed, 1 only for
io_uring_group members or CAP_SYS_ADMIN, 2 disabled for everyone.
"""

from __future__ import annotations

import ctypes
import errno
import struct
from typing import Iterator

from probes.finding import Finding, Status
from probes.kernel import is_root, read_int
from probes.resources import Resources, uninterrupted

NR_IO_URING_SETUP = 425
PARAMS_SIZE = 120          # sizeof(struct io_uring_params)
FEATURES_OFFSET = 20       # u32 features, after sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle


def probe(ctx) -> Iterator[Finding]:
    yield setup()


def setup() -> Finding:
    fid = "io_uring.setup"
    disabled = read_int("/proc/sys/kernel/io_uring_disabled")
    value = {"setup": False, "io_uring_disabled": disabled, "features": None}
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(PARAMS_SIZE)
    with Resources() as res:
        with uninterrupted():  # the ring fd must be owned before a time bound can fire
            fd = libc.syscall(NR_IO_URING_SETUP, ctypes.c_uint(4), params)
            err = ctypes.get_errno()
            if fd >= 0:
                res.fd(fd)
    if fd < 0:
        name = errno.errorcode.get(err, str(err))
        if disabled == 1 and err == errno.EPERM and not is_root():
            return Finding(fid, Status.SKIPPED, value, f"io_uring_setup failed: {name}: io_uring_disabled=1 "
                           "allows only root (CAP_SYS_ADMIN) and members of the io_uring_group group: needs root")
        why = " (io_uring_disabled=2: off for everyone)" if disabled == 2 else ""
        return Finding(fid, Status.UNSUPPORTED, value, f"io_uring_setup failed: {name}{why}")
    value["setup"] = True
    value["features"] = struct.unpack_from("=I", params.raw, FEATURES_OFFSET)[0]
    return Finding(fid, Status.OK, value, f"io_uring_setup(4) returned a ring (features {value['features']:#x}); "
                   f"io_uring_disabled={disabled if disabled is not None else 'absent (pre-6.6 kernel)'}")
