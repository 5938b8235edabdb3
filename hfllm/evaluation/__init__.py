"""Evaluation: bits per byte / perplexity on held-out text, the bigram floor, and lm-eval.

Names are imported on first use: the data stage writes the run's MMLU-format task
(`hfllm.evaluation.mmlu`) without loading lm-eval and torch (≈ 5 s)."""

import importlib

_NAMES = {
    "BigramModel": "bpb", "TextScore": "bpb", "best_bigram": "bpb", "score_texts": "bpb",
    "EvalArguments": "stage", "lm_eval_bits_per_byte": "stage", "run_eval_stage": "stage",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f"hfllm.evaluation.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'hfllm.evaluation' has no attribute {name!r}")
