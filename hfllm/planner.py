"""Compute planning: tokens from the 20-tokens-per-parameter rule (Chinchilla, Hoffmann et al.
2022) or from a scaling law L(N, D) = E + A/N^α + B/D^β (a published one, or one fitted on the
user's own sweep by `hfllm.scaling`), training FLOPs ≈ 6·N·D, and for a GPU type, count, MFU and
price: GPU-hours, days, dollars.

Every number is computed, none tabulated: the seed's FLOPs table had two rows off by 10×
(1B on 20B tokens is 1.2e20, not 1.2e21; 1T on 20T is 1.2e26), and `seed_table()` prints them right.
Nothing here imports torch: `hfllm plan` answers in a fraction of a second.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfllm.errors import ConfigError

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


# ---------------------------------------------------------------------------------------------
# Scaling laws: L(N, D) = E + A/N^α + B/D^β, and the compute-optimal split of a FLOP budget

LAW_CONSTANTS = ("E", "A", "B", "alpha", "beta")


@dataclass(frozen=True)
class Law:
    """L(N, D) = E + A/N^α + B/D^β: the loss (nats per token) of N parameters trained on D tokens
    (Hoffmann et al. 2022, eq. 2). `intervals` holds a 95 % interval per constant when the law was
    fitted with a bootstrap; `parameters` says what N counts."""

    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str = ""
    parameters: str = "every parameter, embeddings included"
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    def loss(self, params: float, tokens: float) -> float:
        return self.E + self.A / params**self.alpha + self.B / tokens**self.beta

    def compute_optimal(self, flops: float) -> tuple[float, float]:
        """(N, D) that minimise L(N, D) under 6·N·D = C (Hoffmann et al. 2022, eq. 4):
        N = G·(C/6)^(β/(α+β)), D = (C/6)^(α/(α+β)) / G, G = (αA / (βB))^(1/(α+β))."""
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        params = g * (flops / 6.0) ** (self.beta / (self.alpha + self.beta))
        return params, flops / (6.0 * params)

    def formula(self) -> str:
        return f"L = {self.E:.4g} + {self.A:.4g}/N^{self.alpha:.4g} + {self.B:.4g}/D^{self.beta:.4g}"


PUBLISHED_LAWS = {
    # Chinchilla's approach 3 (Hoffmann et al. 2022, eq. 10): Gopher's 5.76e23 FLOPs → ≈ 32B on ≈ 3T.
    "hoffmann2022": Law("hoffmann2022", E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28,
                        source="Hoffmann et al. 2022 (Chinchilla), approach 3"),
    # The same approach refitted on Chinchilla's own points, read back from its figure (Besiroglu et
    # al. 2024): 5.76e23 FLOPs → ≈ 72B on ≈ 1.33T, ≈ 18 tokens per parameter, as approaches 1 and 2.
    "besiroglu2024": Law("besiroglu2024", E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658,
                         source="Besiroglu et al. 2024, Chinchilla scaling: a replication attempt"),
}
DEFAULT_LAW = "besiroglu2024"


def _constant(data: dict[str, Any], name: str, where: str) -> float:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"missing or not a number (a law file holds {', '.join(LAW_CONSTANTS)})", where=where,
                          field=name)
    if value < 0 or (value == 0 and name != "E"):
        raise ConfigError(f"must be positive, got {value}", where=where, field=name)
    return float(value)


def load_law(name_or_path: str) -> Law:
    """A published law by name, or a `law.json` written by `hfllm.scaling`; a file that is missing,
    not JSON, or without five usable constants is one `ConfigError` naming it."""
    if name_or_path in PUBLISHED_LAWS:
        return PUBLISHED_LAWS[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        known = ", ".join(PUBLISHED_LAWS)
        raise ConfigError(f"no such law file (or give a published law: {known})", where=name_or_path, field="--law")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"not a JSON law file ({err})", where=name_or_path) from None
    if not isinstance(data, dict):
        raise ConfigError("a law file is a JSON object of constants", where=name_or_path)
    constants = {k: _constant(data, k, name_or_path) for k in LAW_CONSTANTS}
    intervals = {k: (float(v[0]), float(v[1])) for k, v in (data.get("intervals") or {}).items()
                 if k in LAW_CONSTANTS and isinstance(v, list) and len(v) == 2}
    return Law(name=path.name, source=str(data.get("source") or path),
               parameters=str(data.get("parameters") or Law.parameters), intervals=intervals, **constants)


@dataclass(frozen=True)
class Split:
    """One way to spend a FLOP budget: N parameters on D tokens, and the loss the law predicts."""

    label: str
    params: float
    tokens: float
    loss: float


def split_by_ratio(flops: float, tokens_per_param: float) -> tuple[float, float]:
    """N, D with D = r·N and 6·N·D = C: N = sqrt(C / (6r))."""
    params = math.sqrt(flops / (6.0 * tokens_per_param))
    return params, tokens_per_param * params


def plan_flops(flops: float, law: Law, tokens_per_param: float | None = None) -> list[Split]:
    """A FLOP budget split three ways: compute-optimal under the law, the 20:1 rule, and
    `tokens_per_param` when given (e.g. 150 when inference dominates: a smaller model trained
    longer), each with the loss the law predicts for it."""
    if not flops > 0 or not math.isfinite(flops):
        raise ValueError(f"--flops must be a positive number, got {flops}")
    params, tokens = law.compute_optimal(flops)
    splits = [Split(f"compute-optimal ({law.name})", params, tokens, law.loss(params, tokens))]
    for ratio in dict.fromkeys([CHINCHILLA_TOKENS_PER_PARAM, tokens_per_param or CHINCHILLA_TOKENS_PER_PARAM]):
        if ratio <= 0:
            raise ValueError(f"--tokens_per_param must be positive, got {ratio}")
        n, d = split_by_ratio(flops, ratio)
        splits.append(Split(f"{ratio:g} tokens per parameter", n, d, law.loss(n, d)))
    return splits
