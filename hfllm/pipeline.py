"""The pipeline runner: a run is one folder of stage directories, one per pipeline entry.

A pipeline file lists entries, each a stage type with the YAML a user would pass to that stage's
recipe. An entry's `id` (default: its stage type) is its directory under the run; its `inputs`
map config fields to the ids of earlier entries whose directories they read. A stage type
declares default inputs, so most entries name only `stage` and `config`:

    name: demo
    stages:
      - {stage: data, config: data.yaml}
      - {stage: tokenizer, config: tokenizer.yaml}
      - {stage: pretrain, config: pretrain.yaml}
      - {id: eval_pretrain, stage: eval, config: evaluation.yaml}
      - {id: dpo_ipo, stage: dpo, config: dpo_ipo.yaml, inputs: {model_name_or_path: sft}}

Why a runner and not a shell script of recipes: it checks every entry before any runs (a bad
key or a wrong input fails the run before anything is written), skips an entry whose config and
inputs are unchanged since its manifest, resumes an interrupted one, and sets aside rather than
deletes what an earlier config wrote, so that a stage refusing its input damages nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hfllm.configs import dataclass_fields, load_yaml, parse_config, to_dict
from hfllm.errors import CheckFailed, ConfigError, HfllmError
from hfllm.precision import precision_ran
from hfllm.report import Section, StageContext, write_report

MANIFEST = "manifest.json"
STARTED = ".stage_fingerprint"  # written when a stage starts; says whose partial output this is


@dataclass(frozen=True)
class WiredValue:
    """A config value that must agree with an upstream entry's: `field` takes the value of
    `upstream_field` in the entry wired into `via` — unless `unless_wired` is wired too (the value
    only matters when that input comes from elsewhere)."""

    field: str
    via: str
    upstream_field: str
    unless_wired: str | None = None


@dataclass(frozen=True)
class StageSpec:
    """A stage type: where its dataclasses and run function live, and its default inputs as
    `{config field: stage types in fallback order}` (a list field takes every earlier entry of
    those types)."""

    name: str
    title: str
    module: str  # imported lazily: `hfllm plan` must not pay for torch and TRL
    dataclasses: tuple[str, ...]
    run: str
    inputs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    values: tuple[WiredValue, ...] = ()
    check: str | None = None  # a function of the parsed dataclasses: checks across them, before anything runs

    def load(self) -> tuple[tuple[type, ...], Callable[..., dict[str, Any]]]:
        mod = importlib.import_module(self.module)
        return tuple(getattr(mod, n) for n in self.dataclasses), getattr(mod, self.run)

    def check_args(self, args: tuple[Any, ...], where: str | Path | None) -> None:
        if self.check is None:
            return
        try:
            getattr(importlib.import_module(self.module), self.check)(*args)
        except HfllmError as err:
            err.where = err.where or (str(where) if where is not None else None)
            raise


STAGES: dict[str, StageSpec] = {
    s.name: s
    for s in [
        StageSpec("data", "Data", "hfllm.data.stage", ("DataArguments",), "run_data_stage"),
        StageSpec("tokenizer", "Tokenizer", "hfllm.tokenizer", ("TokenizerArguments",), "run_tokenizer_stage",
                  inputs={"dataset_name": ("data",)}),
        StageSpec(
            "pretrain", "Pretraining", "hfllm.pretrain",
            ("PretrainScriptArguments", "PretrainConfig", "PretrainModelArguments"), "run_pretrain_stage",
            inputs={"dataset_name": ("data",), "eval_dataset_name": ("data",), "tokenizer_name": ("tokenizer",)},
            # Streaming another copy of the data (dataset_name not wired) skips what the data stage held out.
            values=(WiredValue("exclude_held_out_fraction", "eval_dataset_name", "test_fraction",
                               unless_wired="dataset_name"),),
            check="check_pretrain_args",
        ),
        # An IsoFLOP sweep of pretraining runs (each run a pretraining entry under sweep/), both Chinchilla
        # fits and a checked prediction (hfllm.scaling). `pretrain_config` is the runs' recipe file: an input
        # with no upstream entry, listed so that editing it changes the entry's fingerprint.
        StageSpec("scaling", "Scaling laws", "hfllm.scaling.stage", ("ScalingArguments",), "run_scaling_stage",
                  inputs={"dataset_name": ("data",), "tokenizer_name": ("tokenizer",), "pretrain_config": ()},
                  values=(WiredValue("vocab_size", "tokenizer_name", "vocab_size"),), check="check_scaling_args"),
        StageSpec("synthetic", "Synthetic instructions", "hfllm.alignment.synthetic", ("SyntheticArguments",),
                  "run_synthetic_stage", inputs={"tokenizer_name": ("tokenizer",)}),
        StageSpec("sft", "SFT", "hfllm.alignment.sft", ("SFTScriptArguments", "SFTConfig", "ModelConfig"),
                  "run_sft_stage",
                  inputs={"model_name_or_path": ("sft", "pretrain"), "dataset_name": ("synthetic",)}),
        StageSpec("feedback", "Feedback", "hfllm.alignment.synthetic", ("FeedbackArguments",), "run_feedback_stage",
                  inputs={"model_name_or_path": ("sft",), "dataset_name": ("synthetic",)}),
        StageSpec("reward", "Reward model", "hfllm.alignment.reward",
                  ("RewardScriptArguments", "RewardConfig", "ModelConfig"), "run_reward_stage",
                  inputs={"model_name_or_path": ("sft", "pretrain"), "dataset_name": ("feedback",)}),
        StageSpec("dpo", "DPO", "hfllm.alignment.dpo", ("DPOScriptArguments", "DPOConfig", "ModelConfig"),
                  "run_dpo_stage",
                  inputs={"model_name_or_path": ("sft", "pretrain"), "dataset_name": ("feedback",)}),
        StageSpec("ppo", "PPO", "hfllm.alignment.ppo", ("PPOScriptArguments", "PPOConfig", "ModelConfig"),
                  "run_ppo_stage",
                  inputs={"sft_model_path": ("sft", "pretrain"), "model_name_or_path": ("sft", "pretrain"),
                          "reward_model_path": ("reward",), "dataset_name": ("synthetic",)}),
        StageSpec("grpo", "GRPO", "hfllm.alignment.grpo", ("GRPOScriptArguments", "GRPOConfig", "ModelConfig"),
                  "run_grpo_stage",
                  inputs={"model_name_or_path": ("sft", "pretrain"), "reward_model_path": ("reward",),
                          "dataset_name": ("synthetic",)}),
        StageSpec("eval", "Evaluation", "hfllm.evaluation.stage", ("EvalArguments",), "run_eval_stage",
                  inputs={"model_name_or_path": ("pretrain",), "dataset_name": ("data",),
                          "models": ("pretrain", "sft", "dpo", "ppo", "grpo"), "task_scores": ("task_eval",)}),
        StageSpec("task_eval", "Task evaluation", "hfllm.alignment.task_eval", ("TaskEvalArguments",),
                  "run_task_eval_stage",
                  inputs={"models": ("pretrain", "sft", "dpo", "ppo", "grpo"),
                          "train_datasets": ("synthetic", "feedback"), "plateau_model": ("sft",),
                          "reward_model": ("reward",), "reward_pairs": ("feedback",)}),
    ]
}

VERSIONED = ("torch", "transformers", "trl", "datasets", "accelerate", "peft", "tokenizers", "lm_eval", "hfllm")


# ---------------------------------------------------------------------------------------------
# Manifests and fingerprints


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def redact_command(argv: list[str]) -> str:
    """The command line for the manifest, with any token's value replaced."""
    out = []
    for i, arg in enumerate(argv):
        if "token" in arg.lower() and "=" in arg:
            arg = arg.split("=", 1)[0] + "=<redacted>"
        elif i and "token" in argv[i - 1].lower() and argv[i - 1].startswith("-"):
            arg = "<redacted>"
        out.append(arg)
    return " ".join(out)


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_manifest(stage_dir: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(stage_dir) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _derived(path: Path) -> bool:
    """A file `datasets` writes beside a saved dataset when a stage maps or filters it
    (`cache-<hash>.arrow`): derived from the input, not part of it. Counted, they changed a local
    dataset's fingerprint at every run, and a killed stage restarted from step 0 instead of
    resuming (found by the reward stage's kill test)."""
    return path.name.startswith("cache-") and path.suffix == ".arrow"


def input_fingerprint(value: str | None) -> str:
    """A stage dir's manifest fingerprint; else a local path's listing; else the name itself (Hub id)."""
    if value is None:
        # The embedded corpus: its text is whatever Python and packages are installed.
        # A set: a package on sys.path twice (the checkout and its egg-info when cwd is on the path)
        # is the same text.
        dists = sorted({f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()})
        return _sha([platform.python_version(), dists])
    path = Path(value)
    manifest = read_manifest(path)
    if manifest:
        return manifest["fingerprint"]
    if path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not _derived(p))
        return _sha([(str(p.relative_to(path.parent)), p.stat().st_size, p.stat().st_mtime_ns) for p in files])
    return _sha(value)


