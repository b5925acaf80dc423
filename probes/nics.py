"""NICs: can sendfile data reach the wire without the kernel copying it?

The TCP stack only hands page references (not copies) to a device whose
route capabilities include scatter-gather (NETIF_F_SG); the kernel also
drops SG from any device without transmit checksum offload (a checksum over
pages the device reads later cannot be computed in software without touching
them). So the verdict is: tx-scatter-gather on, and at least one of
tx-checksum-ip-generic / -ipv4 / -ipv6 on. TSO/GSO and GRO are reported
because they decide how many syscalls' worth of data one packet carries.

Everything comes from pyroute2: IPRoute for links and routes, Ethtool for
features (never the ethtool or ip programs). The driver name is the link
kind for virtual devices (veth, bridge...) and the bound driver from sysfs
for physical ones.
"""

from __future__ import annotations

import os
import socket
from typing import Iterator

from probes.finding import Finding, Status

FEATURES = ["tx-scatter-gather", "tx-checksum-ip-generic", "tx-checksum-ipv4", "tx-checksum-ipv6",
            "tx-tcp-segmentation", "tx-generic-segmentation", "rx-gro"]
CHECKSUM = ["tx-checksum-ip-generic", "tx-checksum-ipv4", "tx-checksum-ipv6"]
#: Short names for the detail sentence (ethtool -k's groups): short name -> features, on if any is.
SHORT = {"sg": ["tx-scatter-gather"], "csum": CHECKSUM, "tso": ["tx-tcp-segmentation"],
         "gso": ["tx-generic-segmentation"], "gro": ["rx-gro"]}
IFF_UP, IFF_LOOPBACK = 0x1, 0x8


def probe(ctx) -> Iterator[Finding]:
    nics = interfaces()
    for nic in nics:
        yield nic_finding(f"nic.{nic['name']}", nic)
    if ctx.to:
        yield egress_finding(ctx.to, {n["name"]: n for n in nics})


def nic_finding(fid: str, nic: dict) -> Finding:
    if nic.get("error"):
        return Finding(fid, Status.ERROR, nic, f"{nic['name']}: features unreadable: {nic['error']}")
    status = Status.OK if nic["zero_copy_tx"] else Status.DEGRADED
    feats = nic.get("features") or {}
    offloads = " ".join(f"{short} {'on' if any(feats.get(f) for f in names) else 'off'}"
                        for short, names in SHORT.items())
    return Finding(fid, status, nic, f"{nic['name']} ({nic['driver']}, mtu {nic['mtu']}, {nic['state']}; "
                   f"{offloads}): zero-copy tx {'yes' if nic['zero_copy_tx'] else 'no'}: {nic['reason']}")


def interfaces() -> list[dict]:
    """Every link in this network namespace, with features and verdict."""
    from pyroute2 import Ethtool, IPRoute

    with IPRoute() as ipr:
        links = ipr.get_links()
    nics = []
    with Ethtool() as eth:
        for link in links:
            nics.append(_describe(eth, link))
    return sorted(nics, key=lambda n: n["index"])


def _describe(eth, link) -> dict:
    name = link.get_attr("IFLA_IFNAME")
    flags = link["flags"]
    nic = {"name": name, "index": link["index"], "driver": _driver(link, name), "mtu": link.get_attr("IFLA_MTU"),
           "state": link.get_attr("IFLA_OPERSTATE") or ("UP" if flags & IFF_UP else "DOWN"),
           "address": link.get_attr("IFLA_ADDRESS"), "features": {}, "zero_copy_tx": False, "reason": ""}
    try:
        found = eth.get_features(name).features
    except Exception as exc:  # pyroute2 raises its own types for EOPNOTSUPP/ENODEV
        nic["error"] = f"{type(exc).__name__}: {exc}"
        nic["reason"] = "features could not be read, so zero-copy transmit cannot be confirmed"
        return nic
    nic["features"] = {f: bool(found[f].enable) for f in FEATURES if f in found}
    nic["zero_copy_tx"], nic["reason"] = verdict(nic["features"])
    return nic


def verdict(features: dict[str, bool]) -> tuple[bool, str]:
    """(zero_copy_tx, reason) from a feature map."""
    csum = [f for f in CHECKSUM if features.get(f)]
    if not features.get("tx-scatter-gather"):
        return False, ("tx-scatter-gather is off: the stack copies sendfile pages into linear buffers "
                       "before transmit")
    if not csum:
        return False, "no tx checksum offload: the kernel drops scatter-gather and copies to checksum in software"
    tso = "with TSO" if features.get("tx-tcp-segmentation") else "without TSO"
    return True, f"tx-scatter-gather and {csum[0]} are on ({tso}): sendfile pages go to the device uncopied"


def _driver(link, name: str) -> str:
    info = link.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info else None
    if kind:
        return kind
    if link["flags"] & IFF_LOOPBACK:
        return "loopback"
    try:
        return os.path.basename(os.readlink(f"/sys/class/net/{name}/device/driver"))
    except OSError:
        return "unknown"


def egress(address: str) -> str:
    """The interface the routing table picks to reach ``address``; raises
    OSError/ValueError when the address is invalid or unreachable."""
    from pyroute2 import IPRoute

    family, _, _, _, sockaddr = socket.getaddrinfo(address, None, proto=socket.IPPROTO_TCP)[0]
    with IPRoute() as ipr:
        routes = ipr.route("get", dst=sockaddr[0], family=family)
        index = routes[0].get_attr("RTA_OIF")
        return ipr.get_links(index)[0].get_attr("IFLA_IFNAME")


def egress_finding(address: str, nics: dict[str, dict]) -> Finding:
    fid = "nic.egress"
    try:
        name = egress(address)
    except Exception as exc:  # resolver errors, NetlinkError (unreachable) ...
        return Finding(fid, Status.ERROR, {"to": address, "name": None},
                       f"no route to {address}: {type(exc).__name__}: {exc}")
    nic = dict(nics.get(name) or {"name": name, "zero_copy_tx": False, "reason": "interface not listed"})
    nic["to"] = address
    finding = nic_finding(fid, nic)
    finding.detail = f"route to {address} leaves through " + finding.detail
    return finding
