"""The evaluation stage: held-out bits per byte of a model directory, against the bigram floor,
cross-checked with lm-eval's own `bits_per_byte` on the same text."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfllm.data.loading import check_texts, load_text_dataset
from hfllm.errors import CheckFailed
from hfllm.evaluation.bpb import best_bigram, model_max_length, score_texts
from hfllm.modeling import check_vocab, load_causal_lm, load_tokenizer
from hfllm.report import Section, StageResult

EVAL_TASKS_DIR = Path(__file__).resolve().parents[2] / "eval_tasks"
HELDOUT_TASK = "hfllm_heldout_bpb"


@dataclass
class EvalArguments:
    model_name_or_path: str = field(default="runs/demo/pretrain", metadata={"help": "Model dir (or Hub id) to evaluate."})
    dataset_name: str = field(default="runs/demo/data", metadata={"help": "Dataset with train/test text."})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Text the bigram baseline is fitted on."})
    dataset_test_split: str = field(default="test", metadata={"help": "Held-out text to score."})
    dataset_text_field: str = field(default="text", metadata={"help": "Column holding the text."})
    max_eval_docs: int | None = field(default=None, metadata={"help": "Score at most this many held-out docs."})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Windows per forward pass."})
    bigram_baseline: bool = field(default=True, metadata={"help": "Also score an add-k token bigram model."})
    bigram_max_train_bytes: int | None = field(
        default=50_000_000, metadata={"help": "Fit the bigram on at most this much training text (pure-Python counts)."}
    )
    require_below_bigram: float | None = field(
        default=None,
        metadata={"help": "Fail the stage (exit 2, results.json still written) unless the model's bits per byte are at "
                          "least this fraction below the bigram floor's (0.1 = 10 %)."},
    )
    lm_eval_check: bool = field(default=True, metadata={"help": f"Cross-check bpb with lm-eval's {HELDOUT_TASK}."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub."})
    output_dir: str = field(default="runs/demo/eval", metadata={"help": "Where results are written."})

    def __post_init__(self):  # a ValueError here is the parser's one-line ConfigError, before any stage runs
        if self.require_below_bigram is not None and not self.bigram_baseline:
            raise ValueError("require_below_bigram needs bigram_baseline: true")
        if self.require_below_bigram is not None and not self.require_below_bigram < 1:
            raise ValueError(f"require_below_bigram must be below 1 (a fraction of the bigram floor), "
                             f"got {self.require_below_bigram}")


def lm_eval_bits_per_byte(model, tokenizer, heldout_jsonl: str | Path, batch_size: int = 8) -> float:
    """lm-eval's `bits_per_byte` for `model` on a jsonl of `{"text": …}` rows (task in eval_tasks/)."""
    import yaml
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    task = yaml.safe_load((EVAL_TASKS_DIR / f"{HELDOUT_TASK}.yaml").read_text())
    task["dataset_kwargs"] = {"data_files": {"test": str(Path(heldout_jsonl).resolve())}}
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = simple_evaluate(model=lm, tasks=[task], task_manager=TaskManager(include_path=str(EVAL_TASKS_DIR)),
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


def run_eval_stage(args: EvalArguments) -> StageResult:
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(args.model_name_or_path, field="model_name_or_path", trust_remote_code=args.trust_remote_code)
    model = load_causal_lm(args.model_name_or_path, field="model_name_or_path", trust_remote_code=args.trust_remote_code)
    check_vocab(model, tokenizer, args.model_name_or_path, field="model_name_or_path")
    test = load_text_dataset(args.dataset_name, args.dataset_test_split, text_field=args.dataset_text_field, config=args.dataset_config)
    check_texts(test, args.dataset_text_field, args.dataset_name)
    texts = list(test[args.dataset_text_field])[: args.max_eval_docs]
    heldout = out / "heldout.jsonl"
    heldout.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))

    score = score_texts(model, tokenizer, texts, batch_size=args.per_device_eval_batch_size)
    metrics: dict[str, Any] = {
        "heldout_docs": len(texts),
        "heldout_bytes": score.bytes,
        "heldout_tokens": score.tokens,
        "bits_per_byte": score.bits_per_byte,
        "perplexity": score.perplexity,
        "context_length": model_max_length(model, tokenizer),
    }
    rows = [["model", score.bits_per_byte, score.perplexity]]
    if args.bigram_baseline:
        train = load_text_dataset(args.dataset_name, args.dataset_train_split, text_field=args.dataset_text_field, config=args.dataset_config)
        fit_texts, fit_bytes = [], 0
        for t in train[args.dataset_text_field]:
            if args.bigram_max_train_bytes is not None and fit_bytes >= args.bigram_max_train_bytes:
                break
            fit_texts.append(t)
            fit_bytes += len(t.encode("utf-8"))
        k, bigram = best_bigram(tokenizer, fit_texts, texts)
        metrics.update(bigram_bits_per_byte=bigram.bits_per_byte, bigram_k=k, bigram_train_bytes=fit_bytes,
                       bpb_vs_bigram=score.bits_per_byte / bigram.bits_per_byte - 1)
        rows.append([f"token bigram, add-{k:g}", bigram.bits_per_byte, bigram.perplexity])
    if args.lm_eval_check:
        lm_bpb = lm_eval_bits_per_byte(model, tokenizer, heldout, args.per_device_eval_batch_size)
        metrics.update(lm_eval_bits_per_byte=lm_bpb, lm_eval_abs_diff=abs(lm_bpb - score.bits_per_byte))
    (out / "results.json").write_text(json.dumps(metrics, indent=1))
    check_bigram_margin(metrics, args.require_below_bigram, out / "results.json")

    section = Section("eval", "Evaluation")
    section.text(
        f"Held-out text: {len(texts)} documents, {score.bytes:,} bytes. Bits per byte = total NLL in bits / "
        "UTF-8 bytes (tokenizer-independent); perplexity = exp(mean token NLL in nats)."
    )
    section.table(["model", "bits per byte", "perplexity"], rows)
    if args.bigram_baseline:
        rel = metrics["bpb_vs_bigram"]
        gate = "" if args.require_below_bigram is None else f" (at least {args.require_below_bigram:.0%} required)"
        section.text(f"The model's bits per byte are {abs(rel):.1%} {'below' if rel < 0 else 'ABOVE'} the bigram floor's{gate}.")
    if args.lm_eval_check:
        section.text(f"lm-eval `{HELDOUT_TASK}` bits_per_byte: {metrics['lm_eval_bits_per_byte']:.5f} "
                     f"(|Δ| = {metrics['lm_eval_abs_diff']:.1e}).")
    return StageResult(metrics=metrics, section=section)
