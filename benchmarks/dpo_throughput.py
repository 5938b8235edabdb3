"""DPO throughput: hfllm's DPO recipe settings against TRL's `DPOTrainer` defaults, at equal batch and
data, in one process (alternating, so that the machine's drift hits both alike).

    python benchmarks/dpo_throughput.py                      # the demo model's shape (4 × 256, 8k vocab)
    python benchmarks/dpo_throughput.py --steps 20 --threads 2

TRL's defaults: gradient checkpointing on, the reference model run beside the policy every step,
the fused LM head scoring every position on the CPU. The recipe: reference log-probs computed once
before training (`precompute_ref_log_probs`, its time counted), no gradient checkpointing, the
fused head scoring completion positions only (`compact_lm_head_on_cpu`). Tokens/s counts the
non-padding tokens of chosen and rejected sequences trained on. Figures: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import datasets
import torch
import trl.trainer.utils as trl_utils
from transformers import AutoModelForCausalLM
from trl import DPOConfig, DPOTrainer

from hfllm.alignment.sft import compact_lm_head_on_cpu
from hfllm.alignment.tasks import TASKS, sample_problems
from hfllm.modeling import llama_config
from hfllm.tokenizer import train_bpe


def pairs(n: int) -> datasets.Dataset:
    rows = []
    for p in sample_problems(["addition"], 4 * n, seed=0):
        wrong = TASKS["addition"].write_solution(p.prompt, mistake=True)
        if wrong is not None:
            rows.append({"prompt": [{"role": "user", "content": p.prompt}],
                         "chosen": [{"role": "assistant", "content": p.solution}],
                         "rejected": [{"role": "assistant", "content": wrong}]})
        if len(rows) == n:
            break
    return datasets.Dataset.from_list(rows)


def run(variant: str, model_dir: str, tokenizer, data, args) -> dict[str, float]:
    recipe = variant == "recipe"
    trl_utils._use_triton = ORIGINAL_USE_TRITON
    if recipe:
        compact_lm_head_on_cpu()
    with tempfile.TemporaryDirectory() as out:
        config = DPOConfig(output_dir=out, max_steps=args.steps, per_device_train_batch_size=args.batch, bf16=False,
                           learning_rate=5e-5, max_length=96, report_to="none", save_strategy="no", disable_tqdm=True,
                           logging_steps=args.steps, precompute_ref_log_probs=recipe,
                           gradient_checkpointing=not recipe)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        start = time.perf_counter()
        trainer = DPOTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer)
        trainer.train()
        seconds = time.perf_counter() - start
    tokens = trainer._total_train_tokens if hasattr(trainer, "_total_train_tokens") else 0
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds if tokens else float("nan")}


ORIGINAL_USE_TRITON = trl_utils._use_triton


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from hfllm.corpus import iter_documents

    texts = (d["text"] for d in iter_documents(["pydoc_topics"], 200, 2_000_000))
    tokenizer = train_bpe(texts, vocab_size=args.vocab)
    work = Path(tempfile.mkdtemp())
    config = llama_config(args.layers, args.width, max(1, args.width // 64), 256, len(tokenizer),
                          pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(work / "model")
    data = pairs(args.batch * args.steps)
    results: dict[str, list[dict[str, float]]] = {"defaults": [], "recipe": []}
    for _ in range(args.rounds):
        for variant in results:
            results[variant].append(run(variant, str(work / "model"), tokenizer, data, args))
    best = {v: max(r["tokens_per_s"] for r in rs) for v, rs in results.items()}
    for variant, rs in results.items():
        print(f"{variant:9s} " + "  ".join(f"{r['tokens_per_s']:8.0f} tok/s ({r['seconds']:.1f} s)" for r in rs))
    print(f"recipe / defaults: {best['recipe'] / best['defaults']:.2f}× (best of {args.rounds} each, "
          f"{args.steps} steps of {args.batch} pairs, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
