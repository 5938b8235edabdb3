"""Evaluation stage: held-out bits per byte and perplexity, the bigram floor, lm-eval's check, hfllm's
MMLU-format task three ways, any lm-eval task, and the contamination check.

Usage:
    python recipes/evaluation.py --config recipes/configs/demo/evaluation.yaml
    python recipes/evaluation.py --model_name_or_path runs/demo/pretrain --dataset_name runs/demo/data \
        --output_dir runs/demo/eval
"""

from hfllm.configs import parse_args
from hfllm.errors import exit_on_error
from hfllm.evaluation import EvalArguments
from hfllm.pipeline import STAGES, execute_stage


def main(eval_args: EvalArguments) -> None:
    manifest = execute_stage(STAGES["eval"], (eval_args,))
    m = manifest["metrics"]
    if "bits_per_byte" in m:
        line = f"bits per byte {m['bits_per_byte']:.4f}, perplexity {m['perplexity']:.2f}"
        if "bigram_bits_per_byte" in m:
            line += f" (bigram floor {m['bigram_bits_per_byte']:.4f})"
        print(line)
    for entry, scores in m.get("mmlu", {}).items():
        print(f"{entry} MMLU: " + ", ".join(f"{k} {v['accuracy']:.1%}" for k, v in scores["scorings"].items()))
    print(f"all results: {eval_args.output_dir}/stages.json")


@exit_on_error
def cli(args=None) -> None:
    main(*parse_args((EvalArguments,), args))


if __name__ == "__main__":
    cli()
