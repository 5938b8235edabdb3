"""The scaling stage: run the sweep through the pretraining stage, fit both laws with bootstrap
intervals, train the run the fit predicts, and write `law.json`, `sweep.json` and the report.

Each run is a pretraining entry in the pipeline's convention: id `c<budget>_<layers>x<width>`, the
stage type `pretrain`, the config `pretrain_config` with the run's shape, `max_steps` and
`output_dir` as overrides, inputs the data and tokenizer. It runs through `execute_stage`, so it
writes the same directory, manifest and report section as `python recipes/pretrain.py` would,
and is skipped when its manifest's fingerprint matches (a finished run is never trained twice; a
killed one resumes from its last complete checkpoint when the sweep is run again). Runs live in
`sweep/` beside the stage's own directory, not inside it: a change to the fit's settings sets the
stage's directory aside, and must not take finished runs with it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hfllm.errors import ConfigError, DataError
from hfllm.planner import LAW_CONSTANTS, Law
from hfllm.report import StageContext
from hfllm.scaling.fits import Bootstrap, IsoflopFit, SweepPoint, bootstrap, fit_isoflop, fit_points, group_by_budget
from hfllm.scaling.sweep import PlannedPoint, ScalingArguments, padded_vocab, plan_prediction, plan_sweep

LAW_FILE = "law.json"
SWEEP_FILE = "sweep.json"


def pretrain_args(args: ScalingArguments, point: PlannedPoint | None = None, runs_dir: Path | None = None):
    """The pretraining stage's dataclasses for one run: `pretrain_config` with the sweep's data and
    tokenizer, and the run's shape, steps and directory, as overrides — what `python
    recipes/pretrain.py --config <pretrain_config> --num_layers … --max_steps … --output_dir …` parses.
    Without a point: the recipe the runs share (for the checks)."""
    from hfllm.configs import parse_config
    from hfllm.pipeline import STAGES

    types, _ = STAGES["pretrain"].load()
    overrides: dict[str, Any] = {"dataset_name": args.dataset_name, "tokenizer_name": args.tokenizer_name}
    if point is not None:
        overrides.update(num_layers=point.shape.num_layers, hidden_size=point.shape.hidden_size,
                         num_heads=point.shape.num_heads, max_steps=point.steps,
                         # held-out loss after the last step only: the loss the law is fitted on
                         eval_steps=point.steps, output_dir=str(runs_dir / point.id))
    return parse_config(types, args.pretrain_config, overrides=overrides)


def batch_tokens(training_args) -> int:
    return (training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
            * training_args.world_size * training_args.max_length)


def check_scaling_args(args: ScalingArguments) -> None:
    """Before anything runs: the shared recipe parses, reads each block at most once, measures
    held-out loss, and the sweep's plan fits the shapes (when the vocabulary is known already: the
    pipeline wires it from the tokenizer's config)."""
    script_args, training_args, _ = pretrain_args(args)
    if script_args.data_mixture or script_args.final_phase_fraction:
        raise ConfigError("a sweep run reads each block at most once: no data_mixture or final_phase_fraction (they "
                          "repeat small domains and the final phase)", where=args.pretrain_config)
    if script_args.dataset_streaming and args.stream_tokens is None:
        raise ConfigError("a streamed training set has no length to check each run's single pass against: set "
                          "stream_tokens (its size in tokens)", field="stream_tokens")
    if training_args.eval_strategy == "no":
        raise ConfigError("the sweep measures held-out loss: set eval_strategy: steps", where=args.pretrain_config,
                          field="eval_strategy")
    vocab = args.vocab_size or _tokenizer_vocab(args.tokenizer_name)
    if vocab is not None:
        plan_sweep(args, vocab, training_args.max_length, batch_tokens(training_args))


def _tokenizer_vocab(name: str) -> int | None:
    if not (Path(name) / "tokenizer.json").exists():
        return None
    from hfllm.modeling import load_tokenizer

    return len(load_tokenizer(name, field="tokenizer_name"))


def unique_train_tokens(args: ScalingArguments) -> int:
    """Tokens in the training split as pretraining packs it (its own `load_train_blocks`): the most a
    run may train on while reading each block once. A stream is read in order, each block once, as
    far as it goes: its size is `stream_tokens`, as declared."""
    from hfllm.modeling import load_tokenizer
    from hfllm.pretrain import load_train_blocks

    script_args, training_args, model_args = pretrain_args(args)
    if script_args.dataset_streaming:
        return int(args.stream_tokens)
    tokenizer = load_tokenizer(script_args.tokenizer_name, field="tokenizer_name")
    blocks = load_train_blocks(script_args, training_args, tokenizer, resume=None).blocks
    return len(blocks) * training_args.max_length


def check_single_pass(points: list[PlannedPoint], unique_tokens: int) -> None:
    over = [p for p in points if p.tokens > unique_tokens]
    if over:
        raise DataError(f"run {over[0].id} needs {over[0].tokens:,} tokens and the training split has "
                        f"{unique_tokens:,}: a run must read each block at most once — add text or lower the budgets",
                        field="budgets")


def run_point(args: ScalingArguments, point: PlannedPoint, entry_ids: list[str],
              is_main_process: bool) -> dict[str, Any]:
    """Train one run through the pretraining stage, or skip it when its manifest matches; check
    that it trained on exactly its planned tokens, each block once. Returns its manifest."""
    from hfllm.pipeline import STAGES, execute_stage, read_manifest, stage_fingerprint

    spec, runs_dir = STAGES["pretrain"], args.runs_dir
    point_args = pretrain_args(args, point, runs_dir)
    fingerprint, _ = stage_fingerprint(spec, point_args)
    manifest = read_manifest(runs_dir / point.id)
    if manifest is not None and manifest.get("fingerprint") == fingerprint:
        _log(is_main_process, f"{point.id}: finished before, skipped")
    else:
        _log(is_main_process, f"{point.id}: training {point.shape.name} ({point.params:,} parameters) on "
                              f"{point.tokens:,} tokens, {point.steps} steps")
        _reset_compiled_graphs()
        manifest = execute_stage(spec, point_args, entry_id=point.id, run_dir=runs_dir, report_entries=entry_ids,
                                 config_path=args.pretrain_config)
    metrics = manifest["metrics"]
    check_trained_once(point, metrics, point_args[1].max_length, str(runs_dir / point.id))
    if metrics["parameters"] != point.params:
        raise DataError(f"run {point.id} has {metrics['parameters']:,} parameters, its plan {point.params:,}: the "
                        "tokenizer's vocabulary is not the one planned for", field="vocab_size")
    return manifest


def check_trained_once(point: PlannedPoint, metrics: dict[str, Any], max_length: int, where: str) -> None:
    """The run trained on exactly its planned tokens, and its split holds at least that many: the
    Trainer's sampler draws each block once per pass, so no block was seen twice (a stream has no
    block count; it is read in order, as far as `stream_tokens`)."""
    blocks = metrics["train_blocks"]
    if metrics["tokens_seen"] != point.tokens or (blocks is not None and blocks * max_length < point.tokens):
        split = "a stream" if blocks is None else f"{blocks:,} blocks of {max_length}"
        raise DataError(f"run {point.id} trained on {metrics['tokens_seen']:,} tokens of {split}; its plan was "
                        f"{point.tokens:,} tokens, each block once", where=where)


def _reset_compiled_graphs() -> None:
    """Forget the earlier runs' compiled graphs before the next model. Dynamo guards a compiled
    forward on its parameters' shapes and recompiles it for each new shape, up to its
    `recompile_limit` (8); past that it runs the function uncompiled, silently. Measured: of 11
    Llama shapes compiled in one process, the 9th hit the limit; with a reset before each, none did
    — and a sweep trains 13 shapes in one process."""
    import torch

    torch._dynamo.reset()


def _log(is_main_process: bool, message: str) -> None:
    if is_main_process:
        print(f"[hfllm] scaling: {message}", flush=True)


def sweep_point(point: PlannedPoint, manifest: dict[str, Any]) -> SweepPoint:
    return SweepPoint(point.budget, float(point.params), float(point.tokens), float(manifest["metrics"]["eval_loss"]),
                      point.id, float(point.shape.params_non_embedding))


@dataclass(frozen=True)
class Prediction:
    """The larger run the fit predicts, against what it measured. `reference` is the best loss of the
    largest sweep budget; the goal is an error at most a third of the drop from it. `optimal_params`
    and `optimal_tokens`: the law's compute-optimal split of the budget (the run's own N differs
    when the shapes are discrete, or when that split wants more tokens than the split holds)."""

    id: str
    budget: float
    params: float
    tokens: float
    predicted: float
    interval: tuple[float, float]
    measured: float
    reference: float
    optimal_params: float = math.nan
    optimal_tokens: float = math.nan

    @property
    def error(self) -> float:
        return abs(self.predicted - self.measured)

    @property
    def drop(self) -> float:
        return self.reference - self.measured

    @property
    def goal_met(self) -> bool:
        return self.error <= self.drop / 3

    @property
    def useful(self) -> bool:
        """The fit predicted something: its error is below the loss drop it was asked to predict."""
        return self.error < self.drop


def check_prediction(prediction: Prediction, require: bool) -> None:
    from hfllm.errors import CheckFailed

    if require and not prediction.useful:
        raise CheckFailed(f"the fit predicts nothing: predicted {prediction.predicted:.4f}, measured "
                          f"{prediction.measured:.4f} (error {prediction.error:.4f}) against a drop of "
                          f"{prediction.drop:.4f} from the largest budget's best run",
                          field="require_useful_prediction")


def run_scaling_stage(args: ScalingArguments, *, context: StageContext) -> dict[str, Any]:
    from hfllm.modeling import load_tokenizer

    script_args, training_args, _ = pretrain_args(args)
    vocab = len(load_tokenizer(args.tokenizer_name, field="tokenizer_name"))
    if args.vocab_size is not None and padded_vocab(args.vocab_size) != padded_vocab(vocab):
        raise ConfigError(f"planned for a vocabulary of {args.vocab_size}; the tokenizer has {vocab}",
                          field="vocab_size")
    max_length, tokens_per_batch = training_args.max_length, batch_tokens(training_args)
    planned = plan_sweep(args, vocab, max_length, tokens_per_batch)
    unique_tokens = unique_train_tokens(args)
    check_single_pass(planned, unique_tokens)

    entry_ids = [p.id for p in planned]
    points = [sweep_point(p, run_point(args, p, entry_ids, context.is_main_process)) for p in planned]
    law = fit_points(points, name=f"{context.entry_id} fit")
    isoflop = fit_isoflop(points)
    boot = bootstrap(points, args.bootstrap_samples, args.bootstrap_seed, full_fit=law)
    law = Law(**{**asdict(law), "intervals": boot.law_intervals(),
                 "parameters": "every parameter (the tied embedding once)",
                 "source": f"hfllm scaling sweep {args.runs_dir}"})

    optimal_params, optimal_tokens = law.compute_optimal(args.prediction_budget)
    target = plan_prediction(args, optimal_params, vocab, max_length, tokens_per_batch, unique_tokens)
    check_single_pass([target], unique_tokens)
    manifest = run_point(args, target, entry_ids + [target.id], context.is_main_process)
    largest = group_by_budget(points)[max(args.budgets)]
    prediction = Prediction(target.id, target.budget, float(target.params), float(target.tokens),
                            law.loss(target.params, target.tokens),
                            boot.prediction_interval(lambda fit: fit.loss(target.params, target.tokens)),
                            float(manifest["metrics"]["eval_loss"]), min(p.loss for p in largest),
                            optimal_params, optimal_tokens)

    if context.is_main_process:
        write_outputs(Path(args.output_dir), args, law, isoflop, boot, points, planned + [target], prediction,
                      unique_tokens, context)
    from hfllm.scaling.report import describe

    describe(context.section, args, law, isoflop, boot, points, planned + [target], prediction, unique_tokens)
    check_prediction(prediction, args.require_useful_prediction)
    return scaling_metrics(law, isoflop, boot, prediction, unique_tokens, len(points))


def scaling_metrics(law: Law, isoflop: IsoflopFit | None, boot: Bootstrap, prediction: Prediction,
                    unique_tokens: int, runs: int) -> dict[str, Any]:
    metrics: dict[str, Any] = {k: getattr(law, k) for k in LAW_CONSTANTS}
    metrics["params_exponent_approach3"] = law.beta / (law.alpha + law.beta)
    if isoflop is not None:
        metrics["params_exponent_approach2"] = isoflop.params.exponent
    metrics.update(sweep_runs=runs, unique_train_tokens=unique_tokens, bootstrap_samples=len(boot.laws),
                   prediction_run=prediction.id, predicted_loss=prediction.predicted,
                   measured_loss=prediction.measured, prediction_error=prediction.error,
                   loss_drop=prediction.drop, prediction_goal_met=prediction.goal_met)
    return metrics


def law_record(args: ScalingArguments, law: Law, isoflop: IsoflopFit | None, boot: Bootstrap,
               points: list[SweepPoint], prediction: Prediction, unique_tokens: int) -> dict[str, Any]:
    """`law.json`: what `hfllm plan --law` reads (the five constants) and what they came from."""
    record: dict[str, Any] = {
        "law": "L(N, D) = E + A / N^alpha + B / D^beta",
        **{k: getattr(law, k) for k in LAW_CONSTANTS},
        "intervals": {k: list(v) for k, v in law.intervals.items()},
        "interval_level": 0.95,
        "bootstrap_samples": len(boot.laws),
        "parameters": law.parameters,
        "loss": f"held-out nats per token of {args.tokenizer_name}",
        "tokens": "training tokens, each block once",
        "source": law.source,
        "fit": "Hoffmann et al. 2022 approach 3: Huber (delta 1e-3) on log-loss, L-BFGS from their grid of starts",
        "sweep": [asdict(p) for p in points],
        "unique_train_tokens": unique_tokens,
        "prediction": {**asdict(prediction), "error": prediction.error, "drop": prediction.drop,
                       "goal_met": prediction.goal_met},
    }
    if isoflop is not None:
        record["approach2"] = {
            "minima": [asdict(m) for m in isoflop.minima],
            "params_exponent": isoflop.params.exponent, "params_coefficient": isoflop.params.coefficient,
            "tokens_exponent": isoflop.tokens.exponent, "tokens_coefficient": isoflop.tokens.coefficient,
            "params_exponent_interval": list(boot.interval([f.params.exponent for f in boot.isoflop]))
            if boot.isoflop else None,
            "bootstrap_samples_used": boot.approach2_used,
        }
    return record


def write_outputs(out: Path, args: ScalingArguments, law: Law, isoflop: IsoflopFit | None, boot: Bootstrap,
                  points: list[SweepPoint], planned: list[PlannedPoint], prediction: Prediction,
                  unique_tokens: int, context: StageContext) -> None:
    out.mkdir(parents=True, exist_ok=True)
    record = law_record(args, law, isoflop, boot, points, prediction, unique_tokens)
    record["plot"] = str(Path(context.run_dir) / "plots" / f"{context.entry_id}_isoflop.png")
    (out / LAW_FILE).write_text(json.dumps(record, indent=1))
    rows = [{"id": p.id, "budget": p.budget, "shape": p.shape.name, "params": p.params,
             "params_non_embedding": p.shape.params_non_embedding, "tokens": p.tokens, "steps": p.steps,
             "flops": p.flops, "flops_with_attention": p.shape.flops_per_token * p.tokens} for p in planned]
    losses = {p.id: p.loss for p in points} | {prediction.id: prediction.measured}
    for row in rows:
        row["loss"] = losses[row["id"]]
    (out / SWEEP_FILE).write_text(json.dumps({"runs": rows, "runs_dir": str(args.runs_dir)}, indent=1))
