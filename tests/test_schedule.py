"""The pretraining schedule: blocks drawn by the domain mixture, then the final phase, in order."""

import datasets
import pytest

from hfllm.errors import DataError
from hfllm.schedule import build_schedule, largest_remainder


def blocks(name: str, n: int) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"input_ids": [[i] for i in range(n)], "name": [f"{name}{i}" for i in range(n)]})


def test_largest_remainder_by_hand():
    assert largest_remainder(10, {"a": 0.5, "b": 0.3, "c": 0.2}) == {"a": 5, "b": 3, "c": 2}
    # 7 × (1/3 each) = 2.33 each: the one extra block goes to the first largest remainder
    assert largest_remainder(7, {"a": 1, "b": 1, "c": 1}) == {"a": 3, "b": 2, "c": 2}
    assert largest_remainder(3, {"a": 0.9, "b": 0.1}) == {"a": 3, "b": 0}


def test_mixture_then_final_phase():
    by_domain = {"code": blocks("c", 3), "prose": blocks("p", 2), "licence": blocks("l", 0)}
    probabilities = {"code": 0.75, "prose": 0.25, "licence": 0.5}  # licence has no full block: left out
    schedule = build_schedule(by_domain, blocks("f", 2), total=10, seed=1, probabilities=probabilities,
                              final_phase_fraction=0.2)
    names = schedule.blocks["name"]
    assert len(names) == 10 and schedule.main_blocks_by_domain == {"code": 6, "prose": 2}
    assert sorted(names[:8]) == sorted(["c0", "c1", "c2"] * 2 + ["p0", "p1"])  # two passes over code
    assert sorted(names[8:]) == ["f0", "f1"]  # the final phase comes last
    again = build_schedule(by_domain, blocks("f", 2), total=10, seed=1, probabilities=probabilities,
                           final_phase_fraction=0.2)
    assert again.blocks["name"] == names
    other = build_schedule(by_domain, blocks("f", 2), total=10, seed=2, probabilities=probabilities,
                           final_phase_fraction=0.2)
    assert other.blocks["name"] != names


def test_final_phase_without_blocks_is_an_error():
    with pytest.raises(DataError) as err:
        build_schedule({"all": blocks("a", 4)}, blocks("f", 0), total=10, seed=0, probabilities=None,
                       final_phase_fraction=0.5)
    assert err.value.field == "final_phase_fraction"
