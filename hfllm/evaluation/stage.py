"""The evaluation stage: held-out bits per byte of one or more model directories on the same text,
against the token-bigram floor, cross-checked with lm-eval's own `bits_per_byte`.

Why bits per byte: it does not depend on the tokenizer, so models with different vocabularies
and the bigram baseline compare on it. The lm-eval task it is checked against is written with
its data into the run's `tasks/` directory, so that the same number comes out of
`lm_eval --include_path <run>/tasks` from any directory, for any stage.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from hfllm.data.loading import check_texts, load_text_dataset
from hfllm.errors import CheckFailed, DataError
from hfllm.evaluation.bpb import TextScore, best_bigram, model_max_length, score_texts
from hfllm.modeling import check_vocab, load_causal_lm, load_tokenizer
from hfllm.packing import check_tokenizer_yields_tokens
from hfllm.precision import PRECISIONS, auto_precision
from hfllm.report import StageContext

HELDOUT_TASK = "hfllm_heldout_bpb"
STAGES_TABLE = "stages.json"  # {model entry: {task: {metric: value, …}}}, one table across the run's models
TASKS_DIR = "tasks"  # under the run directory


@dataclass
class EvalArguments:
    model_name_or_path: str = field(metadata={"help": "Model dir (or Hub id) that the bigram floor, the gate and "
                                                      "the lm-eval check apply to."})
    dataset_name: str = field(metadata={"help": "Dataset with train/test text (the data stage's directory)."})
    models: list[str] | None = field(
        default=None,
        metadata={"help": "Every model dir to score on the same held-out text (default: model_name_or_path). The "
                          "pipeline passes each earlier model entry; the report names them by directory."},
    )
    task_scores: str | None = field(
        default=None,
        metadata={"help": "A task_eval stage's directory: its scores.json joins stages.json as it is (not "
                          "recomputed). The pipeline passes an earlier task_eval entry."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Text the bigram baseline is fitted on."})
    dataset_test_split: str = field(default="test", metadata={"help": "Held-out text to score."})
    dataset_text_field: str = field(default="text", metadata={"help": "Column holding the text."})
    max_eval_docs: int | None = field(default=None, metadata={"help": "Score at most this many held-out docs."})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Windows per forward pass."})
    precision: str = field(
        default="auto",
        metadata={"help": "auto: on a GPU the training precision rule's (bf16, else fp16); on the CPU fp32, exact "
                          "sums being cheap there. Or bf16, fp16, fp32."},
    )
    bigram_baseline: bool = field(default=True, metadata={"help": "Also score an add-k token bigram model."})
    bigram_max_train_bytes: int | None = field(
        default=50_000_000,
        metadata={"help": "Fit the bigram on at most this much training text (pure-Python counts)."},
    )
    require_below_bigram: float | None = field(
        default=None,
        metadata={"help": "Fail the stage (exit 2, results.json still written) unless the model's bits per byte "
                          "are at least this fraction below the bigram floor's (0.1 = 10 %)."},
    )
    lm_eval_check: bool = field(default=True, metadata={"help": f"Cross-check bpb with lm-eval's {HELDOUT_TASK}."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub."})
    output_dir: str = field(default="hfllm-eval", metadata={"help": "Where results are written."})

    def __post_init__(self):  # a ValueError here is the parser's one-line ConfigError, before any stage runs
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.require_below_bigram is not None and not self.bigram_baseline:
            raise ValueError("require_below_bigram needs bigram_baseline: true")
        if self.require_below_bigram is not None and not self.require_below_bigram < 1:
            raise ValueError(f"require_below_bigram must be below 1 (a fraction of the bigram floor), "
                             f"got {self.require_below_bigram}")


def evaluation_device_and_dtype(precision: str) -> tuple[torch.device, torch.dtype]:
    """The accelerator when there is one, in the precision training would use there."""
    if torch.cuda.is_available():
        chosen = auto_precision() if precision == "auto" else precision
        return torch.device("cuda"), {"bf16": torch.bfloat16, "fp16": torch.float16}.get(chosen, torch.float32)
    chosen = "fp32" if precision == "auto" else precision
    return torch.device("cpu"), {"bf16": torch.bfloat16, "fp16": torch.float16}.get(chosen, torch.float32)


def write_heldout_task(texts: list[str], tasks_dir: Path) -> Path:
    """The run's copy of the held-out bits-per-byte task: the package's template with the path of
    the text exported beside it (absolute, so lm_eval finds it from any working directory)."""
    tasks_dir.mkdir(parents=True, exist_ok=True)
    data = tasks_dir / f"{HELDOUT_TASK}.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    template = resources.files("hfllm.evaluation").joinpath("tasks", f"{HELDOUT_TASK}.yaml").read_text()
    (tasks_dir / f"{HELDOUT_TASK}.yaml").write_text(template.replace("HELDOUT_JSONL", str(data.resolve())))
    return tasks_dir


def lm_eval_bits_per_byte(model, tokenizer, tasks_dir: str | Path, batch_size: int = 8) -> float:
    """lm-eval's `bits_per_byte` for `model` on the held-out task written into `tasks_dir`."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = simple_evaluate(model=lm, tasks=[HELDOUT_TASK], task_manager=TaskManager(include_path=str(tasks_dir)),
                          log_samples=False, verbosity="ERROR")
    return float(out["results"][HELDOUT_TASK]["bits_per_byte,none"])


