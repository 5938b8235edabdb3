"""One precision rule for every training stage: pretraining and the TRL stages alike.

An explicit `bf16` or `fp16` (in the YAML or on the command line) wins; with neither said, `auto`
picks bf16 on GPUs that have it and on CPUs that multiply bf16 in hardware (AVX512-BF16/AMX:
≈ 2.4× fp32 on the pretraining benchmark), fp16 with loss scaling on older GPUs, and fp32 on
other CPUs (bf16 there is emulated and slower than fp32). TRL 1.16's configs default to bf16 and
refuse to build on such a CPU ("Your setup doesn't support bf16/gpu"); the rule sets `bf16` and
`use_cpu` itself where the user said nothing, and the manifest records which precision ran and
whether the config or the rule chose it.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
CHOSEN_BY_ATTRIBUTE = "_hfllm_precision_chosen_by"  # set on a TrainingArguments the rule filled in


def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (x86 AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def cpu_only() -> bool:
    """No GPU (CUDA or Apple's MPS): training runs on the CPU and must say so with `use_cpu`.
    Without it accelerate finds no GPU and, under `torchrun`, leaves every process on its own
    (world size 1 in each, measured) instead of forming a CPU process group over gloo."""
    mps = getattr(torch.backends, "mps", None)
    return not torch.cuda.is_available() and not (mps is not None and mps.is_available())


def auto_precision() -> str:
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def precision_flags(precision: str) -> dict[str, bool]:
    """The TrainingArguments fields that run `precision` ("auto" resolved first) on this machine."""
    chosen = auto_precision() if precision == "auto" else precision
    flags = {"bf16": chosen == "bf16", "fp16": chosen == "fp16"}
    if cpu_only():
        flags["use_cpu"] = True  # transformers refuses CPU bf16 unless told; torchrun needs it (cpu_only)
    return flags


def precision_ran(training_args) -> dict[str, str]:
    """For the manifest: the dtype a TrainingArguments trains in, on which device, chosen by whom."""
    dtype = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32"
    return {"dtype": dtype, "device": training_args.device.type,
            "chosen_by": getattr(training_args, CHOSEN_BY_ATTRIBUTE, "config")}
