"""The throughput benchmark's bookkeeping: which steps each timed window holds and which
ceiling probes it is compared with, and the matmul FLOPs its profile counts (no timing is asserted)."""

import sys
import types

import torch
import torch.nn.functional as F
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


def test_profile_counts_every_matmul_of_forward_and_backward():
    """A real profile of a forward and backward whose matmul FLOPs are known by hand: each matmul
    appears three times (forward, gradient of its input, gradient of its weight), 2 FLOPs per
    multiply-add; with a bias the forward is `addmm`, batched ones are `bmm`."""
    torch.manual_seed(0)
    x = torch.randn(32, 16, requires_grad=True)
    w1, w2, b2 = torch.randn(24, 16), torch.randn(8, 24), torch.randn(8)
    a, b = torch.randn(3, 5, 7), torch.randn(3, 7, 4)
    for t in (w1, w2, b2, a, b):
        t.requires_grad_(True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True) as prof:
        loss = F.linear(F.linear(x, w1), w2, b2).square().sum() + torch.bmm(a, b).square().sum()
        loss.backward()
    events = prof.key_averages()
    assert {e.key for e in events} >= {"aten::mm", "aten::addmm", "aten::bmm"}
    seconds, flops = bench.matmul_totals(events, device=False)
    assert flops == 3 * 2 * (32 * 16 * 24 + 32 * 24 * 8) + 3 * 2 * (3 * 5 * 7 * 4)
    assert seconds > 0
