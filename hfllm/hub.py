"""Publishing: push a stage directory — a model, a tokenizer, or a data stage's dataset — to the
Hugging Face Hub with a model (or dataset) card generated from its manifest.

The card is what a stranger reads before using the model, so it carries what the run knows: the
evaluation results as `model-index` metadata (held-out bits per byte from the run's evaluation,
lm-eval tasks from `stages.json`, verifier accuracy from `task_eval/scores.json`), the base model
and datasets when they are on the Hub, the training config, the data lineage back to the raw text
with the data stage's cleaning report, and intended use and limitations. The YAML is written by
`huggingface_hub`'s `ModelCardData`/`EvalResult`, not by hand.

Pushes go through `huggingface_hub` as it is (`create_repo`, `create_branch`, `create_commit`;
`DatasetDict.push_to_hub` for datasets), private unless asked otherwise, to a branch per stage if
`revision` is given. The token comes only from the environment (`HF_TOKEN`) or the login cache
(`hf auth login`): hfllm never takes one as an argument, and refuses to upload a file that contains
it. Each push is recorded in the stage's `pushed.json` (repo, revision, commit; no token), so that a
later stage's card can name this one as its base model or dataset.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hfllm.errors import ConfigError, exit_on_error

MANIFEST = "manifest.json"
PUSH_RECORD = "pushed.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors",
                "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
DATASET_FILES = ("dataset_dict.json", "state.json")
# Never uploaded: Trainer checkpoints (resume state, several times the model's size), the pickled
# TrainingArguments (a pickle carries `hub_token` when one was given on the command line; the
# manifest has the same config as JSON, token redacted), and the runner's own bookkeeping.
NOT_PUSHED = ("checkpoint-*", "training_args.bin", ".*", "report_section.json", "step_trace.jsonl", PUSH_RECORD,
              "README.md")
CLEANING_REPORT = "report.json"


# --- what is being pushed ----------------------------------------------------------------------------

def stage_kind(stage_dir: Path) -> str:
    """What a stage directory holds — "model", "tokenizer" or "dataset" — from the files the stage
    wrote; anything else is refused."""
    if not stage_dir.is_dir():
        raise ConfigError("no such stage directory", where=str(stage_dir))
    has = {p.name for p in stage_dir.iterdir()}
    if has & set(DATASET_FILES):
        return "dataset"
    if "config.json" in has:
        if not has & set(WEIGHT_FILES):
            raise ConfigError(f"a model directory without weights (none of {', '.join(WEIGHT_FILES)})",
                              where=str(stage_dir))
        if not has & set(TOKENIZER_FILES):
            raise ConfigError(f"a model directory without a tokenizer (none of {', '.join(TOKENIZER_FILES)}): "
                              "lm-eval and from_pretrained users need one", where=str(stage_dir))
        return "model"
    if has & set(TOKENIZER_FILES):
        return "tokenizer"
    raise ConfigError("not a stage directory with weights, a tokenizer or a dataset (found: "
                      f"{', '.join(sorted(has)) or 'nothing'})", where=str(stage_dir))


def files_to_push(stage_dir: Path) -> list[Path]:
    out = []
    for path in sorted(stage_dir.rglob("*")):
        rel = path.relative_to(stage_dir)
        if path.is_file() and not any(fnmatch.fnmatch(part, pat) for part in rel.parts for pat in NOT_PUSHED):
            out.append(path)
    return out


def hub_token(where: str) -> str:
    """The token `huggingface_hub` will use (HF_TOKEN, else the login cache); only its presence is
    checked here, and it is used to make sure no uploaded file contains it."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise ConfigError("no Hugging Face token: set HF_TOKEN in the environment or run `hf auth login` "
                          "(hfllm takes no token on the command line)", where=where, field="token")
    return token


def check_repo_id(repo_id: str, where: str) -> str:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ConfigError(f"not a valid Hub repo id {repo_id!r}: {str(err).splitlines()[0]}", where=where,
                          field="repo_id") from None
    if repo_id.count("/") != 1:
        raise ConfigError(f"not a valid Hub repo id {repo_id!r}: give it as namespace/name", where=where,
                          field="repo_id")
    return repo_id


