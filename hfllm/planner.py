"""Compute planning: tokens from the 20-tokens-per-parameter rule (Chinchilla, Hoffmann et al.
2022), training FLOPs ≈ 6·N·D, and for a GPU type, count, MFU and price: GPU-hours, days, dollars.

Every number is computed, none tabulated: the seed's FLOPs table had two rows off by 10×
(1B on 20B tokens is 1.2e20, not 1.2e21; 1T on 20T is 1.2e26), and `seed_table()` prints them right.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CHINCHILLA_TOKENS_PER_PARAM = 20.0

# Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, from the vendors' data sheets (SXM parts).
GPU_PEAK_TFLOPS = {
    "H100": 989.0,
    "H200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 125.0,
    "V100": 125.0,  # fp16
}

_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12, "P": 1e15}


def parse_count(text: str | float | int) -> float:
    """'70B' → 7e10, '1.4T' → 1.4e12, '124M', '3e9', 5e8 → floats. Rejects ≤ 0 and junk."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMBGTP]?)\s*", str(text).upper())
        if not m:
            raise ValueError(f"cannot read {text!r} as a count (examples: 124M, 70B, 1.4T, 3e9)")
        value = float(m.group(1)) * _SUFFIX[m.group(2)]
    if value <= 0:
        raise ValueError(f"a count must be positive, got {text!r}")
    return value


@dataclass(frozen=True)
class Plan:
    params: float
    tokens: float
    flops: float
    gpu: str
    num_gpus: int
    mfu: float
    price_per_gpu_hour: float
    gpu_hours: float
    days: float
    cost: float

    def lines(self) -> list[str]:
        return [
            f"parameters        {self.params:.3g}",
            f"tokens            {self.tokens:.3g}  ({self.tokens / self.params:.1f} per parameter)",
            f"training FLOPs    {self.flops:.3g}  (6 · N · D)",
            f"GPU               {self.num_gpus} × {self.gpu} at {self.mfu:.0%} MFU "
            f"({GPU_PEAK_TFLOPS[self.gpu]:.0f} TFLOP/s peak bf16)",
            f"GPU-hours         {self.gpu_hours:.3g}",
            f"days              {self.days:.3g}",
            f"cost              ${self.cost:,.0f}  at ${self.price_per_gpu_hour:g}/GPU-hour",
        ]


def training_flops(params: float, tokens: float) -> float:
    return 6.0 * params * tokens


def plan(
    params: float,
    tokens: float | None = None,
    *,
    gpu: str = "H100",
    num_gpus: int = 1,
    mfu: float = 0.4,
    price_per_gpu_hour: float = 2.0,
) -> Plan:
    if params <= 0:
        raise ValueError(f"params must be positive, got {params}")
    if tokens is not None and tokens <= 0:
        raise ValueError(f"tokens must be positive, got {tokens}")
    gpu = gpu.upper()
    if gpu not in GPU_PEAK_TFLOPS:
        raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(GPU_PEAK_TFLOPS)}")
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu}")
    if num_gpus < 1:
        raise ValueError(f"num_gpus must be at least 1, got {num_gpus}")
    if price_per_gpu_hour < 0:
        raise ValueError(f"price must not be negative, got {price_per_gpu_hour}")
    tokens = tokens if tokens is not None else CHINCHILLA_TOKENS_PER_PARAM * params
    flops = training_flops(params, tokens)
    gpu_hours = flops / (GPU_PEAK_TFLOPS[gpu] * 1e12 * mfu) / 3600.0
    return Plan(
        params=params, tokens=tokens, flops=flops, gpu=gpu, num_gpus=num_gpus, mfu=mfu,
        price_per_gpu_hour=price_per_gpu_hour, gpu_hours=gpu_hours,
        days=gpu_hours / num_gpus / 24.0, cost=gpu_hours * price_per_gpu_hour,
    )


SEED_ROWS = [(1e9, None), (10e9, None), (70e9, 1.4e12), (175e9, 300e9), (405e9, 15.6e12), (1e12, None)]


def seed_table() -> list[tuple[float, float, float]]:
    """(params, tokens, FLOPs) for the seed's reference runs; tokens 20·N where not given."""
    rows = [(n, d if d else CHINCHILLA_TOKENS_PER_PARAM * n) for n, d in SEED_ROWS]
    return [(n, d, training_flops(n, d)) for n, d in rows]
