"""Live statistics shared by every zcopy server kind (serve, relay).

Writers: ``Publisher(kind, snapshot_fn, slot=i)``, ``publish()`` once a
second from the loop's tick, ``close()`` on the way out; supervisors call
``remove_group(kind)`` when they exit. Readers: ``discover()`` the live
servers, ``read_all(target)`` for one aggregated snapshot. Layout and
rationale: docs/top.md.
"""

from zcopy.stats.location import Target, runtime_dir
from zcopy.stats.publish import Publisher, remove_group
from zcopy.stats.read import aggregate, discover, read_all, read_snapshots, target_from_path

__all__ = ["Publisher", "Target", "aggregate", "discover", "read_all", "read_snapshots", "remove_group",
           "runtime_dir", "target_from_path"]