def check_no_token_in(paths: list[Path], extra: dict[str, bytes], token: str, where: str) -> None:
    """Refuse to upload anything that contains the token, read in chunks with an overlap."""
    needle = token.encode()
    for name, content in extra.items():
        if needle in content:
            raise ConfigError(f"the generated {name} contains the Hub token; nothing was pushed", where=where)
    for path in paths:
        tail = b""
        with path.open("rb") as f:
            while chunk := f.read(1 << 24):
                if needle in tail + chunk:
                    raise ConfigError(f"{path.name} contains the Hub token; nothing was pushed", where=where)
                tail = chunk[-len(needle):]


# --- the run around a stage: manifests, lineage, evaluation results ----------------------------------

def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_hub_id(value: Any) -> bool:
    """A Hub id, not a local path: a valid repo id that names nothing on this machine."""
    if not isinstance(value, str) or not value or Path(value).exists() or value.startswith((".", "/", "~")):
        return False
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return value.count("/") <= 1


def pushed_repo(stage_dir: Path, repo_type: str) -> str | None:
    """Where a stage directory was last pushed, from its push record."""
    records = [r for r in read_json(stage_dir / PUSH_RECORD) or [] if r.get("repo_type") == repo_type]
    return records[-1]["repo_id"] if records else None


def locate_stage(value: Any, near: Path, fingerprint: str | None = None) -> Path | None:
    """The stage directory a manifest names, as seen from the stage at `near`: the entry of the same
    name beside it when that is the same output (its fingerprint matches the one recorded: the run
    was moved or copied, or started from another working directory), else the path itself."""
    if not isinstance(value, str) or not value:
        return None
    path, sibling = Path(value), near.parent / Path(value).name
    found = read_json(sibling / MANIFEST) if sibling.is_dir() else None
    if isinstance(found, dict) and (fingerprint is None or found.get("fingerprint") == fingerprint):
        if fingerprint is not None or not path.is_dir():
            return sibling
    return path if path.is_dir() else None


