"""The evaluation stage: every model of the run on the same held-out text (bits per byte, against
the token-bigram floor, cross-checked with lm-eval's own `bits_per_byte`), on hfllm's MMLU-format
task scored three ways, on any lm-eval task, and the training text's n-gram overlap with each
evaluation set — one table across the run's models (`stages.json`).

Why bits per byte: it does not depend on the tokenizer, so models with different vocabularies
and the bigram baseline compare on it. The lm-eval tasks (the held-out text's, hfllm_mmlu's) are
written with their data into the run's `tasks/` directory, so that the same numbers come out of
`lm_eval --include_path <run>/tasks` from any directory, for any stage.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from hfllm.data.loading import check_texts, load_text_dataset
from hfllm.errors import CheckFailed, DataError
from hfllm.evaluation.bpb import TextScore, best_bigram, model_max_length
from hfllm.evaluation.contamination import ngram_overlap, overlap_table
from hfllm.evaluation.harness import HarnessRun, run_lm_eval, task_manager
from hfllm.evaluation.mmlu import (
    SCORINGS,
    TASK_FOLDER,
    MmluScores,
    score_mmlu_three_ways,
    task_texts,
    write_mmlu_task,
)
from hfllm.modeling import check_vocab, load_causal_lm, load_tokenizer
from hfllm.packing import check_tokenizer_yields_tokens
from hfllm.precision import PRECISIONS, auto_precision
from hfllm.report import TASKS_DIR, StageContext

HELDOUT_TASK = "hfllm_heldout_bpb"
STAGES_TABLE = "stages.json"  # {model entry: {task: {metric: value, …}}}, one table across the run's models
CHAT_STAGES = ("sft", "dpo", "ppo", "grpo")  # a model whose manifest names one of these is prompted as a chat model


@dataclass
class EvalArguments:
    model_name_or_path: str = field(metadata={"help": "Model dir (or Hub id) that the bigram floor, the gate and "
                                                      "the lm-eval check apply to."})
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Dataset with train/test text (the data stage's directory): held-out bits per byte, the "
                          "bigram floor and the contamination check need it; without it only lm-eval tasks run."},
    )
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
    mmlu: bool = field(
        default=False,
        metadata={"help": "Score every model on hfllm's MMLU-format task (tasks_dir/hfllm_mmlu; written there when "
                          "missing) three ways: answer letter, answer text, generation."},
    )
    mmlu_num_fewshot: int = field(default=5, metadata={"help": "Few-shot examples in each MMLU prompt."})
    mmlu_test_items: int = field(default=100, metadata={"help": "Test items per subject when this stage writes "
                                                                 "the MMLU task."})
    tasks: list[str] = field(
        default_factory=list,
        metadata={"help": "lm-eval tasks run on every model (e.g. mmlu, hellaswag, arc_easy; or a task under "
                          "tasks_dir). lm-eval's own mmlu reads cais/mmlu from the Hub."},
    )
    num_fewshot: int | None = field(default=None, metadata={"help": "Few-shot examples for `tasks` (None: each "
                                                                     "task's own)."})
    limit: int | None = field(default=None, metadata={"help": "At most this many items per lm-eval task (and per "
                                                               "MMLU subject)."})
    apply_chat_template: str = field(
        default="auto",
        metadata={"help": "Prompt through the tokenizer's chat template: auto (the models whose manifest names a "
                          f"chat stage: {', '.join(CHAT_STAGES)}), always, never."},
    )
    contamination: bool = field(
        default=False,
        metadata={"help": "Count the training split's word 13-grams shared with each evaluation set (held-out "
                          "text, MMLU items) and report them per pair."},
    )
    tasks_dir: str | None = field(
        default=None,
        metadata={"help": "The run's lm-eval task directory (default: <run>/tasks; a recipe run alone: "
                          "<output_dir>/tasks)."},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub."})
    output_dir: str = field(default="hfllm-eval", metadata={"help": "Where results are written."})

    def __post_init__(self):  # a ValueError here is the parser's one-line ConfigError, before any stage runs
        if self.apply_chat_template not in ("auto", "always", "never"):
            raise ValueError(f"apply_chat_template must be auto, always or never, got {self.apply_chat_template!r}")
        if self.dataset_name is None:
            if self.require_below_bigram is not None or self.contamination:
                raise ValueError("require_below_bigram and contamination need dataset_name (the training and "
                                 "held-out text)")
            self.bigram_baseline = self.lm_eval_check = False
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


class PartTimer:
    """Seconds spent per part of the stage, for the report's share-of-time line."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


