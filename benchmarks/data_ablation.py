"""Does cleaning help? The same model, tokenizer and token budget (a profile's pretraining config,
the tiny profile's by default) trained on the raw pool (text extraction, then decontamination
against the held-out split, as the cleaned data gets it), on the cleaned mixture (every block;
blocks drawn by `mixture.json`), and on the cleaned mixture ending with the final phase; 3 seeds
each. Scored in bits per byte on the same clean held-out text: the cleaned run's `test` split
(fixed by content hash before any block ran, and sharing no document with the quality
classifier's reference set) as text (every domain but code), the same without licences, and code.

    python benchmarks/data_ablation.py --run_dir runs/ablation [--profile tiny] [--seeds 1 2 3]

Every stage is the pipeline's own (`hfllm.pipeline.execute_stage`): the data stage twice (all
blocks; extraction and decontamination), the tokenizer once on the cleaned text (shared by every
variant), the pretraining stage per variant and seed, and the evaluation stage once per held-out
set, scoring every model on the same text. A model already trained in `run_dir` is not trained
again.

The goal (issue 15): the cleaned mixture's held-out bits per byte lower than the raw pool's by
more than twice the seed-to-seed standard deviation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import datasets

from hfllm.configs import parse_config
from hfllm.pipeline import MANIFEST, STAGES, execute_stage

PROFILES = Path(__file__).resolve().parents[1] / "recipes" / "configs"
# The raw pool keeps decontamination: without it the raw model trains on texts that share 13-grams
# with held-out documents (79 of its 438 training documents on the tiny profile: licence files,
# whole METADATA files, source files) and wins by memory, not by data — half of its lead on text
# and all of it on code came from them (benchmarks/RESULTS.md, 2026-12-01).
RAW_BLOCKS = ["extract", "decontaminate"]
VARIANTS = {  # pretraining options per variant; data: which data stage's output it trains on
    "raw": ("raw", {"data_mixture": False, "final_phase_fraction": 0.0}),
    "cleaned": ("cleaned", {"data_mixture": True, "final_phase_fraction": 0.0}),
    "cleaned+final": ("cleaned", {"data_mixture": True, "final_phase_fraction": 0.1}),
}


def stage(name: str, profile: str, config: str, overrides: dict, run_dir: Path, entry_id: str) -> dict:
    spec = STAGES[name]
    dataclass_types, _ = spec.load()
    args = parse_config(dataclass_types, PROFILES / profile / config, (), overrides)
    return execute_stage(spec, args, entry_id=entry_id, run_dir=run_dir)


def heldout_sets(cleaned: Path, out: Path) -> dict[str, Path]:
    """The cleaned run's held-out split as three datasets: text (every domain but code), the same
    without licences, and code (each with the cleaned training split beside it, which the bigram
    floor is fitted on). Licences apart because the mixture down-weights them on purpose (weight 0.1)
    while the raw pool holds hundreds of copies: 41 % of the tiny profile's held-out text bytes."""
    dd = datasets.load_from_disk(str(cleaned))
    sets = {"text": lambda d: d != "code", "text_no_licence": lambda d: d not in ("code", "licence"),
            "code": lambda d: d == "code"}
    paths = {}
    for name, keep in sets.items():
        test = dd["test"].filter(lambda row, keep=keep: keep(row["domain"]))
        paths[name] = out / f"heldout_{name}"
        datasets.DatasetDict({"train": dd["train"], "test": test}).save_to_disk(str(paths[name]))
    return paths


