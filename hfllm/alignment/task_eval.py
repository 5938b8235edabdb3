"""Task evaluation: each model's accuracy on held-out verifiable problems, with intervals, paired
differences between models, and the post-training gates.

Every model answers the same held-out prompts (≥ 300 distinct problems from the tasks' `test`
side, which no stage trains on: the overlap with every training dataset given is counted and must
be zero) greedily, through its chat template; the task verifier scores each reply (never a reward
model). Accuracies carry Wilson 95 % intervals; differences between two models carry a paired
bootstrap 95 % interval (prompts resampled, both models' answers kept together).

Gates (any failing → `CheckFailed` with the numbers; `scores.json` is written first):
- `require_better: ["sft > pretrain", "dpo > sft + 0.05"]`: the difference at least the margin and
  its interval above 0;
- `require_plateau_within: 0.02`: the SFT model's accuracy within that of its checkpoint at two
  thirds of its steps (SFT trained to its plateau, so later stages cannot win by its being cut short);
- `require_reward_accuracy: 0.75`: the reward model's pairwise accuracy on held-out pairs.

Win-rates, AlpacaEval-style (`win_rates: ["dpo vs sft"]`): the same replies judged pairwise through
`hfllm.judge` in both orders by a judge that was not optimised against — offline a second reward
model (`judge_model`, trained on preference pairs disjoint from the reward model's), for real runs
an LLM judge (`judge: llm:<dir>` or `openai:<model>`) — raw and length-controlled
(`hfllm.evaluation.winrate`) with bootstrap intervals, beside the judge's agreement with the
verifier on the prompts where exactly one of the two replies is right, and the verifier's own
win-rate (1 right against 0 wrong, ties half): how far the judge's win-rate is from ground truth.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hfllm.alignment.chat_data import load_split, prompt_text
from hfllm.alignment.generation import generate_replies, require_chat_template
from hfllm.alignment.tasks import TASKS, distinct_problems, get_task, task_for_prompt
from hfllm.errors import CheckFailed, ConfigError
from hfllm.modeling import load_causal_lm, load_sequence_classifier, load_tokenizer
from hfllm.report import StageContext

SCORES = "scores.json"
_GATE = re.compile(r"^\s*([\w.-]+)\s*>\s*([\w.-]+)\s*(?:\+\s*([0-9.]+))?\s*$")
_PAIR = re.compile(r"^\s*([\w.-]+)\s+vs\s+([\w.-]+)\s*$")


@dataclass
class TaskEvalArguments:
    models: list[str] = field(
        default_factory=list, metadata={"help": "Model dirs to score; each entry's id is its dir name."})
    tasks: list[str] = field(default_factory=lambda: ["addition"], metadata={"help": f"Tasks ({', '.join(TASKS)})."})
    num_prompts: int = field(
        default=400, metadata={"help": "Held-out problems (distinct), at least 300 for the gates."})
    seed: int = field(default=0, metadata={"help": "Which held-out problems, and the bootstrap's seed."})
    max_new_tokens: int = field(default=32, metadata={"help": "Longest reply."})
    batch_size: int = field(default=200, metadata={"help": "Prompts per generate call."})
    bootstrap_samples: int = field(default=2000, metadata={"help": "Paired-bootstrap resamples."})
    train_datasets: list[str] = field(
        default_factory=list, metadata={"help": "Training datasets checked for overlap."})
    plateau_model: str | None = field(
        default=None, metadata={"help": "SFT stage dir whose 2/3 checkpoint is compared."})
    reward_model: str | None = field(default=None, metadata={"help": "Reward model dir scored on held-out pairs."})
    reward_pairs: str | None = field(
        default=None, metadata={"help": "Preference dataset whose test split it is scored on."})
    require_better: list[str] = field(
        default_factory=list, metadata={"help": "Gates 'a > b [+ margin]' on entry ids."})
    require_plateau_within: float | None = field(
        default=None, metadata={"help": "Gate: |acc(sft) − acc(sft at 2/3)| ≤ this."})
    require_reward_accuracy: float | None = field(
        default=None, metadata={"help": "Gate: reward model's held-out accuracy ≥ this."})
    win_rates: list[str] = field(
        default_factory=list, metadata={"help": "Pairs 'a vs b' of entry ids: a's win-rate over b by the judge."})
    judge_model: str | None = field(
        default=None, metadata={"help": "A reward model dir judging the win-rates (not the one optimised against)."})
    judge: str | None = field(
        default=None, metadata={"help": "Or a judge spec: llm:<model dir>, openai:<model> (hfllm.judge)."})
    judge_api_base: str | None = field(default=None, metadata={"help": "Endpoint for an openai: judge."})
    output_dir: str = field(default="task_eval", metadata={"help": "Where scores.json and replies go."})

    def __post_init__(self):
        for pair in self.win_rates:
            if not _PAIR.match(pair):
                raise ValueError(f"win_rates: {pair!r} is not 'a vs b'")
        if self.win_rates and not (self.judge or self.judge_model):
            raise ValueError("win_rates need a judge: judge_model (a reward model dir) or judge (llm:…, openai:…)")
        for gate in self.require_better:
            if not _GATE.match(gate):
                raise ValueError(f"require_better: {gate!r} is not 'a > b' or 'a > b + margin'")
        for name in self.tasks:
            if name not in TASKS:
                raise ValueError(f"unknown task {name!r} (known: {', '.join(TASKS)})")


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95 % by default)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def paired_bootstrap(a: list[bool], b: list[bool], samples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Accuracy difference a − b on the same prompts, with a percentile 95 % interval from
    resampling prompts (each prompt's pair of outcomes kept together)."""
    x = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(samples, len(x)))
    means = x[idx].mean(axis=1)
    return {"difference": float(x.mean()), "ci_low": float(np.percentile(means, 2.5)),
            "ci_high": float(np.percentile(means, 97.5)), "n": len(x)}


