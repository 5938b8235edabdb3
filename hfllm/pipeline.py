"""The pipeline runner: stages in order, in one process, one directory each under `runs/<name>/`.

A pipeline file names the run and lists its stages, each with the same YAML a user would pass to
`python recipes/<stage>.py --config …`:

    name: tiny
    stages:
      - {stage: data, config: data.yaml, budget_s: 20}
      - {stage: tokenizer, config: tokenizer.yaml}

The runner wires the stages together: each stage's `output_dir` becomes `<run_dir>/<stage>` and
its inputs (e.g. pretrain's `dataset_name` and `tokenizer_name`) point at the upstream stage
directories, when those stages are in the pipeline — except fields the entry lists under
`unwired` (e.g. pretraining that streams the Hub dataset the data stage only sampled). Every
stage config is checked before any stage runs, so a bad key fails the run before anything is
written.

Each finished stage writes `manifest.json` (resolved config, inputs and their fingerprints,
metrics, versions, git revision, wall time) and its report section; report.md is rebuilt after
every stage. A stage whose fingerprint (config + inputs' fingerprints) matches its manifest is
skipped. A stage interrupted mid-way keeps its directory, so pretraining resumes from its last
checkpoint — unless its config changed, in which case the directory is cleared first.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from hfllm.configs import load_yaml, parse_config_file, to_dict
from hfllm.errors import CheckFailed, ConfigError, HfllmError
from hfllm.report import StageResult, write_report

MANIFEST = "manifest.json"
STARTED = ".stage_fingerprint"  # written when a stage starts; says whose partial output this is


@dataclass(frozen=True)
class StageSpec:
    name: str
    module: str  # where the stage's dataclasses and run function live (imported lazily)
    dataclasses: tuple[str, ...]
    run: str
    inputs: tuple[tuple[str, str], ...]  # (config field, upstream stage)

    def load(self) -> tuple[tuple[type, ...], Callable[..., StageResult]]:
        mod = importlib.import_module(self.module)
        return tuple(getattr(mod, n) for n in self.dataclasses), getattr(mod, self.run)


# Stage order is the data flow. Later issues add sft, reward, dpo, ppo here.
STAGES: dict[str, StageSpec] = {
    s.name: s
    for s in [
        StageSpec("data", "hfllm.data.loading", ("DataArguments",), "run_data_stage", ()),
        StageSpec("tokenizer", "hfllm.tokenizer", ("TokenizerArguments",), "run_tokenizer_stage", (("dataset_name", "data"),)),
        StageSpec(
            "pretrain", "hfllm.pretrain",
            ("PretrainScriptArguments", "PretrainConfig", "PretrainModelArguments"), "run_pretrain_stage",
            (("dataset_name", "data"), ("eval_dataset_name", "data"), ("tokenizer_name", "tokenizer")),
        ),
        StageSpec("eval", "hfllm.evaluation.stage", ("EvalArguments",), "run_eval_stage",
                  (("model_name_or_path", "pretrain"), ("dataset_name", "data"))),
    ]
}

VERSIONED = ("torch", "transformers", "trl", "datasets", "accelerate", "peft", "tokenizers", "lm_eval", "hfllm")


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


def input_fingerprint(value: str | None) -> str:
    """A stage dir's manifest fingerprint; else a local path's listing; else the name itself (Hub id)."""
    if value is None:
        # The embedded corpus: its text is whatever Python and packages are installed.
        dists = sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions())
        return _sha([platform.python_version(), dists])
    path = Path(value)
    manifest = read_manifest(path)
    if manifest:
        return manifest["fingerprint"]
    if path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        return _sha([(str(p.relative_to(path.parent)), p.stat().st_size, p.stat().st_mtime_ns) for p in files])
    return _sha(value)


def _config_for_fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    # Where things are written and how often we log do not change what a stage computes.
    volatile = {"output_dir", "logging_dir", "run_name", "logging_steps", "disable_tqdm", "report_to"}
    return {k: v for k, v in config.items() if k not in volatile}


def stage_fingerprint(spec: StageSpec, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Hash of the stage's config and its inputs' fingerprints; equal hash → same output."""
    fields = [f for f, _ in spec.inputs] or ["dataset_name"]  # the data stage's input is its dataset
    inputs = {f: {"path": config.get(f), "fingerprint": input_fingerprint(config.get(f))} for f in fields}
    return _sha([spec.name, _config_for_fingerprint(config), inputs]), inputs