def lineage(stage_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The stage and every stage upstream of it (through manifest inputs), upstream first."""
    seen: dict[Path, dict[str, Any]] = {}

    def visit(d: Path) -> None:
        key = d.resolve()
        manifest = read_json(d / MANIFEST)
        if key in seen or not isinstance(manifest, dict):
            return
        for inp in (manifest.get("inputs") or {}).values():
            if isinstance(inp, dict):
                upstream = locate_stage(inp.get("path"), d, inp.get("fingerprint"))
                if upstream is not None:
                    visit(upstream)
        seen[key] = manifest

    visit(stage_dir)
    return list(seen.items())


def _same_stage(path: Any, stage_dir: Path) -> bool:
    """Whether an evaluation's model path is this stage: the same directory, or the same entry of a
    run of the same name (a run moved or copied since)."""
    if not isinstance(path, str) or not path:
        return False
    p = Path(path)
    return (p.exists() and p.resolve() == stage_dir.resolve()) or (
        p.name == stage_dir.resolve().name and p.parent.name == stage_dir.resolve().parent.name)


# Counts and interval ends that stages.json keeps beside a task's metrics: not metrics of the model.
NOT_METRICS = ("n", "truncated_items", "ci_low", "ci_high")


def _metric_name(key: str) -> str:
    return key.split(",")[0]  # lm-eval's "acc,none" → "acc"


def evaluation_results(stage_dir: Path) -> list[dict[str, Any]]:
    """Every evaluation of this stage that its run holds, as rows of task, dataset, metric, value and
    uncertainty: `results.json` of evaluation entries whose model is this stage, this entry's part of
    any `stages.json` (lm-eval tasks) and of any `scores.json` (the verifier's task accuracy)."""
    run_dir, entry = stage_dir.resolve().parent, stage_dir.resolve().name
    rows: list[dict[str, Any]] = []
    for d in sorted(p for p in run_dir.iterdir() if p.is_dir() and p.resolve() != stage_dir.resolve()):
        manifest = read_json(d / MANIFEST) or {}
        config = manifest.get("config") or {}
        evaluated = [config.get("model_name_or_path"), *(config.get("models") or [])]
        results = read_json(d / "results.json")
        if isinstance(results, dict) and any(_same_stage(m, stage_dir) for m in evaluated):
            if isinstance(results.get(entry), dict):  # an evaluation of several models, keyed by entry
                results = results[entry]
            held_out = f"held-out split of {Path(config.get('dataset_name') or 'data').name}"
            for key, label in (("bits_per_byte", "bits per byte"), ("perplexity", "perplexity"),
                               ("bigram_bits_per_byte", "bigram floor, bits per byte")):
                if isinstance(results.get(key), (int, float)):
                    rows.append({"task": "held-out language modelling", "dataset": held_out,
                                 "dataset_type": hub_dataset_id(config.get("dataset_name"), d) or "local",
                                 "split": "test",
                                 "metric": key, "metric_name": label, "value": float(results[key]),
                                 "uncertainty": None, "source": d.name})
        stages = read_json(d / "stages.json")
        if isinstance(stages, dict) and isinstance(stages.get(entry), dict):
            for task, metrics in stages[entry].items():
                if not isinstance(metrics, dict):
                    continue
                values = {k: v for k, v in metrics.items() if "stderr" not in k and k not in NOT_METRICS
                          and isinstance(v, (int, float)) and not isinstance(v, bool)}
                for key, value in values.items():
                    name = _metric_name(key)
                    # a metric's own stderr; the bare "stderr" is the first metric's (stages.json's rule)
                    err = metrics.get(f"{name}_stderr,{key.split(',', 1)[1]}" if "," in key else f"{name}_stderr",
                                      metrics.get("stderr") if key == next(iter(values)) else None)
                    rows.append({"task": task, "dataset": task, "dataset_type": task, "split": None,
                                 "metric": name, "metric_name": name, "value": float(value),
                                 "uncertainty": f"± {err:.4g} (stderr)" if isinstance(err, (int, float)) else None,
                                 "source": f"{d.name}/stages.json"})
        scores = read_json(d / "scores.json")
        if isinstance(scores, dict) and isinstance(scores.get(entry), dict):
            s = scores[entry]
            if isinstance(s.get("accuracy"), (int, float)):
                ci = (f"[{s['ci_low']:.4g}, {s['ci_high']:.4g}] (95 % bootstrap)"
                      if isinstance(s.get("ci_low"), (int, float)) and isinstance(s.get("ci_high"), (int, float))
                      else None)
                rows.append({"task": "verifiable tasks (held-out prompts, verifier-scored)",
                             "dataset": f"{s.get('n', '?')} held-out task prompts", "dataset_type": "hfllm-tasks",
                             "split": "test", "metric": "accuracy", "metric_name": "accuracy",
                             "value": float(s["accuracy"]), "uncertainty": ci, "source": f"{d.name}/scores.json"})
    return rows


def hub_dataset_id(dataset_name: Any, near: Path) -> str | None:
    """A dataset's Hub id where it has one: its own, where its data stage was pushed, or the Hub
    dataset that data stage read."""
    if is_hub_id(dataset_name):
        return dataset_name
    data_dir = locate_stage(dataset_name, near)
    if data_dir is None:
        return None
    source = ((read_json(data_dir / MANIFEST) or {}).get("config") or {}).get("dataset_name")
    return pushed_repo(data_dir, "dataset") or (source if is_hub_id(source) else None)


# --- the card ----------------------------------------------------------------------------------------

def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows])