def entry_id(model_dir: str) -> str:
    return Path(model_dir).name


def score_model(model_dir: str | Path, prompts: list[str], tasks: list[str], args: TaskEvalArguments,
                field_name: str = "models") -> tuple[list[bool], list[str]]:
    tokenizer = load_tokenizer(str(model_dir), field=field_name)
    require_chat_template(tokenizer, str(model_dir), field=field_name)
    model = load_causal_lm(str(model_dir), field=field_name)
    replies = [r[0] for r in generate_replies(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens,
                                              batch_size=args.batch_size)]
    return [task_for_prompt(p, tasks).verify(p, r) for p, r in zip(prompts, replies)], replies


def training_prompts(names: list[str]) -> set[str]:
    """Every user prompt in every split of the given datasets (messages or prompt columns)."""
    import datasets

    found: set[str] = set()
    for name in names:
        loaded = datasets.load_from_disk(name) if Path(name).is_dir() else None
        splits = loaded.values() if isinstance(loaded, datasets.DatasetDict) else [loaded or load_split(name, "train")]
        for split in splits:
            if "messages" in split.column_names:
                found.update(prompt_text(m[:1]) for m in split["messages"])
            if "prompt" in split.column_names:
                found.update(prompt_text(p) for p in split["prompt"])
    return found


def plateau_checkpoint(sft_dir: str | Path) -> Path:
    """The SFT stage's checkpoint nearest two thirds of its steps."""
    from hfllm.alignment.sft import checkpoints
    from hfllm.pretrain import checkpoint_step

    found = checkpoints(sft_dir)
    if not found:
        raise ConfigError(f"{sft_dir} has no checkpoint: save one at two thirds of the SFT steps (save_steps)",
                          field="plateau_model")
    last = max(checkpoint_step(c) for c in found)
    return min(found, key=lambda c: abs(checkpoint_step(c) - 2 * last / 3))