def check_bigram_margin(metrics: dict[str, Any], required: float | None, results: Path) -> None:
    """The quality gate: raise unless bits per byte are at least `required` below the bigram floor.

    Raised after results.json is written (the numbers stay for the user to read) and before the
    manifest is, so a re-run evaluates again instead of skipping a stage that failed its gate.
    """
    if required is None:
        return
    below = -metrics["bpb_vs_bigram"]
    if below < required:
        raise CheckFailed(
            f"the model's {metrics['bits_per_byte']:.4f} bits per byte are {below:.1%} below the bigram floor's "
            f"{metrics['bigram_bits_per_byte']:.4f}, short of the {required:.0%} required (numbers in {results})",
            field="require_below_bigram",
        )


def load_heldout_texts(args: EvalArguments) -> list[str]:
    test = load_text_dataset(args.dataset_name, args.dataset_test_split, text_field=args.dataset_text_field,
                             config=args.dataset_config)
    check_texts(test, args.dataset_text_field, args.dataset_name)
    return list(test[args.dataset_text_field])[: args.max_eval_docs]


def load_model(name: str, args: EvalArguments, device: torch.device, dtype: torch.dtype,
               texts: list[str] | None = None):
    """The model and its tokenizer, checked to match each other (and to tokenize `texts`)."""
    tokenizer = load_tokenizer(name, field="model_name_or_path", trust_remote_code=args.trust_remote_code)
    check_tokenizer_yields_tokens(tokenizer, (texts or [])[:100], field="model_name_or_path")
    model = load_causal_lm(name, field="model_name_or_path", trust_remote_code=args.trust_remote_code)
    check_vocab(model, tokenizer, name, field="model_name_or_path")
    return model.to(device=device, dtype=dtype), tokenizer


def bigram_floor(args: EvalArguments, tokenizer, texts: list[str]) -> tuple[float, TextScore, int]:
    """The add-k token bigram fitted on (at most `bigram_max_train_bytes` of) the training text:
    (k, its score on `texts`, bytes fitted on)."""
    train = load_text_dataset(args.dataset_name, args.dataset_train_split, text_field=args.dataset_text_field,
                              config=args.dataset_config)
    fit_texts, fit_bytes = [], 0
    for t in train[args.dataset_text_field]:
        if args.bigram_max_train_bytes is not None and fit_bytes >= args.bigram_max_train_bytes:
            break
        fit_texts.append(t)
        fit_bytes += len(t.encode("utf-8"))
    k, score = best_bigram(tokenizer, fit_texts, texts)
    return k, score, fit_bytes


