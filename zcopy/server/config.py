"""Everything a worker needs to know, decided once at start."""

from __future__ import annotations

from dataclasses import dataclass, field

from zcopy.profile import CHUNK, SENDFILE_STEP


@dataclass
class ServeConfig:
    root: str                       # realpath of the served folder
    bind: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    engine: str = "sendfile"        # download engine name (zcopy.engines.create)
    upload_engine: str = "recv_pwrite"
    pipe_size: int = 1 << 20
    budget: int = SENDFILE_STEP     # bytes one connection may move per loop turn (profile.step_for)
    lone_budget: int = 0            # > budget: a sendfile step while alone on the worker (profile.lone_step_for)
    copy_budget: int = CHUNK        # the same for an upload engine apart from the send one, and TLS in user space
    small_reply_max: int = 8 << 10  # bodies up to this leave with their head in one send (zcopy.server.held)
    notsent_lowat: int = 0          # TCP_NOTSENT_LOWAT on the listeners, inherited by connections (0: kernel default)
    digest_max: int = 8 << 30       # larger files keep this node's ETag, never hashed; 0: no digests (digests.py)
    access_log: str | None = None   # path, "-" for stdout, None for off
    follow_symlinks: bool = False
    symlink_targets: tuple[str, ...] = ()   # with follow_symlinks: folders outside root links may reach
    show_hidden: bool = False
    mac_files: bool = False         # macOS Finder's ._* and .DS_Store: read and written, never listed
    max_connections: int = 10000
    header_timeout: float = 10.0    # whole head must arrive within this (slowloris)
    idle_timeout: float = 60.0      # keep-alive connection with no request
    send_timeout: float = 60.0      # no byte accepted by the client for this long
    drain_timeout: float = 30.0     # SIGTERM: finish in-flight transfers within this
    drain_delay: float = 0.0        # SIGTERM: /readyz 503, keep accepting this long before draining
    worker_timeout: float = 30.0    # replace a worker whose loop made no turn for this long
    allow_write: bool = False
    token: str | None = None        # needed for writes (and opens reads) when set
    read_token: str | None = None   # needed for reads when set
    users: str | None = None        # --users FILE: named accounts and their rules (docs/accounts.md)
    accounts: dict | None = None    # what FILE held at start (or the last SIGHUP); None: no users file
    trusted_proxy: str | None = None   # a peer whose X-Forwarded-For names the client
    max_upload: int | None = None
    fsync: bool = True              # fsync an upload before renaming it into place
    make_parents: bool = False      # PUT/MOVE/COPY create missing folders instead of 409
    upload_expiry: float = 24 * 3600   # resumable uploads without activity for this long are removed
    max_pending_uploads: int = 100      # unfinished resumable uploads per owner (0: no limit)
    prefetch: bool = True           # read cold file windows off the loop (zcopy.server.prefetch)
    state_dir: str | None = None    # prepared state folder (zcopy.server.state); None: no state (unit tests)
    tls: object | None = None       # zcopy.server.tlsaccept.TlsSettings: serve HTTPS (--tls-cert/--tls-key)
    max_head: int = 16384
    max_target: int = 8192
    reasons: dict[str, str] = field(default_factory=dict)   # why each choice was made