def run_task_eval_stage(args: TaskEvalArguments, *, context: StageContext) -> dict[str, Any]:
    if not args.models:
        raise ConfigError("no model to evaluate", field="models")
    for name in args.tasks:
        get_task(name)
    problems = distinct_problems(args.tasks, args.num_prompts, args.seed, split="test")
    prompts = [p.prompt for p in problems]
    seen = training_prompts(args.train_datasets)
    overlap = sum(p in seen for p in prompts)

    outcomes: dict[str, list[bool]] = {}
    all_replies: dict[str, list[str]] = {}
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "replies.jsonl").open("w") as log:
        for model_dir in args.models:
            correct, replies = score_model(model_dir, prompts, args.tasks, args)
            outcomes[entry_id(model_dir)] = correct
            all_replies[entry_id(model_dir)] = replies
            for p, r, c in zip(prompts, replies, correct):
                log.write(json.dumps({"model": entry_id(model_dir), "prompt": p, "reply": r, "correct": c}) + "\n")
    plateau: dict[str, Any] | None = None
    if args.plateau_model:
        checkpoint = plateau_checkpoint(args.plateau_model)
        correct, _ = score_model(checkpoint, prompts, args.tasks, args, field_name="plateau_model")
        last = outcomes.get(entry_id(args.plateau_model))
        if last is None:
            last = score_model(args.plateau_model, prompts, args.tasks, args)[0]
        plateau = {"checkpoint": checkpoint.name, "accuracy_checkpoint": sum(correct) / len(correct),
                   "accuracy_last": sum(last) / len(last)}
        plateau["change"] = plateau["accuracy_last"] - plateau["accuracy_checkpoint"]

    scores = {}
    for name, correct in outcomes.items():
        low, high = wilson_interval(sum(correct), len(correct))
        scores[name] = {"accuracy": sum(correct) / len(correct), "ci_low": low, "ci_high": high, "n": len(correct)}
    (out_dir / SCORES).write_text(json.dumps(scores, indent=1))
    names = list(outcomes)
    # Each later model against each earlier one (the pipeline's order: what a stage added).
    differences = {f"{a} - {b}": paired_bootstrap(outcomes[a], outcomes[b], args.bootstrap_samples, args.seed)
                   for i, a in enumerate(names) for b in names[:i]}
    reward = None
    if args.reward_model and args.reward_pairs:
        from hfllm.alignment.reward import pairwise_accuracy, pairwise_scores

        tokenizer = load_tokenizer(args.reward_model, field="reward_model")
        model = load_sequence_classifier(args.reward_model, field="reward_model")
        pairs = load_split(args.reward_pairs, "test")
        reward = pairwise_accuracy(*pairwise_scores(model, tokenizer, pairs))
    judged = judge_win_rates(args, prompts, outcomes, all_replies)
    report = {"scores": scores, "differences": differences, "plateau": plateau, "reward_model": reward,
              "heldout_training_overlap": overlap, "prompts": len(prompts), "win_rates": judged}
    (out_dir / "results.json").write_text(json.dumps(report, indent=1))

    failures = gate_failures(args, scores, outcomes, plateau, reward, overlap)
    if context.is_main_process:
        write_section(context, args, scores, differences, plateau, reward, overlap, failures)
        write_win_rates(context.section, judged)
    metrics: dict[str, Any] = {f"accuracy/{k}": v["accuracy"] for k, v in scores.items()}
    metrics.update({f"difference/{k}": v["difference"] for k, v in differences.items()})
    metrics.update({"heldout_training_overlap": overlap, "prompts": len(prompts)})
    if plateau:
        metrics["sft_plateau_change"] = plateau["change"]
    if reward:
        metrics["reward_heldout_accuracy"] = reward["accuracy"]
    for pair, w in judged.items():
        metrics.update({f"win_rate/{pair}": w["win_rate"], f"lc_win_rate/{pair}": w["lc_win_rate"]})
    if failures:
        raise CheckFailed("; ".join(failures), where=str(out_dir / "results.json"))
    return metrics