# Where output goes, how often and where progress is logged, whether it is published: fields of
# TrainingArguments (so of every TRL config) that never change what a stage computes. A field of
# hfllm's own dataclasses opts out with `metadata={"fingerprint": False}`.
_NOT_OUTPUT = re.compile(r"^(output_dir|overwrite_output_dir|run_name|project|disable_tqdm|report_to|push_to_hub"
                         r"|logging_.*|log_.*|hub_.*|trackio_.*|enable_jit_checkpoint|jit_checkpoint_.*)$")


def affects_output(name: str, dataclass_types: tuple[type, ...] = ()) -> bool:
    import dataclasses

    for dtype in dataclass_types:
        for f in dataclasses.fields(dtype):
            if f.name == name and f.metadata.get("fingerprint") is False:
                return False
    return not _NOT_OUTPUT.match(name)


def stage_inputs(spec: StageSpec, config: dict[str, Any]) -> dict[str, Any]:
    """The stage's inputs as read from its config: `{field: {path, fingerprint}}` (a list field:
    a list of them). The data stage's input is its dataset (the embedded corpus when unset)."""
    out: dict[str, Any] = {}
    for f in list(spec.inputs) or ["dataset_name"]:
        value = config.get(f)
        if isinstance(value, list):
            out[f] = [{"path": v, "fingerprint": input_fingerprint(v)} for v in value]
        elif value is not None or not spec.inputs:
            out[f] = {"path": value, "fingerprint": input_fingerprint(value)}
    return out


