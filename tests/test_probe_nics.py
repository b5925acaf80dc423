"""NIC probe: features and the zero-copy verdict, on lo and on a veth pair
inside a network namespace this test creates (and always deletes)."""

import os
import subprocess
import uuid

import pytest

from probes import Context, Status
from probes import nics
from conftest import needs_root, needs_tool


def test_loopback_is_listed_with_features():
    lo = {n["name"]: n for n in nics.interfaces()}["lo"]
    assert lo["driver"] == "loopback"
    assert lo["mtu"] > 0
    assert set(lo["features"]) >= {"tx-scatter-gather", "tx-generic-segmentation", "rx-gro"}
    assert lo["zero_copy_tx"] == nics.verdict(lo["features"])[0]


@pytest.mark.parametrize("features, zero_copy, word", [
    ({"tx-scatter-gather": True, "tx-checksum-ip-generic": True}, True, "uncopied"),
    ({"tx-scatter-gather": True, "tx-checksum-ipv4": True, "tx-tcp-segmentation": True}, True, "with TSO"),
    ({"tx-scatter-gather": False, "tx-checksum-ip-generic": True}, False, "tx-scatter-gather is off"),
    ({"tx-scatter-gather": True}, False, "checksum"),
])
def test_verdict_table(features, zero_copy, word):
    ok, reason = nics.verdict(features)
    assert ok is zero_copy and word in reason


def test_egress_to_loopback_is_lo():
    found = {f.id: f for f in nics.probe(Context(to="127.0.0.1"))}
    assert found["nic.egress"].value["name"] == "lo"
    assert found["nic.egress"].value["to"] == "127.0.0.1"


def test_egress_to_nonsense_is_an_error_finding():
    found = {f.id: f for f in nics.probe(Context(to="not-an-address.invalid."))}
    assert found["nic.egress"].status is Status.ERROR


@pytest.fixture
def netns():
    """A uniquely named network namespace, deleted whatever happens."""
    name = f"zcopy-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@needs_root
@needs_tool("ip")
def test_veth_scatter_gather_off_flips_the_verdict(netns):
    from pyroute2 import Ethtool, IPRoute
    from pyroute2.netns import popns, pushns

    pushns(netns)
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname="zc-a", kind="veth", peer="zc-b")
            a = ipr.link_lookup(ifname="zc-a")[0]
            ipr.link("set", index=a, state="up")
            ipr.addr("add", index=a, address="10.77.0.1", prefixlen=24)
        before = {n["name"]: n for n in nics.interfaces()}
        assert before["zc-a"]["driver"] == "veth"
        assert before["zc-a"]["features"]["tx-scatter-gather"] is True
        assert before["zc-a"]["zero_copy_tx"] is True

        with Ethtool() as eth:
            feats = eth.get_features("zc-a")
            feats.features["tx-scatter-gather"].enable = False
            eth.set_features("zc-a", feats)

        found = {f.id: f for f in nics.probe(Context(to="10.77.0.2"))}
    finally:
        popns()
    a = found["nic.zc-a"]
    assert a.value["features"]["tx-scatter-gather"] is False
    assert a.value["zero_copy_tx"] is False and a.status is Status.DEGRADED
    assert "tx-scatter-gather is off" in a.value["reason"]
    assert "sg off" in a.detail and "zero-copy tx no" in a.detail
    assert found["nic.zc-b"].value["zero_copy_tx"] is True  # the other end keeps its offloads
    egress = found["nic.egress"]
    assert egress.value["name"] == "zc-a" and egress.value["zero_copy_tx"] is False
    assert os.path.exists(f"/run/netns/{netns}")  # still ours to delete in the fixture