def win_rate_judge(args: TaskEvalArguments):
    """The win-rates' judge: a reward model dir (its vocabulary checked against the first model's),
    else the `judge` spec."""
    from hfllm.judge import build_judge

    if args.judge_model:
        return build_judge(f"reward_model:{args.judge_model}", field="judge_model",
                           policy_tokenizer=load_tokenizer(args.models[0], field="models"))
    return build_judge(args.judge, tasks=args.tasks, api_base=args.judge_api_base)


def verifier_agreement(preference: list[float], a_right: list[bool], b_right: list[bool]) -> dict[str, Any]:
    """On the prompts where exactly one reply is right: the judge's mean preference for that one."""
    toward_right = [p if ra else 1.0 - p for p, ra, rb in zip(preference, a_right, b_right) if ra != rb]
    return {"agreement": sum(toward_right) / len(toward_right) if toward_right else float("nan"),
            "pairs": len(toward_right)}


def judge_win_rates(args: TaskEvalArguments, prompts: list[str], outcomes: dict[str, list[bool]],
                    replies: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Each `a vs b` of `win_rates`: the judge's raw and length-controlled win-rate of a over b on
    the held-out prompts (lengths in characters), its agreement with the verifier, and the
    verifier's own win-rate."""
    if not args.win_rates:
        return {}
    import evaluate

    from hfllm.evaluation.metrics import metric_path

    lc_win_rate = evaluate.load(metric_path("lc_win_rate"))  # the module users load, not a copy of its maths
    judge = win_rate_judge(args)
    out = {}
    for pair in args.win_rates:
        a, b = _PAIR.match(pair).groups()
        missing = [m for m in (a, b) if m not in replies]
        if missing:
            raise ConfigError(f"win_rates {pair!r}: no model entry {missing[0]!r} (evaluated: {', '.join(replies)})",
                              field="win_rates")
        preference = judge.compare(prompts, replies[a], replies[b])
        lengths_a, lengths_b = [len(r) for r in replies[a]], [len(r) for r in replies[b]]
        m = lc_win_rate.compute(preferences=preference, lengths_a=lengths_a, lengths_b=lengths_b, seed=args.seed)
        rates = {"n": m["n"], "length_coef": m["length_coef"], "length_explains_all": m["length_explains_all"],
                 "mean_length_a": sum(lengths_a) / len(lengths_a), "mean_length_b": sum(lengths_b) / len(lengths_b)}
        for rate in ("win_rate", "lc_win_rate"):
            rates[rate], rates[f"{rate}_ci"] = m[rate], (m[f"{rate}_ci_low"], m[f"{rate}_ci_high"])
        truth = [1.0 if ra > rb else 0.0 if rb > ra else 0.5 for ra, rb in zip(outcomes[a], outcomes[b])]
        out[f"{a} vs {b}"] = {**rates, "judge": judge.name,
                              "verifier_agreement": verifier_agreement(preference, outcomes[a], outcomes[b]),
                              "verifier_win_rate": 100.0 * sum(truth) / len(truth)}
    return out


def write_win_rates(section, judged: dict[str, dict[str, Any]]) -> None:
    if not judged:
        return
    judge = next(iter(judged.values()))["judge"]
    section.text(f"Win-rates by {judge} (each pair judged in both orders; length-controlled: AlpacaEval 2's "
                 "regression on the length difference, read at equal length; 95 % bootstrap intervals), against "
                 "the verifier's win-rate on the same replies and the judge's agreement with the verifier where "
                 "exactly one reply is right.")
    rows = []
    for pair, w in judged.items():
        agree = w["verifier_agreement"]
        rows.append([pair, f"{w['win_rate']:.1f} ({w['win_rate_ci'][0]:.1f}–{w['win_rate_ci'][1]:.1f})",
                     f"{w['lc_win_rate']:.1f} ({w['lc_win_rate_ci'][0]:.1f}–{w['lc_win_rate_ci'][1]:.1f})"
                     + (" (length alone decides)" if w["length_explains_all"] else ""),
                     f"{w['verifier_win_rate']:.1f}", f"{w['mean_length_a']:.0f} / {w['mean_length_b']:.0f}",
                     f"{agree['agreement']:.1%} of {agree['pairs']}"])
    section.table(["pair", "win-rate %", "length-controlled %", "verifier's win-rate %", "mean chars a / b",
                   "judge agrees with verifier"], rows)


def gate_failures(args, scores, outcomes, plateau, reward, overlap) -> list[str]:
    failures = []
    if overlap:
        failures.append(f"{overlap} held-out prompts appear in a training dataset")
    for gate in args.require_better:
        a, b, margin = _GATE.match(gate).groups()
        margin = float(margin or 0.0)
        if a not in outcomes or b not in outcomes:
            failures.append(f"gate {gate!r}: no model entry {a if a not in outcomes else b!r} "
                            f"(evaluated: {', '.join(outcomes)})")
            continue
        diff = paired_bootstrap(outcomes[a], outcomes[b], args.bootstrap_samples, args.seed)
        if diff["difference"] < margin or diff["ci_low"] <= 0:
            failures.append(f"{a} − {b} = {diff['difference']:+.3f} (95 % CI {diff['ci_low']:+.3f} to "
                            f"{diff['ci_high']:+.3f}), required ≥ {margin:+.3f} with the interval above 0")
    if args.require_plateau_within is not None and plateau is not None:
        if abs(plateau["change"]) > args.require_plateau_within:
            failures.append(f"SFT not at its plateau: {plateau['accuracy_last']:.3f} at the end vs "
                            f"{plateau['accuracy_checkpoint']:.3f} at {plateau['checkpoint']} "
                            f"(allowed ±{args.require_plateau_within})")
    minimum = args.require_reward_accuracy
    if minimum is not None and reward is not None and reward["accuracy"] < minimum:
        failures.append(f"reward model held-out pairwise accuracy {reward['accuracy']:.3f} < {minimum}")
    return failures


def write_section(context, args, scores, differences, plateau, reward, overlap, failures) -> None:
    section = context.section
    section.text(f"Greedy replies through each model's chat template on {args.num_prompts} held-out problems "
                 f"({', '.join(args.tasks)}), scored by the task verifier. 95 % intervals: Wilson for accuracies, "
                 f"paired bootstrap ({args.bootstrap_samples} resamples) for differences. Held-out prompts found in "
                 f"training data: {overlap}.")
    section.table(["model", "accuracy", "95 % CI", "n"],
                  [[k, f"{v['accuracy']:.1%}", f"{v['ci_low']:.1%} – {v['ci_high']:.1%}", v["n"]]
                   for k, v in scores.items()])
    if differences:
        section.table(["difference", "points", "95 % CI"],
                      [[k, f"{100 * v['difference']:+.1f}", f"{100 * v['ci_low']:+.1f} to {100 * v['ci_high']:+.1f}"]
                       for k, v in differences.items()])
    if plateau:
        section.text(f"SFT plateau: {plateau['accuracy_checkpoint']:.1%} at {plateau['checkpoint']} (two thirds "
                     "of its "
                     f"steps), {plateau['accuracy_last']:.1%} at the end ({100 * plateau['change']:+.1f} points).")
    if reward:
        section.text(f"Reward model: held-out pairwise accuracy {reward['accuracy']:.1%} on {reward['pairs']} pairs, "
                     f"mean margin {reward['margin']:.3f} — as a judge, its agreement with the verifier that "
                     "ranked those pairs.")
    section.text("Gates: " + ("all passed." if not failures else "FAILED — " + "; ".join(failures)))
