"""The order pretraining sees its blocks in: sampled by the data stage's domain mixture, and ending
with a phase on its top-quality subset while the learning rate decays to its minimum.

Why a fixed list of blocks and not `datasets.interleave_datasets`: the run trains exactly
`max_steps` batches, so the schedule is cut to that many blocks up front — each domain gets its
probability's share (largest remainders), repeating a small domain over several shuffled passes
where it must, and the final phase takes the last share of the steps. The list is shuffled within
each phase (seeded) and read in order (`train_sampling_strategy: sequential`), so the phases stay
in place and a resumed run reads the same blocks at the same steps.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from hfllm.errors import ConfigError, DataError

MIXTURE_FILE = "mixture.json"  # written by the data stage beside its splits


@dataclass
class Schedule:
    blocks: datasets.Dataset
    main_blocks_by_domain: dict[str, int]
    final_phase_blocks: int
    final_phase_fraction: float


def largest_remainder(total: int, probabilities: dict[str, float]) -> dict[str, int]:
    """Whole counts summing to `total` in proportion to `probabilities` (Hamilton's method)."""
    norm = sum(probabilities.values())
    exact = {k: total * p / norm for k, p in probabilities.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def repeat_to(blocks: datasets.Dataset, n: int, seed: int) -> datasets.Dataset:
    """`n` blocks: whole shuffled passes over `blocks` (a new order each pass), the last one cut."""
    if n == 0:
        return blocks.select([])
    passes = [blocks.shuffle(seed=seed + i) for i in range(math.ceil(n / len(blocks)))]
    return datasets.concatenate_datasets(passes).select(range(n))


def read_mixture(data_dir: str | Path) -> dict[str, Any]:
    try:
        return json.loads((Path(data_dir) / MIXTURE_FILE).read_text())
    except (OSError, ValueError):
        raise ConfigError(f"no {MIXTURE_FILE} in {data_dir}: the domain mixture comes from hfllm's data stage",
                          field="data_mixture") from None


def build_schedule(blocks_by_domain: dict[str, datasets.Dataset], final_phase: datasets.Dataset | None,
                   total: int, seed: int, probabilities: dict[str, float] | None,
                   final_phase_fraction: float) -> Schedule:
    """The `total` blocks of a run, in training order: the main phase drawn from each domain's
    packed blocks by `probabilities` (without them, one domain), shuffled; then the final phase's
    share from `final_phase`, shuffled."""
    n_final = round(total * final_phase_fraction)
    n_main = total - n_final
    filled = {d: b for d, b in blocks_by_domain.items() if len(b)}
    weights = {d: (probabilities or {}).get(d, 0.0) if probabilities else 1.0 for d in filled}
    weights = {d: w for d, w in weights.items() if w > 0}
    if not weights:
        raise DataError("no domain with both a full block and a sampling weight", field="data_mixture")
    counts = largest_remainder(n_main, weights)
    parts = [repeat_to(filled[d], n, seed + 1000 * i) for i, (d, n) in enumerate(sorted(counts.items()))]
    phases = [datasets.concatenate_datasets(parts).shuffle(seed=seed)]
    if n_final:
        if final_phase is None or len(final_phase) == 0:
            raise DataError("the final phase has no full block: lower final_phase_fraction or max_length",
                            field="final_phase_fraction")
        phases.append(repeat_to(final_phase, n_final, seed + 7).shuffle(seed=seed + 7))
    return Schedule(datasets.concatenate_datasets(phases), counts, n_final, final_phase_fraction)
