"""Evaluation: bits per byte / perplexity on held-out text, the bigram floor, and lm-eval."""

from hfllm.evaluation.bpb import BigramModel, TextScore, best_bigram, score_texts
from hfllm.evaluation.stage import EvalArguments, lm_eval_bits_per_byte, run_eval_stage

__all__ = [
    "BigramModel", "EvalArguments", "TextScore", "best_bigram", "lm_eval_bits_per_byte", "run_eval_stage",
    "score_texts",
]