def cleaning_report(data_dir: Path, manifest: dict[str, Any]) -> str:
    """The data stage's cleaning report (per block: in, kept, removed by reason) when it wrote one,
    else the rows its loader left out, by reason."""
    report = read_json(data_dir / CLEANING_REPORT)
    blocks = report.get("blocks", report) if isinstance(report, dict) else report
    if isinstance(blocks, dict):
        blocks = [{"block": name, **b} for name, b in blocks.items() if isinstance(b, dict)]
    if isinstance(blocks, list) and blocks:
        rows = []
        for b in blocks:
            if not isinstance(b, dict):
                continue
            removed = b.get("removed")
            reasons = (", ".join(f"{k}: {_fmt(v)}" for k, v in removed.items()) if isinstance(removed, dict)
                       else _fmt(removed) if removed is not None else "—")
            rows.append([b.get("block") or b.get("name") or "?", b.get("in", "—"), b.get("kept", "—"), reasons,
                         b.get("modified", "—")])
        return _table(["block", "in", "kept", "removed (by reason)", "modified"], rows)
    removed = (manifest.get("metrics") or {}).get("removed")
    if isinstance(removed, dict) and removed:
        return _table(["source/reason", "documents left out"], [[k, v] for k, v in removed.items()])
    return "No cleaning report: the data stage removed nothing it counted."


def _data_summary(d: Path, manifest: dict[str, Any]) -> str:
    config, metrics = manifest.get("config") or {}, manifest.get("metrics") or {}
    source = config.get("dataset_name")
    if source is None:
        what = (f"the embedded offline corpus ({', '.join(config.get('corpus_sources') or [])}; "
                f"content hash `{str(metrics.get('content_hash', '?'))[:16]}`)")
    else:
        what = f"`{source}`" + (" (Hub)" if is_hub_id(source) else "")
    sizes = ", ".join(f"{k.replace('_', ' ')} {_fmt(metrics[k])}" for k in
                      ("train_docs", "test_docs", "train_bytes", "test_bytes") if k in metrics)
    return f"{what}" + (f": {sizes}" if sizes else "")