@dataclass
class ModelResults:
    """One model's scores: held-out text, the MMLU task three ways, other lm-eval tasks."""

    path: str
    chat: bool
    heldout: TextScore | None = None
    mmlu: MmluScores | None = None
    harness: HarnessRun | None = None


def model_entries(args: EvalArguments) -> dict[str, str]:
    """`{entry: model dir}`: `model_name_or_path` first, then the other `models`; an entry is its
    directory's name, which in a run is the pipeline entry's id (with its parent's name where two
    directories share one, as `hfllm eval runA/sft runB/sft` gives)."""
    paths = [args.model_name_or_path] + [m for m in args.models or []
                                         if Path(m).resolve() != Path(args.model_name_or_path).resolve()]
    names = [Path(p).name for p in paths]
    return {(n if names.count(n) == 1 else f"{Path(p).parent.name}/{n}"): p for n, p in zip(names, paths)}


def is_chat_model(path: str, setting: str) -> bool:
    """`apply_chat_template`: always, never, or (auto) whether the model's manifest names a chat stage."""
    if setting != "auto":
        return setting == "always"
    try:
        return json.loads((Path(path) / "manifest.json").read_text()).get("stage") in CHAT_STAGES
    except (OSError, ValueError):
        return False


def mmlu_task_dir(tasks_dir: Path, args: EvalArguments, section) -> Path:
    """The run's MMLU-format task: the copy under `tasks_dir` when there is one (every evaluation
    reads the same items), else written there now (seeded, deterministic)."""
    if not (tasks_dir / TASK_FOLDER / "task.json").exists():
        write_mmlu_task(tasks_dir, n_test=args.mmlu_test_items)
        section.text(f"The MMLU-format task was written by this stage ({tasks_dir / TASK_FOLDER}).")
    return tasks_dir


@functools.cache
def bits_per_byte_metric():
    """hfllm's `evaluate` module `metrics/bits_per_byte`, loaded once from the package."""
    import evaluate

    from hfllm.evaluation.metrics import metric_path

    return evaluate.load(metric_path("bits_per_byte"))


def heldout_score(model, tokenizer, texts: list[str], batch_size: int) -> TextScore:
    """Bits per byte through hfllm's `evaluate` module: what a user loads is what the stage reports."""
    out = bits_per_byte_metric().compute(predictions=texts, model=model, tokenizer=tokenizer, batch_size=batch_size)
    return TextScore(nll_nats=out["nll_nats"], tokens=out["tokens"], bytes=out["bytes"])


def evaluate_model(path: str, args: EvalArguments, texts: list[str] | None, tasks_dir: Path, manager,
                   samples: Path, device, dtype, timer: PartTimer) -> tuple[ModelResults, Any, Any]:
    """Load one model once and run each evaluation on it (lm-eval's results and per-item samples
    under `samples`); return its results, the model and its tokenizer."""
    model, tokenizer = load_model(path, args, device, dtype, texts)
    results = ModelResults(path, is_chat_model(path, args.apply_chat_template))
    if texts:
        with timer.part("held-out bits per byte"):
            results.heldout = heldout_score(model, tokenizer, texts, args.per_device_eval_batch_size)
    if args.mmlu:
        with timer.part("MMLU three ways"):
            results.mmlu = score_mmlu_three_ways(
                model, tokenizer, tasks_dir, num_fewshot=args.mmlu_num_fewshot, chat=results.chat, limit=args.limit,
                batch_size=args.per_device_eval_batch_size, samples_dir=samples / "mmlu")
    if args.tasks:
        with timer.part("lm-eval tasks"):
            results.harness = run_lm_eval(
                model, tokenizer, list(args.tasks), include_path=tasks_dir, num_fewshot=args.num_fewshot,
                chat=results.chat, limit=args.limit, batch_size=args.per_device_eval_batch_size,
                samples_dir=samples / "tasks", manager=manager)
    return results, model, tokenizer


