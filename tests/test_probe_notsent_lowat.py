"""The unsent-queue probe: large sendfile downloads over loopback with and without TCP_NOTSENT_LOWAT,
measured on the real kernel."""

import pytest

from probes import Context, Status, notsent_lowat


def test_measures_every_candidate_and_chooses_by_the_rule(fd_guard):
    f = notsent_lowat.measure(16 << 20, 2)
    assert f.id == "notsent_lowat.rates" and f.status is Status.OK, f.detail
    v = f.value
    assert set(v["rates"]) == {"0", *(str(c) for c in notsent_lowat.CANDIDATES)}
    assert all(rate > 0 for rate in v["rates"].values())
    assert v["notsent_lowat"] == notsent_lowat.choose({int(k): r for k, r in v["rates"].items()})
    assert v["transfer"] == 16 << 20 and v["rounds"] == 2 and v["receiver"] in ("other_cpu", "same_cpu")
    assert "median GB/s of 2 by TCP_NOTSENT_LOWAT: no limit" in f.detail


@pytest.mark.parametrize("rates, expected", [
    ({0: 3.0, 131072: 14.0, 262144: 15.0, 1048576: 3.1}, 262144),   # the largest within 10% of the best
    ({0: 3.0, 131072: 15.0, 262144: 12.0, 1048576: 3.1}, 131072),   # 262144 trails the best by 20%
    ({0: 3.0, 131072: 3.2, 262144: 3.3}, 0),                        # a win inside the margin is no win
    ({0: 15.0, 131072: 3.0}, 0),                                    # a limit that slows is not chosen
    ({131072: 9.0}, 0),                                             # no baseline: nothing to compare
    ({0: 3.0}, 0),
])
def test_choose_rule(rates, expected):
    assert notsent_lowat.choose(rates) == expected


def test_probe_entry_point_quick(fd_guard):
    findings = list(notsent_lowat.probe(Context(quick=True)))
    assert [f.id for f in findings] == ["notsent_lowat.rates"]
    assert findings[0].value["transfer"] == notsent_lowat.QUICK_TRANSFER < notsent_lowat.TRANSFER
    assert findings[0].value["rounds"] == notsent_lowat.QUICK_ROUNDS