def run_eval_stage(args: EvalArguments, *, context: StageContext) -> dict[str, Any]:
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device, dtype = evaluation_device_and_dtype(args.precision)
    texts = load_heldout_texts(args)
    model, tokenizer = load_model(args.model_name_or_path, args, device, dtype, texts)
    score = score_texts(model, tokenizer, texts, batch_size=args.per_device_eval_batch_size)
    metrics: dict[str, Any] = {
        "heldout_docs": len(texts),
        "heldout_bytes": score.bytes,
        "heldout_tokens": score.tokens,
        "bits_per_byte": score.bits_per_byte,
        "perplexity": score.perplexity,
        "context_length": model_max_length(model, tokenizer),
        "device": device.type,
        "dtype": str(dtype).removeprefix("torch."),
    }
    scores = score_models(args, texts, device, dtype, primary=score)
    rows = [[entry, s.bits_per_byte, s.perplexity] for entry, s in scores.items()]
    metrics["models"] = {entry: s.bits_per_byte for entry, s in scores.items()}
    if args.bigram_baseline:
        k, bigram, fit_bytes = bigram_floor(args, tokenizer, texts)
        metrics.update(bigram_bits_per_byte=bigram.bits_per_byte, bigram_k=k, bigram_train_bytes=fit_bytes,
                       bpb_vs_bigram=score.bits_per_byte / bigram.bits_per_byte - 1)
        rows.append([f"token bigram, add-{k:g}", bigram.bits_per_byte, bigram.perplexity])
    # always written: `lm_eval --include_path <run>/tasks` gives this number for any stage's model
    tasks_dir = write_heldout_task(texts, context.run_dir / TASKS_DIR)
    if args.lm_eval_check:
        lm_bpb = lm_eval_bits_per_byte(model, tokenizer, tasks_dir, args.per_device_eval_batch_size)
        metrics.update(lm_eval_bits_per_byte=lm_bpb, lm_eval_abs_diff=abs(lm_bpb - score.bits_per_byte))
    (out / "results.json").write_text(json.dumps(metrics, indent=1))
    table = stage_table(scores, args.task_scores)
    (out / STAGES_TABLE).write_text(json.dumps(table, indent=1))
    check_bigram_margin(metrics, args.require_below_bigram, out / "results.json")
    describe(context.section, args, metrics, rows)
    if args.task_scores:
        context.section.table(["model", "bits per byte", "task accuracy (task_eval)"],
                              [[entry, t.get(HELDOUT_TASK, {}).get("bits_per_byte", "—"),
                                f"{t['task_eval']['accuracy']:.1%} ± {t['task_eval']['stderr']:.1%}"
                                if "task_eval" in t else "—"] for entry, t in table.items()])
    return metrics


def stage_table(scores: dict[str, TextScore], task_scores: str | None) -> dict[str, dict[str, dict[str, Any]]]:
    """One table across the run's models: each entry's held-out bits per byte and, from a task_eval
    stage's `scores.json` (read, not recomputed), its task accuracy with the binomial standard error."""
    table: dict[str, dict[str, dict[str, Any]]] = {
        entry: {HELDOUT_TASK: {"bits_per_byte": s.bits_per_byte, "perplexity": s.perplexity}}
        for entry, s in scores.items()}
    if task_scores:
        path = Path(task_scores) / "scores.json"
        try:
            accuracies = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read the task scores ({err.__class__.__name__}: has task_eval run?)",
                            where=str(path), field="task_scores") from None
        for entry, score in accuracies.items():
            p, n = score["accuracy"], score["n"]
            table.setdefault(entry, {})["task_eval"] = {
                "accuracy": p, "stderr": math.sqrt(p * (1 - p) / n) if n else float("nan"),
                "ci_low": score["ci_low"], "ci_high": score["ci_high"], "n": n}
    return table


def score_models(args: EvalArguments, texts: list[str], device, dtype, primary: TextScore) -> dict[str, TextScore]:
    """Every model of `models` (else just `model_name_or_path`) on the same text, `{entry: score}`;
    an entry is its directory's name, which in a run is the pipeline entry's id."""
    scores = {}
    for name in args.models or [args.model_name_or_path]:
        if Path(name).resolve() == Path(args.model_name_or_path).resolve():
            scores[Path(name).name] = primary
            continue
        model, tokenizer = load_model(name, args, device, dtype, texts)
        scores[Path(name).name] = score_texts(model, tokenizer, texts, batch_size=args.per_device_eval_batch_size)
    return scores


def describe(section, args: EvalArguments, metrics: dict[str, Any], rows: list[list[Any]]) -> None:
    section.text(
        f"Held-out text: {metrics['heldout_docs']} documents, {metrics['heldout_bytes']:,} bytes, scored on "
        f"{metrics['device']} in {metrics['dtype']}. Bits per byte = total NLL in bits / UTF-8 bytes "
        "(tokenizer-independent); perplexity = exp(mean token NLL in nats), token-level, so comparable only "
        "between models that share a tokenizer."
    )
    section.table(["model", "bits per byte", "perplexity"], rows)
    if args.bigram_baseline:
        rel = metrics["bpb_vs_bigram"]
        gate = "" if args.require_below_bigram is None else f" (at least {args.require_below_bigram:.0%} required)"
        section.text(f"The model's bits per byte are {abs(rel):.1%} {'below' if rel < 0 else 'ABOVE'} the "
                     f"bigram floor's{gate}.")
    if args.lm_eval_check:
        section.text(f"lm-eval `{HELDOUT_TASK}` bits_per_byte: {metrics['lm_eval_bits_per_byte']:.5f} "
                     f"(|Δ| = {metrics['lm_eval_abs_diff']:.1e}).")