def run_eval_stage(args: EvalArguments, *, context: StageContext) -> dict[str, Any]:
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timer = PartTimer()
    device, dtype = evaluation_device_and_dtype(args.precision)
    tasks_dir = Path(args.tasks_dir) if args.tasks_dir else context.run_dir / TASKS_DIR
    texts, manager = prepare_tasks(args, context, tasks_dir, timer)
    results, (model, tokenizer) = evaluate_models(args, texts, tasks_dir, manager, out, device, dtype, timer)
    metrics: dict[str, Any] = {"device": device.type, "dtype": str(dtype).removeprefix("torch.")}
    rows = heldout_rows(metrics, results, texts, model, tokenizer)
    rows += primary_checks(args, metrics, texts, model, tokenizer, context.run_dir / TASKS_DIR, timer)
    if args.mmlu:
        metrics["mmlu"] = {entry: r.mmlu.to_json() for entry, r in results.items()}
    if args.tasks:
        metrics["lm_eval_truncated_docs"] = {entry: r.harness.truncated_docs for entry, r in results.items()}
    overlaps = []
    if args.contamination:
        with timer.part("contamination"):
            overlaps = contamination(args, texts, tasks_dir if args.mmlu else None)
        metrics["contamination"] = [{"train": o.train, "eval": o.eval, "n": o.n, "items": o.eval_items,
                                     "contaminated_items": o.contaminated_items, "shared_ngrams": o.shared_ngrams}
                                    for o in overlaps]
    metrics["seconds"] = {part: round(t, 2) for part, t in timer.seconds.items()}
    (out / "results.json").write_text(json.dumps(metrics, indent=1))
    table = stage_table(results, args.task_scores, args.tasks)
    (out / STAGES_TABLE).write_text(json.dumps(table, indent=1))
    if texts:
        check_bigram_margin(metrics, args.require_below_bigram, out / "results.json")
    describe(context.section, args, metrics, rows, results, table, overlaps)
    return metrics


def prepare_tasks(args: EvalArguments, context: StageContext, tasks_dir: Path, timer: PartTimer):
    """Before any model loads: the held-out text and the run's copy of its lm-eval task, the task
    names checked (a misspelt one fails here) by the task manager every model then uses (lm-eval
    indexes its own tasks once, ≈ 12 s), the MMLU-format task in place. Returns (texts, manager)."""
    tasks_dir.mkdir(parents=True, exist_ok=True)
    texts = None
    if args.dataset_name:
        with timer.part("held-out bits per byte"):
            texts = load_heldout_texts(args)
        # always written: `lm_eval --include_path <run>/tasks` gives this number for any stage's model
        write_heldout_task(texts, context.run_dir / TASKS_DIR)  # the run's own, not tasks_dir
    manager = None
    if args.tasks:
        with timer.part("lm-eval tasks"):
            manager = task_manager(list(args.tasks), tasks_dir)
    if args.mmlu:
        with timer.part("MMLU three ways"):
            mmlu_task_dir(tasks_dir, args, context.section)
    return texts, manager


def evaluate_models(args: EvalArguments, texts: list[str] | None, tasks_dir: Path, manager, out: Path, device,
                    dtype, timer: PartTimer) -> tuple[dict[str, ModelResults], tuple[Any, Any]]:
    """Every model's results `{entry: …}`, and `model_name_or_path`'s model and tokenizer (the
    floor, the gate and lm-eval's check use it)."""
    results: dict[str, ModelResults] = {}
    entries = model_entries(args)
    for entry, path in entries.items():
        results[entry], model, tokenizer = evaluate_model(path, args, texts, tasks_dir, manager,
                                                          out / "lm_eval" / entry, device, dtype, timer)
        if entry == next(iter(entries)):
            primary = (model, tokenizer)
    return results, primary


