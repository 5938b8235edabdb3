"""Does cleaning help? The same tiny model, tokenizer and token budget trained on the raw pool
(text extraction only) vs the cleaned mixture (every block), and — once pretraining reads the
data stage's `mixture.json` and `final_phase` split — the cleaned mixture with the final phase;
3 seeds each; held-out bits per byte on the same clean held-out text (the cleaned run's `test`
split, fixed by content hash before any block ran), and on its code documents beside it.

    python benchmarks/data_ablation.py --run_dir runs/ablation [--final_phase]

The cleaned mixture must be lower by more than twice the seed-to-seed standard deviation.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from hfllm.configs import parse_config_file
from hfllm.pipeline import STAGES, execute_stage

TINY = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "tiny"


def stage(name: str, overrides: dict, config: str) -> dict:
    spec = STAGES[name]
    dataclass_types, _ = spec.load()
    return execute_stage(spec, parse_config_file(dataclass_types, TINY / config, overrides))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", default="runs/ablation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--final_phase", action="store_true",
                        help="also the cleaned mixture with the final phase (needs pretraining's support)")
    args = parser.parse_args()
    run = Path(args.run_dir)
    stage("data", {"output_dir": str(run / "cleaned" / "data")}, "data.yaml")
    stage("data", {"output_dir": str(run / "raw" / "data"), "blocks": ["extract"]}, "data.yaml")
    # one tokenizer for every variant, trained on the cleaned text
    stage("tokenizer", {"dataset_name": str(run / "cleaned" / "data"), "output_dir": str(run / "tokenizer")},
          "tokenizer.yaml")
    variants = {"raw": {}, "cleaned": {}}
    if args.final_phase:
        variants["cleaned+final"] = {"final_phase_fraction": 0.1}  # pretraining's option (lead's side)
    results: dict[str, list[float]] = {}
    for variant, extra in variants.items():
        data = run / ("raw" if variant == "raw" else "cleaned") / "data"
        for seed in args.seeds:
            out = run / variant / f"seed{seed}"
            stage("pretrain", {"dataset_name": str(data), "eval_dataset_name": str(run / "cleaned" / "data"),
                               "tokenizer_name": str(run / "tokenizer"), "seed": seed,
                               "output_dir": str(out / "pretrain"), **extra}, "pretrain.yaml")
            m = stage("eval", {"model_name_or_path": str(out / "pretrain"),
                               "dataset_name": str(run / "cleaned" / "data"), "output_dir": str(out / "eval")},
                      "evaluation.yaml")
            results.setdefault(variant, []).append(m["metrics"].get("bits_per_byte", float("nan")))
    print("| variant | held-out bits/byte (mean ± sd over seeds) | seeds |")
    print("|---|---|---|")
    for variant, values in results.items():
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| {variant} | {statistics.mean(values):.4f} ± {sd:.4f} | {', '.join(f'{v:.4f}' for v in values)} |")
    (run / "ablation.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
