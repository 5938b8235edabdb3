"""The throughput benchmark's bookkeeping: which steps each timed window holds and which
ceiling probes it is compared with (no timing is asserted)."""

import sys
import types

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import pretrain_throughput as bench  # noqa: E402


def test_windows_start_after_warmup_and_probe_between_windows():
    probes = iter(range(100, 200))
    clock = bench.Clock(warmup=3, window=4, probe=lambda: next(probes))
    for step in range(1, 3 + 2 * 4 + 2):  # warm-up, two whole windows, two steps of a third
        clock.on_step_end(None, types.SimpleNamespace(global_step=step), None)
    # A probe when the warm-up ends and after each whole window: window i sits between probes i and i + 1.
    assert clock.ceilings == [100, 101, 102]
    assert len(clock.ends) == 2 and len(clock.starts) == 3  # the unfinished third window is not counted
    assert all(s < e for s, e in zip(clock.starts, clock.ends))
    assert all(e <= s for e, s in zip(clock.ends, clock.starts[1:]))  # probe time is outside every window