def stage_fingerprint(spec: StageSpec, args: tuple[Any, ...]) -> tuple[str, dict[str, Any]]:
    """Hash of what decides a stage's output: the config fields that affect it and the inputs'
    fingerprints (not their paths: a moved run directory is the same run). Equal hash → same output."""
    return config_fingerprint(spec, to_dict(*args), tuple(type(a) for a in args))


def config_fingerprint(
    spec: StageSpec, config: dict[str, Any], types: tuple[type, ...]
) -> tuple[str, dict[str, Any]]:
    """`stage_fingerprint` of a config as a manifest records it (`types`: the stage's dataclasses)."""
    inputs = stage_inputs(spec, config)
    semantic = {k: v for k, v in config.items() if k not in inputs and affects_output(k, types)}

    def fingerprints(value: Any) -> Any:
        return [v["fingerprint"] for v in value] if isinstance(value, list) else value["fingerprint"]

    return _sha([spec.name, semantic, {f: fingerprints(v) for f, v in inputs.items()}]), inputs


# ---------------------------------------------------------------------------------------------
# One stage


def _distributed_state():
    """Accelerate's process state: under `accelerate launch`/`torchrun` every rank runs the stage,
    and only the main process touches shared files while the others wait at a barrier."""
    from accelerate import PartialState

    return PartialState()