def _lineage_section(stage_dir: Path, chain: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    lines = ["## Data lineage", "",
             "Each stage of the run that produced this one, upstream first (entry, fingerprint, what it is):", ""]
    data_reports = []
    for path, manifest in chain:
        stage = manifest.get("stage", path.name)
        facts = ""
        if stage == "data":
            facts = _data_summary(path, manifest)
            data_reports.append((path, manifest))
        elif stage == "tokenizer":
            m = manifest.get("metrics") or {}
            facts = (f"byte-level BPE, vocabulary {_fmt(m.get('vocab_size', '?'))}, "
                     f"{_fmt(m.get('heldout_bytes_per_token', float('nan')))} held-out bytes per token")
        else:
            m = manifest.get("metrics") or {}
            facts = ", ".join(f"{k.replace('_', ' ')} {_fmt(m[k])}" for k in
                              ("parameters", "steps", "tokens_seen", "train_loss", "eval_loss") if k in m)
        pushed = pushed_repo(path, "dataset" if stage == "data" else "model")
        where = f" — on the Hub as `{pushed}`" if pushed else ""
        this = " (this repository)" if path == stage_dir.resolve() else ""
        lines.append(f"- **{path.name}**{this} (`{stage}`, fingerprint `{manifest.get('fingerprint', '?')}`): "
                     f"{facts}{where}")
    for path, manifest in data_reports:
        lines += ["", f"Cleaning report of `{path.name}`:", "", cleaning_report(path, manifest)]
    return lines


def _portable(value: Any, run_dir: Path) -> Any:
    """A path inside the run as `<run name>/<entry>/…` instead of this machine's absolute path."""
    if isinstance(value, str) and value.startswith("/"):
        try:
            return Path(value).resolve().relative_to(run_dir.parent).as_posix()
        except ValueError:
            return value
    return value


def _config_block(stage_dir: Path, manifest: dict[str, Any]) -> list[str]:
    import yaml

    run_dir = stage_dir.resolve().parent
    config = {k: _portable(v, run_dir) for k, v in (manifest.get("config") or {}).items()
              if v is not None and v != [] and v != {}}
    versions = ", ".join(f"{k} {v}" for k, v in (manifest.get("versions") or {}).items() if v)
    metrics = manifest.get("metrics") or {}
    facts = [f"{k.replace('_', ' ')}: {_fmt(metrics[k])}" for k in
             ("parameters", "steps", "tokens_seen", "precision", "train_loss", "eval_loss") if k in metrics]
    return [
        "## Training configuration", "",
        f"Stage `{manifest.get('stage', '?')}`, run by `{manifest.get('command', '?')}` at "
        f"{manifest.get('started_at', '?')} in {_fmt(manifest.get('wall_time_s', '?'))} s "
        f"(hfllm git revision `{manifest.get('git_revision') or 'unknown'}`)"
        + (f"; {'; '.join(facts)}." if facts else "."),
        "", f"Software: {versions}.", "",
        "<details><summary>The full resolved config, as in <code>manifest.json</code> beside the weights (fields at "
        "null left out)</summary>", "",
        "```yaml", yaml.safe_dump(config, sort_keys=False, width=119).rstrip(), "```", "", "</details>",
    ]


def _intended_use(kind: str, manifest: dict[str, Any]) -> list[str]:
    m = manifest.get("metrics") or {}
    size = f"{_fmt(m['parameters'])}-parameter " if "parameters" in m else ""
    tokens = f" on {_fmt(m['tokens_seen'])} tokens" if "tokens_seen" in m else ""
    return [
        "## Intended use", "",
        "A research and teaching artefact: a model built end to end, from raw text to this checkpoint, with "
        "hfllm's recipes over transformers, TRL and datasets, so that each step can be inspected and repeated. "
        "It is meant for studying training and evaluation, for comparison across stages of the same run, and as "
        "a starting point for further training." if kind != "dataset" else
        "A research and teaching artefact: the text one hfllm run trained on, for inspecting and repeating it.",
        "",
        "## Limitations", "",
        f"- A {size}{'model' if kind == 'model' else kind} trained{tokens} — far below the scale where language "
        "models become reliable; it produces fluent-looking text without knowledge or reasoning behind it."
        if kind == "model" else
        "- Its content and statistics are those of the run's data stage, listed below; nothing more was curated.",
        "- Not aligned or filtered for safety unless a later stage in its lineage says so; do not deploy it to "
        "answer people.",
        "- The embedded offline corpus (where the lineage names it) is Python's documentation and the docstrings "
        "and READMEs of installed packages: English technical prose under those projects' own licences, which is "
        "why the card's licence is `other` unless the publisher set one.",
        "- Held-out scores are on text from the same distribution as the training data; they say nothing about "
        "other domains.",
    ]


def build_card(stage_dir: str | Path, repo_id: str, *, revision: str | None = None, license: str = "other"):
    """The `ModelCard` (or `DatasetCard` body and metadata) for a stage directory, from its manifest
    and the run around it. Pure: reads files, touches no network."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    stage_dir = Path(stage_dir)
    kind = stage_kind(stage_dir)
    manifest = read_json(stage_dir / MANIFEST)
    if not isinstance(manifest, dict):
        raise ConfigError("no manifest.json: push a directory written by an hfllm stage or recipe",
                          where=str(stage_dir))
    chain = lineage(stage_dir)
    name = repo_id.split("/")[-1]
    config = manifest.get("config") or {}
    rev = f', revision="{revision}"' if revision else ""

    base = config.get("model_name_or_path")
    base_dir = locate_stage(base, stage_dir)
    base_model = base if is_hub_id(base) else pushed_repo(base_dir, "model") if base_dir else None
    hub_datasets = sorted({d for path, m in chain for key, value in (m.get("config") or {}).items()
                           if key.endswith("dataset_name") and (d := hub_dataset_id(value, path))})

    rows = evaluation_results(stage_dir) if kind == "model" else []
    eval_results = [
        EvalResult(task_type="text-generation", task_name=r["task"], dataset_type=r["dataset_type"],
                   dataset_name=r["dataset"], dataset_split=r["split"], metric_type=r["metric"],
                   metric_name=r["metric_name"], metric_value=r["value"])
        for r in rows
    ]
    data = ModelCardData(
        model_name=name, license=license, library_name="transformers" if kind != "dataset" else None,
        pipeline_tag="text-generation" if kind == "model" else None,
        tags=["hfllm", kind, manifest.get("stage", stage_dir.name)],
        base_model=base_model, datasets=hub_datasets or None, eval_results=eval_results or None,
    )

    body = [f"# {name}", ""]
    if kind == "model":
        origin = f"fine-tuned from `{base_model or base}`" if base else "trained from scratch"
        body += [f"A causal language model {origin} by the `{manifest.get('stage', stage_dir.name)}` stage of hfllm "
                 "(clean text → tokenizer → pretrain → post-train → evaluate → publish, on transformers and TRL).", ""]
        body += ["## Evaluation", ""]
        if rows:
            body.append(_table(["task", "dataset", "metric", "value", "uncertainty", "from"],
                               [[r["task"], r["dataset"], r["metric_name"], r["value"], r["uncertainty"] or "—",
                                 r["source"]] for r in rows]))
        else:
            body.append("The run holds no evaluation of this stage yet.")
        body += ["", "## How to use", "", "```python",
                 "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                 f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}"{rev})',
                 f'model = AutoModelForCausalLM.from_pretrained("{repo_id}"{rev})', "```", "",
                 f"`lm_eval --model hf --model_args pretrained={repo_id}"
                 f"{',revision=' + revision if revision else ''} --tasks <task>` evaluates it with lm-eval.", ""]
    elif kind == "tokenizer":
        body += ["The byte-level BPE tokenizer of an hfllm run, with its ChatML chat template.", "", "```python",
                 "from transformers import AutoTokenizer", "",
                 f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}"{rev})', "```", ""]
    else:
        body += ["The train/test text of an hfllm run's data stage.", "", "```python",
                 "from datasets import load_dataset", "",
                 f'ds = load_dataset("{repo_id}"{rev})', "```", ""]
    body += _intended_use(kind, manifest) + [""]
    body += _config_block(stage_dir, manifest) + [""]
    body += _lineage_section(stage_dir, chain)
    text = "\n".join(body).rstrip() + "\n"
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{text}"), data, text


# --- the push ----------------------------------------------------------------------------------------

def push_stage(stage_dir: str | Path, repo_id: str, *, revision: str | None = None, private: bool = True,
               license: str = "other", commit_message: str | None = None) -> dict[str, Any]:
    """Push a stage directory; return (and record in `pushed.json`) repo, revision, commit and URL."""
    stage_dir = Path(stage_dir)
    where = str(stage_dir)
    kind = stage_kind(stage_dir)
    check_repo_id(repo_id, where)
    token = hub_token(where)
    card, card_data, card_text = build_card(stage_dir, repo_id, revision=revision, license=license)
    message = commit_message or f"hfllm: push {stage_dir.name} ({kind})"
    if kind == "dataset":
        files = [p for p in (stage_dir / MANIFEST, stage_dir / CLEANING_REPORT) if p.exists()]
        check_no_token_in(files, {"dataset card": card_text.encode()}, token, where)
    else:
        files = files_to_push(stage_dir)
        check_no_token_in(files, {"model card": str(card).encode()}, token, where)
    with hub_errors_as_config_errors(repo_id, where):
        if kind == "dataset":
            commit, is_private = _push_dataset(stage_dir, repo_id, revision, private, license, card_data, card_text,
                                               files, message)
        else:
            commit, is_private = _push_files(stage_dir, repo_id, revision, private, str(card).encode(), files,
                                             message)
    record = {"repo_id": repo_id, "repo_type": "dataset" if kind == "dataset" else "model",
              "revision": revision or "main", "commit": commit.oid, "url": commit.commit_url, "private": is_private,
              "kind": kind, "pushed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    records = read_json(stage_dir / PUSH_RECORD) or []
    (stage_dir / PUSH_RECORD).write_text(json.dumps([*records, record], indent=1))
    return record


@contextlib.contextmanager
def hub_errors_as_config_errors(repo_id: str, where: str):
    """What the user can fix — offline mode, a refused token, a namespace they cannot write to — as
    one ConfigError line; other Hub failures (server errors, the network) propagate as they are."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        yield
    except OfflineModeIsEnabled:
        raise ConfigError("HF_HUB_OFFLINE is set: unset it to push", where=where, field="HF_HUB_OFFLINE") from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        reason = str(err).splitlines()[0]
        if status == 401:
            raise ConfigError(f"the Hub refused the token ({reason})", where=where, field="token") from None
        if status == 403:
            raise ConfigError(f"no write access to {repo_id} ({reason})", where=where, field="repo_id") from None
        raise


def _push_files(stage_dir: Path, repo_id: str, revision: str | None, private: bool, readme: bytes,
                files: list[Path], message: str):
    """A model or tokenizer: its files and the card in one commit, to `revision` (a branch made
    from main if missing)."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(stage_dir).as_posix(), path_or_fileobj=str(p))
                  for p in files]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=readme))
    commit = api.create_commit(repo_id, operations=operations, commit_message=message, revision=revision)
    return commit, bool(api.repo_info(repo_id, revision=commit.oid).private)


def _push_dataset(stage_dir: Path, repo_id: str, revision: str | None, private: bool, license: str,
                  card_data, card_text: str, extras: list[Path], message: str):
    """`DatasetDict.push_to_hub` (parquet shards and its own card metadata: configs, splits,
    features), then a second commit that adds hfllm's card text, licence, tags and the manifest."""
    import datasets
    from huggingface_hub import CommitOperationAdd, DatasetCard, HfApi, hf_hub_download

    api = HfApi()
    dataset = datasets.load_from_disk(str(stage_dir))
    dataset.push_to_hub(repo_id, private=private, revision=revision, commit_message=message)
    # RepoCard.load takes no revision: read the card datasets wrote on that branch.
    card = DatasetCard.load(hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=revision))
    card.data.license = license
    card.data.tags = sorted(set(getattr(card.data, "tags", None) or []) | {"hfllm"})
    if card_data.datasets:
        card.data.source_datasets = card_data.datasets
    card.text = card_text
    operations = [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card).encode())]
    operations += [CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p)) for p in extras]
    commit = api.create_commit(repo_id, operations=operations, commit_message=f"{message}: card and manifest",
                               repo_type="dataset", revision=revision)
    return commit, bool(api.repo_info(repo_id, repo_type="dataset", revision=commit.oid).private)


