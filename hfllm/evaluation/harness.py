"""lm-eval on a model already in memory, with context truncation counted.

`run_lm_eval` wraps lm-eval's `simple_evaluate` around an `HFLM` built on the model object and its
tokenizer (no reload from disk), optionally through the tokenizer's chat template, and keeps the
per-sample log (`log_samples`). lm-eval cuts an over-long context from the left with only a log
warning per request; `TruncationCountingLM` counts those requests per task so that a report can
say how many items were scored on a cut prompt — small models with short contexts and 5-shot
prompts hit this often.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import normalize_gen_kwargs

from hfllm.errors import ConfigError


class TruncationCountingLM(HFLM):
    """`HFLM` that counts, per task, the requests whose context it will cut on the left.

    The rules are HFLM's own: a log-likelihood request is cut when context + continuation exceed
    `max_length + 1` tokens; a generation request when its context exceeds `max_length` minus the
    tokens it may generate. The counting encodes with HFLM's own methods, so it sees the tokens
    HFLM scores.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.requests_seen: Counter[str] = Counter()
        self.requests_truncated: Counter[str] = Counter()
        self.docs_truncated: dict[str, set[int]] = defaultdict(set)

    def _count(self, request: Any, truncated: bool) -> None:
        self.requests_seen[request.task_name] += 1
        if truncated:
            self.requests_truncated[request.task_name] += 1
            self.docs_truncated[request.task_name].add(request.doc_id)

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        for request in requests:
            context, continuation = request.args
            if context:
                context_enc, continuation_enc = self._encode_pair(context, continuation)
            else:  # HFLM scores an empty context's continuation after the prefix token
                continuation_enc = self.tok_encode(continuation, add_special_tokens=False)
                context_enc = [self.prefix_token_id]
            self._count(request, len(context_enc) + len(continuation_enc) > self.max_length + 1)
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    def generate_until(self, requests, disable_tqdm: bool = False):
        for request in requests:
            context, gen_kwargs = request.args
            max_gen_toks = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)["max_gen_toks"]
            self._count(request, len(self.tok_encode(context)) > self.max_length - max_gen_toks)
        return super().generate_until(requests, disable_tqdm=disable_tqdm)


@dataclass
class HarnessRun:
    """What one `simple_evaluate` call returned, plus the truncation counts per task."""

    results: dict[str, dict[str, Any]]  # lm-eval's "results": {task or group: {"acc,none": …, …}}
    samples: dict[str, list[dict[str, Any]]]  # per task, lm-eval's logged samples
    requests: dict[str, int] = field(default_factory=dict)
    truncated_requests: dict[str, int] = field(default_factory=dict)
    truncated_docs: dict[str, int] = field(default_factory=dict)
    n_samples: dict[str, int] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def task_manager(tasks: list[str], include_path: str | Path | None = None, include_defaults: bool = True):
    """lm-eval's `TaskManager` over its own tasks and `include_path`; an unknown task name raises
    `ConfigError` naming it (field `tasks`), before any model is loaded or called."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(include_path) if include_path else None, include_defaults=include_defaults)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ConfigError(f"lm-eval knows no task {', '.join(map(repr, unknown))}"
                          + (f" (include_path {include_path})" if include_path else ""), field="tasks")
    return manager


def run_lm_eval(
    model,
    tokenizer,
    tasks: list[str],
    *,
    include_path: str | Path | None = None,
    include_defaults: bool = True,
    num_fewshot: int | None = None,
    chat: bool = False,
    limit: int | float | None = None,
    batch_size: int = 8,
    samples_dir: str | Path | None = None,
    manager=None,
) -> HarnessRun:
    """Run lm-eval `tasks` on `model` (a transformers model object) and `tokenizer`.

    `chat`: format prompts with the tokenizer's chat template (few-shot examples as turns).
    `include_defaults`: also index lm-eval's own tasks (≈ 12 s on a busy CPU); False when every task
    is under `include_path`.
    `samples_dir`: also write `results.json` and `samples_<task>.jsonl` there.
    `manager`: a `task_manager` built (and the names checked) already, for several models in a row.
    An unknown task name raises `ConfigError` naming it, before any model call.
    """
    from lm_eval import simple_evaluate

    manager = manager or task_manager(tasks, include_path, include_defaults)
    lm = TruncationCountingLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit, task_manager=manager,
                          apply_chat_template=chat, fewshot_as_multiturn=chat, log_samples=True,
                          verbosity="ERROR", bootstrap_iters=1000)
    samples = out.get("samples", {})
    run = HarnessRun(
        results=out["results"],
        samples=samples,
        requests=dict(lm.requests_seen),
        truncated_requests={t: lm.requests_truncated[t] for t in lm.requests_seen},
        truncated_docs={t: len(lm.docs_truncated[t]) for t in lm.requests_seen},
        n_samples={t: len(s) for t, s in samples.items()},
        config={"num_fewshot": num_fewshot, "chat": chat, "limit": limit, "max_length": lm.max_length},
    )
    if samples_dir is not None:
        write_run(run, samples_dir)
    return run


def write_run(run: HarnessRun, directory: str | Path) -> None:
    """`results.json` (results, truncation counts, config) and one `samples_<task>.jsonl` per task."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    summary = {"results": run.results, "requests": run.requests, "truncated_requests": run.truncated_requests,
               "truncated_docs": run.truncated_docs, "n_samples": run.n_samples, "config": run.config}
    (directory / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    for task, rows in run.samples.items():
        with open(directory / f"samples_{task}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row, default=str) + "\n")