def _forget_accelerator_settings() -> None:
    """Drop the accelerator settings a stage leaves in the process (not its process group).

    Accelerate keeps one `AcceleratorState` per process, set by the first `Accelerator`: after
    pretraining with `torch_compile`, every later Trainer of the same `hfllm run` inherited its
    inductor backend — the demo's SFT, reward and DPO compiled their models (≈ 170 s of the
    post-training stages, measured) though their configs say `torch_compile: false`. Each stage
    starts from its own config instead."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def _set_aside_other_output(stage_dir: Path, fingerprint: str) -> Path | None:
    """A stage dir holding another config's output is not ours to resume from: move it to
    `<dir>.previous` (deleted once the new run finishes, put back if the stage refuses its input).
    Mark the dir as this fingerprint's, so that an interrupted run resumes from it."""
    marker = stage_dir / STARTED
    previous = None
    if stage_dir.exists() and any(stage_dir.iterdir()) and (
        not marker.exists() or marker.read_text() != fingerprint
    ):
        previous = stage_dir.with_name(stage_dir.name + ".previous")
        shutil.rmtree(previous, ignore_errors=True)
        stage_dir.rename(previous)
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / MANIFEST).unlink(missing_ok=True)
    marker.write_text(fingerprint)
    return previous


def _after_failure(stage_dir: Path, previous: Path | None, err: HfllmError) -> None:
    """A failed check keeps the new output (it shows what failed); refused input restores the old."""
    if previous is None:
        return
    if isinstance(err, CheckFailed):
        shutil.rmtree(previous, ignore_errors=True)
    else:
        shutil.rmtree(stage_dir, ignore_errors=True)
        previous.rename(stage_dir)


def _write_manifest(stage_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = stage_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, default=str))
    os.replace(tmp, stage_dir / MANIFEST)  # atomic: a manifest is either whole or absent


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if v is not None and isinstance(v, (int, float, str, bool))}


