"""The one data type every probe returns."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Status(str, enum.Enum):
    """How the kernel answered.

    ``ok``: the behaviour works as the man page describes.
    ``unsupported``: the kernel refused (EINVAL, ENOSYS, EOPNOTSUPP...).
    ``degraded``: it works, but worse than it could (a fallback, a cap, a shrink).
    ``error``: the probe itself could not tell (unexpected errno, timeout).
    ``skipped``: not attempted (needs root, no such device, not asked for).
    """

    OK = "ok"
    UNSUPPORTED = "unsupported"
    DEGRADED = "degraded"
    ERROR = "error"
    SKIPPED = "skipped"

    def __str__(self) -> str:  # so f-strings print "ok", not "Status.OK"
        return self.value


@dataclass
class Finding:
    """One observed fact: a stable ``id``, a ``status``, a JSON-able ``value``
    and a human ``detail`` sentence saying what was tried and what happened."""

    id: str
    status: Status
    value: Any = None
    detail: str = ""
    seconds: float = field(default=0.0, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status.value, "value": self.value, "detail": self.detail}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Finding":
        return cls(data["id"], Status(data["status"]), data.get("value"), data.get("detail", ""))