# --- command line ------------------------------------------------------------------------------------

def add_push_command(subparsers) -> argparse.ArgumentParser:
    """`hfllm push <stage dir> --repo_id … [--revision BRANCH] [--public] [--license ID]`."""
    push = subparsers.add_parser(
        "push", help="push a stage directory (model, tokenizer or dataset) to the Hub with a generated card",
        description="Push a model, tokenizer or data-stage directory to the Hugging Face Hub, private unless "
                    "--public, with a model card from its manifest and the run's evaluations. The token comes "
                    "from HF_TOKEN or `hf auth login`.")
    push.add_argument("stage_dir", help="e.g. runs/demo/pretrain")
    push.add_argument("--repo_id", required=True, help="namespace/name on the Hub")
    push.add_argument("--revision", help="branch to push to (created from main if missing), e.g. one per stage")
    push.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    push.add_argument("--license", default="other", help="licence id for the card (default: other)")
    push.add_argument("--commit_message", help="commit message (default: names the stage)")
    push.set_defaults(func=run_push_command)
    return push


def run_push_command(args: argparse.Namespace) -> None:
    record = push_stage(args.stage_dir, args.repo_id, revision=args.revision, private=not args.public,
                        license=args.license, commit_message=args.commit_message)
    print(f"pushed {record['kind']} {args.stage_dir} → {record['repo_id']}@{record['revision']} "
          f"({'private' if record['private'] else 'public'}), commit {record['commit'][:12]}: {record['url']}")


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    """`python -m hfllm.hub push …` (the same command as `hfllm push`)."""
    parser = argparse.ArgumentParser(prog="hfllm")
    add_push_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