def execute_stage(
    spec: StageSpec,
    args: tuple[Any, ...],
    *,
    entry_id: str | None = None,
    run_dir: str | Path | None = None,
    report_entries: list[str] | None = None,
    budget_s: float | None = None,
    config_path: str | Path | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one stage with parsed args: its directory, the run, its manifest and report section.

    A recipe run alone calls this with the args only: the entry is the stage type, and its report,
    plots and manifest stay inside its `output_dir`. The runner passes the entry id and the run
    directory. `extra` goes to the stage function (e.g. Trainer callbacks); `config_path` names
    the file in errors the stage raises about a field.
    """
    _, run = spec.load()
    spec.check_args(args, config_path)
    stage_dir = Path(to_dict(*args)["output_dir"])
    entry_id = entry_id or spec.name
    run_dir = Path(run_dir) if run_dir is not None else stage_dir
    fingerprint, inputs = stage_fingerprint(spec, args)
    config = to_dict(*args)  # as fingerprinted: a stage may set fields it derives (pretraining's sampling)
    state = _distributed_state()
    previous = _set_aside_other_output(stage_dir, fingerprint) if state.is_main_process else None
    state.wait_for_everyone()

    title = spec.title if entry_id == spec.name else f"{spec.title} ({entry_id})"
    context = StageContext(entry_id=entry_id, run_dir=run_dir, section=Section(entry_id, title),
                           is_main_process=state.is_main_process)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    try:
        metrics = run(*args, context=context, **(extra or {}))
    except HfllmError as err:
        if err.where is None and config_path is not None:
            err.where = str(config_path)
        if state.is_main_process:
            _after_failure(stage_dir, previous, err)
        raise
    finally:
        _forget_accelerator_settings()
    wall = time.perf_counter() - t0
    manifest = {
        "stage": spec.name,
        "id": entry_id,
        "fingerprint": fingerprint,
        "config": config,
        "inputs": inputs,
        "metrics": metrics,
        "precision": [precision_ran(a) for a in args if hasattr(a, "bf16") and hasattr(a, "device")] or None,
        "versions": package_versions(),
        "git_revision": git_revision(),
        "command": redact_command([Path(sys.argv[0]).name] + sys.argv[1:]),
        "world_size": state.num_processes,
        "started_at": started.isoformat(timespec="seconds"),
        "wall_time_s": round(wall, 2),
        "budget_s": budget_s,
    }
    if state.is_main_process:
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
        context.section.metrics(_scalar_metrics(metrics))
        context.section.save(stage_dir, run_dir)
        _write_manifest(stage_dir, manifest)
        entries = report_entries if report_entries is not None else [entry_id]
        write_report(run_dir, {e: (stage_dir if e == entry_id else run_dir / e) for e in entries})
    state.wait_for_everyone()
    return manifest


# ---------------------------------------------------------------------------------------------
# The pipeline file


@dataclass
class PipelineEntry:
    id: str
    spec: StageSpec
    config_path: Path
    budget_s: float | None
    inputs: dict[str, str | list[str]]  # config field → upstream entry id(s)
    args: tuple[Any, ...]


@dataclass
class Pipeline:
    name: str
    run_dir: Path
    entries: list[PipelineEntry]

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.entries]


ENTRY_KEYS = {"id", "stage", "config", "budget_s", "inputs"}


def _is_list_field(tp: Any) -> bool:
    return typing.get_origin(tp) is list or any(typing.get_origin(a) is list for a in typing.get_args(tp))


def _default_inputs(spec: StageSpec, fields: dict[str, Any], earlier: list[tuple[str, str]]) -> dict[str, Any]:
    """`{field: upstream id(s)}` from the stage type's defaults: for each field, the latest earlier
    entry of the first stage type in its fallback order that the pipeline has; a list field takes
    every earlier entry of any of its types, in pipeline order."""
    wired: dict[str, Any] = {}
    for name, types in spec.inputs.items():
        if _is_list_field(fields.get(name)):
            ids = [i for i, stage in earlier if stage in types]
            if ids:
                wired[name] = ids
            continue
        for stage_type in types:
            ids = [i for i, stage in earlier if stage == stage_type]
            if ids:
                wired[name] = ids[-1]
                break
    return wired


def _explicit_inputs(inputs: Any, fields: dict[str, Any], earlier: list[str], all_ids: list[str],
                     where: str) -> dict[str, Any]:
    """The entry's own `inputs`, checked: known config fields, ids of earlier entries."""
    if not isinstance(inputs, dict):
        raise ConfigError("must be a mapping of config field: upstream id", where=where, field="inputs")
    checked: dict[str, Any] = {}
    for name, value in inputs.items():
        if name not in fields:
            raise ConfigError("not a config field of this stage", where=where, field=f"inputs.{name}")
        ids = value if isinstance(value, list) else [value] if value is not None else []
        if isinstance(value, list) and not _is_list_field(fields[name]):
            raise ConfigError("takes one upstream id, not a list", where=where, field=f"inputs.{name}")
        for upstream in ids:
            if not isinstance(upstream, str) or upstream not in all_ids:
                raise ConfigError(f"unknown entry id {upstream!r} (ids: {', '.join(all_ids)})", where=where,
                                  field=f"inputs.{name}")
            if upstream not in earlier:
                raise ConfigError(f"{upstream!r} is not an earlier entry (an input must come before the entry that "
                                  "reads it: no cycles)", where=where, field=f"inputs.{name}")
        checked[name] = value
    return checked


def _wired_values(spec: StageSpec, inputs: dict[str, Any], parsed: dict[str, PipelineEntry]) -> dict[str, Any]:
    out = {}
    for wire in spec.values:
        upstream = inputs.get(wire.via)
        if not isinstance(upstream, str) or (wire.unless_wired and inputs.get(wire.unless_wired)):
            continue
        out[wire.field] = to_dict(*parsed[upstream].args).get(wire.upstream_field)
    return out


def load_pipeline(path: str | Path, run_dir: str | Path | None = None) -> Pipeline:
    """Read a pipeline file, wire its entries and check every config (nothing runs or is written)."""
    path = Path(path)
    spec = load_yaml(path)
    unknown = set(spec) - {"name", "run_dir", "stages", "description"}
    if unknown:
        raise ConfigError("unknown key", where=str(path), field=sorted(unknown)[0])
    name = spec.get("name") or path.parent.name
    run_dir = Path(run_dir or spec.get("run_dir") or Path("runs") / name)
    raw = spec.get("stages")
    if not isinstance(raw, list) or not raw or not all(isinstance(e, dict) for e in raw):
        raise ConfigError("must be a non-empty list of {stage, config, …} mappings", where=str(path), field="stages")
    all_ids = [str(e.get("id") or e.get("stage")) for e in raw]
    parsed: dict[str, PipelineEntry] = {}
    for i, entry in enumerate(raw):
        entry_id = all_ids[i]
        where = f"{path}: stages[{i}] ({entry_id})"
        if set(entry) - ENTRY_KEYS:
            raise ConfigError(f"unknown key (an entry has {', '.join(sorted(ENTRY_KEYS))})", where=where,
                              field=sorted(set(entry) - ENTRY_KEYS)[0])
        stage = entry.get("stage")
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r} (known: {', '.join(STAGES)})", where=where, field="stage")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", entry_id):
            raise ConfigError("an id is a directory name: letters, digits, _ . -", where=where, field="id")
        if entry_id in all_ids[:i]:
            raise ConfigError(f"id {entry_id!r} is used twice (give one entry an `id`)", where=where, field="id")
        st = STAGES[stage]
        dataclass_types, _ = st.load()
        fields = dataclass_fields(dataclass_types)
        earlier = [(e.id, e.spec.name) for e in parsed.values()]
        inputs = _default_inputs(st, fields, earlier)
        inputs.update(_explicit_inputs(entry.get("inputs") or {}, fields, [e for e, _ in earlier], all_ids, where))
        inputs = {f: v for f, v in inputs.items() if v is not None}  # null: keep the YAML's value
        overrides: dict[str, Any] = {"output_dir": str(run_dir / entry_id)}
        for f, upstream in inputs.items():
            overrides[f] = ([str(run_dir / u) for u in upstream] if isinstance(upstream, list)
                            else str(run_dir / upstream))
        overrides.update(_wired_values(st, inputs, parsed))
        config_path = path.parent / entry.get("config", f"{stage}.yaml")
        args = parse_config(dataclass_types, config_path, overrides=overrides)
        st.check_args(args, config_path)
        parsed[entry_id] = PipelineEntry(entry_id, st, config_path, entry.get("budget_s"), inputs, args)
    return Pipeline(name, run_dir, list(parsed.values()))


