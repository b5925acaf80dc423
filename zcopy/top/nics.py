"""Per-NIC receive/transmit rates, from the kernel's link statistics.

Read through pyroute2 (IPRoute, RTM_GETLINK, IFLA_STATS64): the same
counters ``ip -s link`` prints, without shelling out. Shown beside the
server's own figures so a reader can tell what the wire sees.
"""

from __future__ import annotations

import time


class NicRates:
    def __init__(self) -> None:
        self.prev: dict[str, tuple[float, int, int]] = {}
        self.error: str | None = None
        self._ipr = None

    def read(self) -> list[dict]:
        """[{name, state, rx_rate, tx_rate, rx_bytes, tx_bytes}] for links that are up
        (loopback included, since local tests and proxies use it)."""
        try:
            if self._ipr is None:
                from pyroute2 import IPRoute

                self._ipr = IPRoute()
            links = self._ipr.get_links()
        except Exception as exc:   # pyroute2 raises its own NetlinkError and OSErrors
            self.error = str(exc)
            self.close()
            return []
        now = time.monotonic()
        out, seen = [], {}
        for link in links:
            name = link.get_attr("IFLA_IFNAME")
            state = link.get_attr("IFLA_OPERSTATE") or "?"
            stats = link.get_attr("IFLA_STATS64") or link.get_attr("IFLA_STATS")
            if stats is None or state == "DOWN":
                continue
            rx, tx = stats["rx_bytes"], stats["tx_bytes"]
            seen[name] = (now, rx, tx)
            prev = self.prev.get(name)
            rx_rate = tx_rate = 0.0
            if prev is not None and now > prev[0]:
                rx_rate = max(rx - prev[1], 0) / (now - prev[0])
                tx_rate = max(tx - prev[2], 0) / (now - prev[0])
            out.append({"name": name, "state": state, "rx_rate": rx_rate, "tx_rate": tx_rate,
                        "rx_bytes": rx, "tx_bytes": tx})
        self.prev = seen
        return out

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