def summary(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", default="runs/ablation")
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--record", metavar="JSON",
                        help="also write the figures here (e.g. benchmarks/results/data_ablation.json), "
                             "for the data stage's `ablation_results` to quote in the report")
    parser.add_argument("--max_bytes_per_source", type=int,
                        help="the raw pool's size (the profile's corpus_max_bytes_per_source otherwise): "
                             "large enough that the token budget does not repeat the cleaned text")
    args = parser.parse_args()
    run = Path(args.run_dir)
    started = time.perf_counter()
    data = {"cleaned": run / "cleaned" / "data", "raw": run / "raw" / "data"}
    pool = {"corpus_max_bytes_per_source": args.max_bytes_per_source} if args.max_bytes_per_source else {}
    for variant, blocks in (("cleaned", None), ("raw", RAW_BLOCKS)):
        if not (data[variant] / MANIFEST).exists():
            stage("data", args.profile, "data.yaml",
                  {"output_dir": str(data[variant]), **({"blocks": blocks} if blocks else {}), **pool},
                  run, f"data-{variant}")
    tokenizer = run / "tokenizer"
    if not (tokenizer / MANIFEST).exists():
        stage("tokenizer", args.profile, "tokenizer.yaml",
              {"dataset_name": str(data["cleaned"]), "output_dir": str(tokenizer)}, run, "tokenizer")

    models: dict[str, list[Path]] = {}
    for variant, (source, options) in VARIANTS.items():
        for seed in args.seeds:
            out = run / "models" / f"{variant}-seed{seed}"
            models.setdefault(variant, []).append(out)
            if (out / MANIFEST).exists():
                continue
            stage("pretrain", args.profile, "pretrain.yaml",
                  {"dataset_name": str(data[source]), "eval_dataset_name": str(data["cleaned"]),
                   "tokenizer_name": str(tokenizer), "seed": seed, "eval_strategy": "no", "output_dir": str(out),
                   **options}, run, f"pretrain-{variant}-seed{seed}")

    every_model = [str(m) for ms in models.values() for m in ms]
    scores: dict[str, dict[str, float]] = {}
    floors: dict[str, float] = {}
    for name, path in heldout_sets(data["cleaned"], run).items():
        m = stage("eval", args.profile, "evaluation.yaml",
                  {"model_name_or_path": every_model[0], "models": every_model, "dataset_name": str(path),
                   "max_eval_docs": None, "lm_eval_check": False, "output_dir": str(run / f"eval_{name}")},
                  run, f"eval-{name}")["metrics"]
        scores[name] = m["models"]
        floors[name] = m["bigram_bits_per_byte"]
        floors[f"{name}_bytes"] = m["heldout_bytes"]

    # How often each variant's training text is repeated within the token budget: a small cleaned
    # pool read many times over is a different comparison from one read once.
    def metrics(path: Path) -> dict:
        return json.loads((path / MANIFEST).read_text())["metrics"]

    tokens_seen = metrics(models["raw"][0])["tokens_seen"]
    read_bytes = tokens_seen * metrics(tokenizer)["train_bytes_per_token"]
    passes = {variant: read_bytes / metrics(path)["train_bytes"] for variant, path in data.items()}
    print(f"each model reads {tokens_seen:,} tokens: the cleaned training text {passes['cleaned']:.1f} times over, "
          f"the raw {passes['raw']:.1f} times")
    results = {"profile": args.profile, "seeds": args.seeds, "bigram_floor": floors, "passes_over_data": passes,
               "load_average": os.getloadavg(), "wall_s": round(time.perf_counter() - started),
               "bits_per_byte": {name: {variant: [s[Path(m).name] for m in ms] for variant, ms in models.items()}
                                 for name, s in scores.items()}}
    names = list(scores)
    print(f"| variant | {' | '.join(f'held-out {n} bits/byte (mean ± sd)' for n in names)} | "
          f"seeds {', '.join(map(str, args.seeds))} (text) |")
    print("|---|" + "---:|" * len(names) + "---|")
    for variant in VARIANTS:
        cells = [summary(results["bits_per_byte"][n][variant]) for n in names]
        text = results["bits_per_byte"]["text"][variant]
        print(f"| {variant} | {' | '.join(f'{mean:.4f} ± {sd:.4f}' for mean, sd in cells)} | "
              f"{', '.join(f'{v:.4f}' for v in text)} |")
    print("token-bigram floor: " + ", ".join(f"{n} {floors[n]:.4f}" for n in names) + " bits/byte")
    for name in names:
        by_variant = results["bits_per_byte"][name]
        raw, cleaned = summary(by_variant["raw"]), summary(by_variant["cleaned"])
        gap, margin = raw[0] - cleaned[0], 2 * max(raw[1], cleaned[1])
        results[f"{name}_goal"] = {"raw_minus_cleaned": gap, "twice_sd": margin, "met": gap > margin}
        print(f"{name}: raw − cleaned = {gap:.4f} bits/byte; 2 × seed sd = {margin:.4f}: "
              f"{'met' if gap > margin else 'NOT met'}")
    (run / "ablation.json").write_text(json.dumps(results, indent=1))
    if args.record:
        record(results, Path(args.record), args)


def record(results: dict, path: Path, args: argparse.Namespace) -> None:
    """The figures the report quotes, with when, where and how they were measured."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "unknown CPU")
    command = "python benchmarks/data_ablation.py" + (f" --max_bytes_per_source {args.max_bytes_per_source}"
                                                      if args.max_bytes_per_source else "")
    recorded = {"recorded": f"{time.strftime('%Y-%m-%d')}, {cpu}, {os.cpu_count()} cores, `{command}`", **results}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(recorded, indent=1) + "\n")


if __name__ == "__main__":
    main()
