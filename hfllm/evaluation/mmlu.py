"""hfllm's MMLU-format task, and MMLU scored three ways on the same items.

lm-eval's built-in `mmlu` reads `cais/mmlu` from the Hub (and fails offline even when cached,
lm-eval #2394), so it stays the real-run default; offline, `write_mmlu_task` writes the same
format over questions generated from the embedded corpus (`hfllm.evaluation.python_questions`):

    <task_dir>/hfllm_mmlu/
      data/<subject>_dev.jsonl, data/<subject>_test.jsonl   {"subject", "question", "choices" (4), "answer" (0–3)}
      _letter_template_yaml, _text_template_yaml, _generation_template_yaml   (package data, copied)
      hfllm_mmlu_<subject>.yaml, hfllm_mmlu_text_<subject>.yaml, hfllm_mmlu_gen_<subject>.yaml
      hfllm_mmlu.yaml, hfllm_mmlu_text.yaml, hfllm_mmlu_gen.yaml   groups: size-weighted means
      task.json   seed, item counts, fingerprint of the data files

The task YAMLs hold absolute data paths, so `lm_eval --model hf --model_args pretrained=<model dir>
--include_path <task_dir> --tasks hfllm_mmlu` works from any directory.

The three scorings are the harness conventions behind LLaMA-65B's 63.7 on HELM against 48.8 on
another harness (the seed):
- `letter` (`hfllm_mmlu`): the log-likelihood of each answer letter after the question and its
  lettered choices — MMLU's original implementation and lm-eval's `mmlu`;
- `text` (`hfllm_mmlu_text`): the log-likelihood of each choice's full text after the question
  alone — lm-eval's `mmlu_continuation`, the older harness's way;
- `generation` (`hfllm_mmlu_gen`): greedy generation after the lettered prompt, the first
  standalone letter of the reply taken as the answer — HELM's way.
`score_mmlu_three_ways` runs all three in one `simple_evaluate` on the same test items and reports
each one's accuracy and standard error, how often two scorings pick different answers, and how many
items were scored on a prompt cut to fit the model's context.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hfllm.errors import DataError
from hfllm.evaluation.python_questions import LETTERS, SUBJECT_DESCRIPTIONS, SUBJECTS, multiple_choice_items

if TYPE_CHECKING:  # lm-eval is imported where items are scored, not where they are written (the data stage)
    from hfllm.evaluation.harness import HarnessRun

TASK_FOLDER = "hfllm_mmlu"
SCORINGS = {"letter": "hfllm_mmlu", "text": "hfllm_mmlu_text", "generation": "hfllm_mmlu_gen"}
TEMPLATES = {scoring: f"_{scoring}_template_yaml" for scoring in SCORINGS}
# lm-eval's result key of each scoring's accuracy ("metric,filter").
METRICS = {"letter": "acc,none", "text": "acc,none", "generation": "exact_match,extract_letter"}
INVALID = "[invalid]"  # the generation scoring's answer when the reply names no letter


@dataclass
class MmluTask:
    """A written task: where it is, what it holds, and a fingerprint of its data."""

    directory: Path  # <task_dir>/hfllm_mmlu
    seed: int
    counts: dict[str, dict[str, int]]  # subject → {"dev": n, "test": n}
    fingerprint: str
    groups: dict[str, str] = field(default_factory=lambda: dict(SCORINGS))

    def data_file(self, subject: str, split: str) -> Path:
        return self.directory / "data" / f"{subject}_{split}.jsonl"

    def task_name(self, scoring: str, subject: str) -> str:
        return f"{SCORINGS[scoring]}_{subject}"


def _description(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {SUBJECT_DESCRIPTIONS[subject]}.\n\n"


def _fingerprint(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def _write_yaml(path: Path, header: str, content: dict[str, Any]) -> None:
    path.write_text(f"# {header}\n" + yaml.safe_dump(content, sort_keys=False, allow_unicode=True, width=1000))


def write_mmlu_task(task_dir: str | Path, *, seed: int = 0, n_dev: int = 5, n_test: int = 100,
                    subjects: tuple[str, ...] = SUBJECTS) -> MmluTask:
    """Generate the items (seeded) and write data, task YAMLs and groups under `<task_dir>/hfllm_mmlu`.

    Each subject's first `n_dev` items are its few-shot examples, the next `n_test` (or fewer,
    when the corpus has fewer) its test items. An earlier `hfllm_mmlu` folder there is replaced.
    """
    items = multiple_choice_items(seed, subjects)
    folder = Path(task_dir).resolve() / TASK_FOLDER
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "data").mkdir(parents=True)
    for template in TEMPLATES.values():
        (folder / template).write_text((files("hfllm.evaluation") / "tasks" / TASK_FOLDER / template).read_text())
    task = MmluTask(folder, seed, {}, "")
    for subject in subjects:
        splits = {"dev": items[subject][:n_dev], "test": items[subject][n_dev : n_dev + n_test]}
        for split, rows in splits.items():
            task.data_file(subject, split).write_text("".join(json.dumps(r.to_row()) + "\n" for r in rows))
        task.counts[subject] = {split: len(rows) for split, rows in splits.items()}
        data_files = {split: str(task.data_file(subject, split)) for split in splits}
        for scoring, template in TEMPLATES.items():
            _write_yaml(folder / f"{task.task_name(scoring, subject)}.yaml",
                        f"Written by hfllm.evaluation.mmlu (seed {seed}): {subject}, scored by {scoring}.",
                        {"include": template, "task": task.task_name(scoring, subject), "task_alias": subject,
                         "dataset_kwargs": {"data_files": data_files}, "description": _description(subject)})
    for scoring, group in SCORINGS.items():
        metric, _, filter_name = METRICS[scoring].partition(",")
        aggregate = {"metric": metric, "weight_by_size": True}
        if filter_name != "none":
            aggregate["filter_list"] = filter_name
        _write_yaml(folder / f"{group}.yaml", f"Written by hfllm.evaluation.mmlu: every subject, scored by {scoring}.",
                    {"group": group, "task": [task.task_name(scoring, s) for s in subjects],
                     "aggregate_metric_list": [aggregate], "metadata": {"version": 1.0}})
    task.fingerprint = _fingerprint(sorted((folder / "data").glob("*.jsonl")))
    meta = {"seed": seed, "counts": task.counts, "fingerprint": task.fingerprint}
    (folder / "task.json").write_text(json.dumps(meta, indent=1))
    return task


def _row_problem(row: Any) -> str | None:
    if not isinstance(row, dict):
        return "not an object"
    if not isinstance(row.get("question"), str) or not row["question"].strip():
        return "question is missing or empty"
    choices = row.get("choices")
    if not (isinstance(choices, list) and len(choices) == 4 and all(isinstance(c, str) for c in choices)):
        return "choices is not a list of 4 strings"
    answer = row.get("answer")
    if not (isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < 4):
        return "answer is not an integer 0–3"
    return None


def read_items(path: str | Path) -> list[dict[str, Any]]:
    """The rows of one data file, each checked: a question, four string choices, an answer 0–3."""
    rows = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise DataError(f"cannot read the task data ({err.strerror})", where=str(path)) from None
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"row {number}: not JSON ({err.msg})", where=str(path)) from None
        problem = _row_problem(row)
        if problem:
            raise DataError(f"row {number}: {problem}", where=str(path))
        rows.append(row)
    return rows


def load_mmlu_task(task_dir: str | Path) -> MmluTask:
    """The task written under `task_dir`, its data files checked row by row (`DataError` naming file and row)."""
    folder = Path(task_dir).resolve() / TASK_FOLDER
    meta_path = folder / "task.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"no readable task.json ({err}); write the task with hfllm.evaluation.mmlu.write_mmlu_task",
                        where=str(meta_path)) from None
    task = MmluTask(folder, meta["seed"], meta["counts"], meta["fingerprint"])
    for subject, counts in task.counts.items():
        for split, n in counts.items():
            path = task.data_file(subject, split)
            rows = len(read_items(path))
            if rows != n:
                raise DataError(f"{rows} rows, task.json says {n}", where=str(path))
        config = yaml.safe_load((folder / f"{task.task_name('letter', subject)}.yaml").read_text())
        if Path(config["dataset_kwargs"]["data_files"]["test"]) != task.data_file(subject, "test"):
            raise DataError("the task YAMLs point at another folder (the task was moved): write it again",
                            where=str(folder / f"{task.task_name('letter', subject)}.yaml"), field="data_files")
    return task


def task_texts(task_dir: str | Path, split: str = "test") -> list[str]:
    """Each item as the text a contamination check looks for: the question and its right answer."""
    task = load_mmlu_task(task_dir)
    return [f"{row['question']} {row['choices'][row['answer']]}"
            for subject in task.counts for row in read_items(task.data_file(subject, split))]


# ---------------------------------------------------------------------------------------------
# Three scorings


@dataclass
class Scoring:
    accuracy: float
    stderr: float | None
    n: int
    truncated_items: int  # test items whose prompt was cut on the left to fit the context
    invalid: int = 0  # generation: replies in which no answer letter was found


@dataclass
class MmluScores:
    scorings: dict[str, Scoring]
    by_subject: dict[str, dict[str, float]]  # scoring → subject → accuracy
    disagreement: dict[str, float]  # "letter/text" → fraction of items the two answer differently
    predictions: dict[str, dict[str, int | None]] = field(repr=False)  # scoring → "subject/doc_id" → choice
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"scorings": {k: asdict(v) for k, v in self.scorings.items()}, "by_subject": self.by_subject,
                "disagreement": self.disagreement, "config": self.config}

    def table(self) -> tuple[list[str], list[list[Any]]]:
        """Headers and rows for a report table (one row per scoring)."""
        rows = [[name, s.accuracy, s.stderr, s.n, s.truncated_items, s.invalid] for name, s in self.scorings.items()]
        return ["scoring", "accuracy", "stderr", "items", "truncated", "no letter"], rows


def _predicted(scoring: str, sample: dict[str, Any]) -> int | None:
    if scoring == "generation":
        reply = sample["filtered_resps"][0]
        return LETTERS.index(reply) if reply in tuple(LETTERS) else None
    logliks = [float(r[0]) for r in sample["filtered_resps"]]
    return max(range(len(logliks)), key=logliks.__getitem__)


def score_mmlu_three_ways(
    model,
    tokenizer,
    task_dir: str | Path,
    *,
    num_fewshot: int = 5,
    chat: bool = False,
    limit: int | None = None,
    batch_size: int = 8,
    samples_dir: str | Path | None = None,
    scorings: tuple[str, ...] = tuple(SCORINGS),
) -> MmluScores:
    """Score `model` on the task under `task_dir` by each of `scorings`, on the same test items.

    `chat`: prompts through the tokenizer's chat template (for chat-tuned models); `limit`: at most
    this many test items per subject; `samples_dir`: lm-eval's per-item samples and results there.
    """
    task = load_mmlu_task(task_dir)
    from hfllm.evaluation.harness import run_lm_eval

    run = run_lm_eval(model, tokenizer, [SCORINGS[s] for s in scorings], include_path=Path(task_dir).resolve(),
                      include_defaults=False, num_fewshot=num_fewshot, chat=chat, limit=limit,
                      batch_size=batch_size, samples_dir=samples_dir)
    return summarize(run, task, scorings)


def summarize(run: HarnessRun, task: MmluTask, scorings: tuple[str, ...] = tuple(SCORINGS)) -> MmluScores:
    """Accuracies (lm-eval's group results), per-item answers and disagreements from a harness run."""
    out: dict[str, Scoring] = {}
    by_subject: dict[str, dict[str, float]] = {}
    predictions: dict[str, dict[str, int | None]] = {}
    metric_of = {s: METRICS[s] for s in scorings}
    for scoring in scorings:
        group = run.results[SCORINGS[scoring]]
        metric = metric_of[scoring]
        stderr_key = metric.replace(",", "_stderr,", 1)
        predictions[scoring] = {}
        by_subject[scoring] = {}
        truncated = 0
        for subject in task.counts:
            name = task.task_name(scoring, subject)
            by_subject[scoring][subject] = float(run.results[name][metric])
            truncated += run.truncated_docs.get(name, 0)
            for sample in run.samples.get(name, []):
                predictions[scoring][f"{subject}/{sample['doc_id']}"] = _predicted(scoring, sample)
        stderr = group.get(stderr_key)
        out[scoring] = Scoring(
            accuracy=float(group[metric]),
            stderr=None if stderr in (None, "N/A") else float(stderr),
            n=len(predictions[scoring]),
            truncated_items=truncated,
            invalid=sum(p is None for p in predictions[scoring].values()) if scoring == "generation" else 0,
        )
    disagreement = {}
    for a, b in combinations(scorings, 2):
        items = predictions[a].keys() & predictions[b].keys()
        disagreement[f"{a}/{b}"] = sum(predictions[a][i] != predictions[b][i] for i in items) / max(len(items), 1)
    return MmluScores(out, by_subject, disagreement, predictions, {**run.config, "fingerprint": task.fingerprint})