def heldout_rows(metrics: dict[str, Any], results: dict[str, ModelResults], texts: list[str] | None,
                 model, tokenizer) -> list[list[Any]]:
    """The first model's held-out numbers into `metrics`; a report row per model."""
    if not texts:
        return []
    score = next(iter(results.values())).heldout
    metrics.update(heldout_docs=len(texts), heldout_bytes=score.bytes, heldout_tokens=score.tokens,
                   bits_per_byte=score.bits_per_byte, perplexity=score.perplexity,
                   context_length=model_max_length(model, tokenizer),
                   models={entry: r.heldout.bits_per_byte for entry, r in results.items()})
    return [[entry, r.heldout.bits_per_byte, "—" if r.chat else r.heldout.perplexity] for entry, r in results.items()]


def primary_checks(args: EvalArguments, metrics: dict[str, Any], texts: list[str] | None, model, tokenizer,
                   heldout_dir: Path, timer: PartTimer) -> list[list[Any]]:
    """For the first model only: the bigram floor (a report row) and lm-eval's own bits per byte."""
    rows = []
    if args.bigram_baseline:
        with timer.part("bigram floor"):
            k, bigram, fit_bytes = bigram_floor(args, tokenizer, texts)
        metrics.update(bigram_bits_per_byte=bigram.bits_per_byte, bigram_k=k, bigram_train_bytes=fit_bytes,
                       bpb_vs_bigram=metrics["bits_per_byte"] / bigram.bits_per_byte - 1)
        rows.append([f"token bigram, add-{k:g}", bigram.bits_per_byte, bigram.perplexity])
    if args.lm_eval_check:
        with timer.part("lm-eval bits-per-byte check"):
            lm_bpb = lm_eval_bits_per_byte(model, tokenizer, heldout_dir, args.per_device_eval_batch_size)
        metrics.update(lm_eval_bits_per_byte=lm_bpb, lm_eval_abs_diff=abs(lm_bpb - metrics["bits_per_byte"]))
    return rows


def contamination(args: EvalArguments, texts: list[str], mmlu_dir: Path | None):
    """Word 13-gram overlap of the training split with each evaluation set, per pair."""
    train = load_text_dataset(args.dataset_name, args.dataset_train_split, text_field=args.dataset_text_field,
                              config=args.dataset_config)
    eval_sets = {"held-out text": texts}
    if mmlu_dir is not None:
        eval_sets["hfllm_mmlu test"] = task_texts(mmlu_dir, "test")
        eval_sets["hfllm_mmlu dev (few-shot)"] = task_texts(mmlu_dir, "dev")
    return ngram_overlap({f"{Path(args.dataset_name).name} ({args.dataset_train_split})":
                          train[args.dataset_text_field]}, eval_sets)