def select_entries(pipeline: Pipeline, only: str | None, start_from: str | None, where: str) -> list[str]:
    ids = pipeline.ids
    for flag, value in (("--only", only), ("--from", start_from)):
        if value is not None and value not in ids:
            raise ConfigError(f"{flag} {value!r} is not an entry of this pipeline (ids: {', '.join(ids)})",
                              where=where)
    if only:
        return [only]
    return ids[ids.index(start_from):] if start_from else ids


def run_pipeline(
    path: str | Path,
    *,
    run_dir: str | Path | None = None,
    only: str | None = None,
    start_from: str | None = None,
    force: bool = False,
    extra: dict[str, dict[str, Any]] | None = None,
    log: Callable[[str], None] = lambda m: print(f"[hfllm] {m}", flush=True),
) -> dict[str, str]:
    """Run (or skip) each entry; return {entry id: "ran" | "skipped"}. `extra[id]` → stage kwargs."""
    pipeline = load_pipeline(path, run_dir)
    selected = select_entries(pipeline, only, start_from, str(path))
    status: dict[str, str] = {}
    for entry in pipeline.entries:
        if entry.id not in selected:
            continue
        stage_dir = pipeline.run_dir / entry.id
        fingerprint, _ = stage_fingerprint(entry.spec, entry.args)
        manifest = read_manifest(stage_dir)
        if manifest and manifest.get("fingerprint") == fingerprint and not force:
            log(f"{entry.id}: unchanged, skipped ({stage_dir})")
            status[entry.id] = "skipped"
            continue
        log(f"{entry.id}: running {entry.spec.name} ({entry.config_path} → {stage_dir})")
        m = execute_stage(entry.spec, entry.args, entry_id=entry.id, run_dir=pipeline.run_dir,
                          report_entries=pipeline.ids, budget_s=entry.budget_s, config_path=entry.config_path,
                          extra=(extra or {}).get(entry.id))
        log(f"{entry.id}: done in {m['wall_time_s']:.1f} s")
        status[entry.id] = "ran"
    report = write_report(pipeline.run_dir, {i: pipeline.run_dir / i for i in pipeline.ids}, title=pipeline.name)
    log(f"report: {report}")
    return status