def execute_stage(
    spec: StageSpec,
    args: tuple[Any, ...],
    *,
    budget_s: float | None = None,
    extra: dict[str, Any] | None = None,
    stage_order: list[str] | None = None,
    config_path: str | Path | None = None,
) -> dict[str, Any]:
    """Run one stage with parsed args; write its manifest and report section; rebuild report.md.

    `extra` is passed to the stage function as keyword arguments (e.g. Trainer callbacks);
    `config_path` names the file in errors that the stage raises about a field.
    """
    _, run = spec.load()
    config = to_dict(*args)
    stage_dir = Path(config["output_dir"])
    fingerprint, inputs = stage_fingerprint(spec, config)

    # Under `accelerate launch` every rank runs the stage; only rank 0 touches files.
    is_main = int(os.environ.get("RANK", "0")) == 0
    started_marker = stage_dir / STARTED
    previous = stage_dir.with_name(stage_dir.name + ".previous")
    moved_aside = False
    if is_main and stage_dir.exists() and any(stage_dir.iterdir()) and (
        not started_marker.exists() or started_marker.read_text() != fingerprint
    ):
        # Output of another config: not ours to resume from. Set aside rather than deleted, so
        # that a stage refusing its input (HfllmError) leaves the earlier output as it was.
        shutil.rmtree(previous, ignore_errors=True)
        stage_dir.rename(previous)
        moved_aside = True
    if is_main:
        stage_dir.mkdir(parents=True, exist_ok=True)
        (stage_dir / MANIFEST).unlink(missing_ok=True)
        started_marker.write_text(fingerprint)

    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    try:
        result = run(*args, **(extra or {}))
    except HfllmError as err:
        if err.where is None and config_path is not None:
            err.where = str(config_path)
        if is_main and moved_aside:
            if isinstance(err, CheckFailed):  # the new output stands: it shows what failed
                shutil.rmtree(previous, ignore_errors=True)
            else:
                shutil.rmtree(stage_dir, ignore_errors=True)
                previous.rename(stage_dir)
        raise
    if is_main:
        shutil.rmtree(previous, ignore_errors=True)
    wall = time.perf_counter() - t0

    manifest = {
        "stage": spec.name,
        "fingerprint": fingerprint,
        "config": config,
        "inputs": inputs,
        "metrics": result.metrics,
        "versions": package_versions(),
        "git_revision": git_revision(),
        "command": redact_command([Path(sys.argv[0]).name] + sys.argv[1:]),
        "started_at": started.isoformat(timespec="seconds"),
        "wall_time_s": round(wall, 2),
        "budget_s": budget_s,
    }
    if not is_main:
        return manifest
    run_dir = stage_dir.parent
    if result.section is not None:
        result.section.save(stage_dir, run_dir)
    tmp = stage_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, default=str))
    os.replace(tmp, stage_dir / MANIFEST)  # atomic: a manifest is either whole or absent
    write_report(run_dir, stage_order or list(STAGES))
    return manifest


@dataclass
class PipelineStage:
    spec: StageSpec
    config_path: Path
    budget_s: float | None
    args: tuple[Any, ...]


def load_pipeline(path: str | Path, run_dir: str | Path | None = None) -> tuple[str, Path, list[PipelineStage]]:
    """Read a pipeline file and check every stage config (nothing runs or is written here)."""
    path = Path(path)
    spec = load_yaml(path)
    unknown = set(spec) - {"name", "run_dir", "stages", "description"}
    if unknown:
        raise ConfigError("unknown key", where=str(path), field=sorted(unknown)[0])
    name = spec.get("name") or path.parent.name
    run_dir = Path(run_dir or spec.get("run_dir") or Path("runs") / name)
    entries = spec.get("stages")
    if not isinstance(entries, list) or not entries:
        raise ConfigError("must be a non-empty list of {stage, config}", where=str(path), field="stages")
    names = [e.get("stage") if isinstance(e, dict) else None for e in entries]
    stages: list[PipelineStage] = []
    for i, entry in enumerate(entries):
        where = f"{path}: stages[{i}]"
        if not isinstance(entry, dict) or set(entry) - {"stage", "config", "budget_s", "unwired"}:
            raise ConfigError("each stage is a mapping with stage, config, and optional budget_s and unwired", where=where)
        stage = entry.get("stage")
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r} (known: {', '.join(STAGES)})", where=where, field="stage")
        if list(STAGES).index(stage) < max((list(STAGES).index(n) for n in names[:i] if n in STAGES), default=-1):
            raise ConfigError(f"stage {stage!r} is out of order (order: {', '.join(STAGES)})", where=where)
        st = STAGES[stage]
        overrides: dict[str, Any] = {"output_dir": str(run_dir / stage)}
        unwired = entry.get("unwired") or []
        for field_name, upstream in st.inputs:
            if upstream in names and field_name not in unwired:
                overrides[field_name] = str(run_dir / upstream)
        dataclass_types, _ = st.load()
        config_path = path.parent / entry.get("config", f"{stage}.yaml")
        args = parse_config_file(dataclass_types, config_path, overrides)
        stages.append(PipelineStage(st, config_path, entry.get("budget_s"), args))
    return name, run_dir, stages


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
    """Run (or skip) each stage; return {stage: "ran" | "skipped"}. `extra[stage]` → stage kwargs."""
    name, run_dir, stages = load_pipeline(path, run_dir)
    names = [s.spec.name for s in stages]
    for flag, value in (("--only", only), ("--from", start_from)):
        if value is not None and value not in names:
            raise ConfigError(f"{flag} {value!r} is not a stage of this pipeline ({', '.join(names)})", where=str(path))
    if only:
        selected = [only]
    elif start_from:
        selected = names[names.index(start_from):]
    else:
        selected = names
    status: dict[str, str] = {}
    for st in stages:
        if st.spec.name not in selected:
            continue
        stage_dir = run_dir / st.spec.name
        fingerprint, _ = stage_fingerprint(st.spec, to_dict(*st.args))
        manifest = read_manifest(stage_dir)
        if manifest and manifest.get("fingerprint") == fingerprint and not force:
            log(f"{st.spec.name}: unchanged, skipped ({stage_dir})")
            status[st.spec.name] = "skipped"
            continue
        log(f"{st.spec.name}: running ({st.config_path} → {stage_dir})")
        m = execute_stage(st.spec, st.args, budget_s=st.budget_s, extra=(extra or {}).get(st.spec.name),
                          stage_order=list(STAGES), config_path=st.config_path)
        log(f"{st.spec.name}: done in {m['wall_time_s']:.1f} s")
        status[st.spec.name] = "ran"
    report = write_report(run_dir, list(STAGES), title=name)
    log(f"report: {report}")
    return status