def harness_metrics(task_results: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's `{"acc,none": …, "acc_stderr,none": …}` as `{"acc": …, "acc_stderr": …, "stderr": …}`:
    a metric named with its filter where that is not `none`, `stderr` the first metric's."""
    values: dict[str, Any] = {}
    for key, value in task_results.items():
        if "," not in key or isinstance(value, str):
            continue  # "alias", and "N/A" stderrs
        metric, _, filter_name = key.partition(",")
        values[metric if filter_name == "none" else f"{metric},{filter_name}"] = value
    first = next((k for k in values if "_stderr" not in k), None)
    stderr_key = first.replace(",", "_stderr,", 1) if first and "," in first else f"{first}_stderr"
    if first is not None and stderr_key in values:
        values["stderr"] = values[stderr_key]
    return values


def stage_table(results: dict[str, ModelResults], task_scores: str | None,
                tasks: list[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """One table across the run's models: each entry's held-out bits per byte (perplexity for
    pretraining-style models only), its MMLU accuracies by each scoring, its lm-eval tasks and, from
    a task_eval stage's `scores.json` (read, not recomputed), its task accuracy with the binomial
    standard error."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for entry, r in results.items():
        row = table.setdefault(entry, {})
        if r.heldout is not None:
            row[HELDOUT_TASK] = {"bits_per_byte": r.heldout.bits_per_byte}
            if not r.chat:
                row[HELDOUT_TASK]["perplexity"] = r.heldout.perplexity
        if r.mmlu is not None:
            for scoring, group in SCORINGS.items():
                if scoring in r.mmlu.scorings:
                    sc = r.mmlu.scorings[scoring]
                    row[group] = {"accuracy": sc.accuracy, "stderr": sc.stderr, "n": sc.n,
                                  "truncated_items": sc.truncated_items}
        if r.harness is not None:
            for task in tasks or []:
                if task in r.harness.results:  # beside hfllm's own numbers for the task, if any
                    row[task] = {**row.get(task, {}), **harness_metrics(r.harness.results[task])}
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


def describe(section, args: EvalArguments, metrics: dict[str, Any], rows: list[list[Any]],
             results: dict[str, ModelResults], table: dict[str, dict[str, dict[str, Any]]], overlaps) -> None:
    if rows:
        section.text(
            f"Held-out text: {metrics['heldout_docs']} documents, {metrics['heldout_bytes']:,} bytes, scored on "
            f"{metrics['device']} in {metrics['dtype']}. Bits per byte = total NLL in bits / UTF-8 bytes "
            "(tokenizer-independent); perplexity = exp(mean token NLL in nats), token-level, so comparable only "
            "between models that share a tokenizer, and shown for pretraining-style models only (a chat model's "
            "perplexity on web text says little about its replies)."
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
    if args.mmlu:
        describe_mmlu(section, args, results)
    if args.tasks or args.task_scores:
        describe_tasks(section, args, table)
    if overlaps:
        section.text("Contamination: word 13-grams (lower-cased) of each evaluation set found in the training text; "
                     "an item counts when it shares at least one.")
        section.table(*overlap_table(overlaps))
    total = sum(metrics["seconds"].values())
    section.text("Time by part: " + ", ".join(f"{part} {t:.0f} s ({t / total:.0%})"
                                               for part, t in metrics["seconds"].items()) + ".")


def describe_mmlu(section, args: EvalArguments, results: dict[str, ModelResults]) -> None:
    """The three scorings side by side per model, with how often they pick different answers."""
    section.text(
        f"hfllm's MMLU-format task ({args.mmlu_num_fewshot}-shot), the same items scored three ways: the "
        "log-likelihood of the answer letter (MMLU's own and lm-eval's `mmlu`), of the answer's full text "
        "(the older harness's), and greedy generation with the first letter taken (HELM's). Chance is 25 %; "
        "'truncated' counts items whose prompt was cut on the left to fit the context.")
    rows = []
    for entry, r in results.items():
        sc = r.mmlu.scorings
        rows.append([entry + (" (chat)" if r.chat else "")]
                    + [f"{sc[k].accuracy:.1%} ± {sc[k].stderr or 0:.1%}" for k in SCORINGS]
                    + [f"{r.mmlu.disagreement[pair]:.0%}" for pair in r.mmlu.disagreement]
                    + [max(s.truncated_items for s in sc.values()), sc["generation"].invalid])
    pairs = list(next(iter(results.values())).mmlu.disagreement)
    section.table(["model", "letter", "text", "generation"] + [f"{p} differ" for p in pairs]
                  + ["truncated", "no letter"], rows)
    spread = [max(s.accuracy for s in r.mmlu.scorings.values()) - min(s.accuracy for s in r.mmlu.scorings.values())
              for r in results.values()]
    section.text(f"The scorings' accuracies differ by up to {max(spread) * 100:.1f} percentage points on the same "
                 "items and model.")


def describe_tasks(section, args: EvalArguments, table: dict[str, dict[str, dict[str, Any]]]) -> None:
    """lm-eval tasks and task_eval's accuracy across the run's models (first metric of each task)."""
    columns = list(args.tasks) + (["task_eval"] if args.task_scores else [])
    rows = []
    for entry, row in table.items():
        cells = []
        for task in columns:
            values = row.get(task)
            if not values:
                cells.append("—")
                continue
            metric = next(k for k in values if "stderr" not in k)
            cells.append(f"{values[metric]:.3f} ± {values.get('stderr') or 0:.3f} ({metric})")
        rows.append([entry] + cells)
    section.table(["model"] + columns, rows)
