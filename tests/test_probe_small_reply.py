"""The small-reply probe: one copying send against head + sendfile, measured on the real kernel."""

import pytest

from probes import Context, Status, small_reply


def test_measures_every_size_and_names_the_crossover(fd_guard):
    f = small_reply.measure(50)
    assert f.id == "small_reply.crossover" and f.status is Status.OK, f.detail
    v = f.value
    measured = [int(s) for s in v["sizes"]]
    assert measured == [s for s in small_reply.SIZES if s not in v["held_back"]] and measured
    assert all(t["copy_us"] > 0 and t["sendfile_us"] > 0 for t in v["sizes"].values())
    medians = {int(s): (t["copy_us"], t["sendfile_us"]) for s, t in v["sizes"].items()}
    assert v["small_reply_max"] == small_reply.crossover(medians)
    assert v["largest_measured"] == max(measured) and v["iterations"] == 50
    assert "copy/sendfile" in f.detail


def test_sizes_the_window_cannot_take_are_not_measured(fd_guard, monkeypatch):
    """Tiny socket buffers (the kernel's minimum): the larger replies leave only in part,
    so they, and every size above, are reported as not measured, never timed short."""
    monkeypatch.setattr(small_reply, "BUFFER", 1024)
    f = small_reply.measure(10)
    v = f.value
    if f.status is Status.ERROR:          # not even 256 bytes fit: said so
        assert "too small" in f.detail
        return
    assert v["held_back"] and v["held_back"] == list(small_reply.SIZES[len(v["sizes"]):])
    assert "not measured" in f.detail and v["small_reply_max"] <= v["largest_measured"]


@pytest.mark.parametrize("medians, expected", [
    ({256: (1, 2), 1024: (1, 2), 4096: (3, 2)}, 1024),      # the copy wins, then loses
    ({256: (2, 1), 1024: (1, 2)}, 0),                       # a later win after a loss does not count
    ({256: (1, 1)}, 0),                                     # a tie is no win: sendfile copies nothing
    ({256: (0.96, 1)}, 0),                                  # nor is a win inside the margin
    ({256: (1, 2), 65536: (1, 2)}, 65536),                  # won everywhere: the largest measured
])
def test_crossover_rule(medians, expected):
    assert small_reply.crossover(medians) == expected


def test_probe_entry_point_quick():
    findings = list(small_reply.probe(Context(quick=True)))
    assert [f.id for f in findings] == ["small_reply.crossover"]
    assert findings[0].value["iterations"] == small_reply.QUICK_ITERATIONS
