"""Host memory kept for reuse on the CPU (hfllm.memory)."""

import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hfllm.memory import glibc, keep_freed_memory

pytestmark = pytest.mark.skipif(glibc() is None, reason="glibc's malloc only")


def faults_per_cycle() -> float:
    """Page faults for allocating, writing and freeing 64 MiB (16,384 pages), averaged over 4 times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        torch.ones(64 * 2**20, dtype=torch.uint8)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4


def test_without_it_each_large_allocation_is_faulted_in_anew():
    # What the setting is for, seen in a fresh process with glibc's defaults.
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            "from test_memory import faults_per_cycle; faults_per_cycle(); print(faults_per_cycle())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) > 10_000


def test_freed_memory_is_reused_not_faulted_back_in():
    assert keep_freed_memory()
    faults_per_cycle(), faults_per_cycle()  # the first cycles grow the heap
    assert faults_per_cycle() < 1_000
    assert torch.ones(64 * 2**20, dtype=torch.uint8).sum() == 64 * 2**20  # and the memory works
