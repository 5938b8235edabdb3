"""Evaluation from an installed wheel (not the source tree), run from another directory: the task
template ships as package data, the run's task YAML and its data land under the run directory,
and the README's `lm_eval --include_path <run>/tasks` line works from anywhere."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """hfllm built as a wheel and installed apart (no dependencies: the venv has them)."""
    build = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(build / "dist"), str(REPO)], check=True, capture_output=True, cwd=build)
    (wheel,) = (build / "dist").glob("hfllm-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(build / "site"),
                    str(wheel)], check=True, capture_output=True, cwd=build)
    return build / "site"


def run_from(cwd: Path, site: Path, *cmd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_installed_wheel_evaluates_from_another_directory(tiny_run, installed_wheel, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run_from(elsewhere, installed_wheel, sys.executable, "-c", "import hfllm; print(hfllm.__file__)")
    assert where.stdout.strip().startswith(str(installed_wheel))  # the wheel's copy, not the source tree
    assert not list(installed_wheel.glob("hfllm/evaluation/tasks/*.jsonl"))  # nothing generated in the package

    config = tmp_path / "profile"
    config.mkdir()
    (config / "evaluation.yaml").write_text(
        f"model_name_or_path: {tiny_run / 'pretrain'}\ndataset_name: {tiny_run / 'data'}\n"
        "max_eval_docs: 6\nbigram_baseline: false\n")
    (config / "pipeline.yaml").write_text("name: w\nstages:\n  - {stage: eval, config: evaluation.yaml}\n")
    run_dir = tmp_path / "runs" / "w"
    run_from(elsewhere, installed_wheel, sys.executable, "-m", "hfllm.cli", "run", str(config / "pipeline.yaml"),
             "--run_dir", str(run_dir))
    metrics = json.loads((run_dir / "eval" / "manifest.json").read_text())["metrics"]
    assert metrics["lm_eval_abs_diff"] < 1e-3
    task = (run_dir / "tasks" / "hfllm_heldout_bpb.yaml").read_text()
    assert str((run_dir / "tasks" / "hfllm_heldout_bpb.jsonl").resolve()) in task

    # The README's line, from yet another directory.
    lm_eval = str(Path(sys.executable).with_name("lm_eval"))
    proc = run_from(tmp_path, installed_wheel, lm_eval, "--model", "hf", "--model_args",
                    f"pretrained={tiny_run / 'pretrain'}", "--include_path", str(run_dir / "tasks"),
                    "--tasks", "hfllm_heldout_bpb", "--output_path", str(tmp_path / "lm_eval_out"))
    (result,) = (tmp_path / "lm_eval_out").rglob("results_*.json")
    bpb = json.loads(result.read_text())["results"]["hfllm_heldout_bpb"]["bits_per_byte,none"]
    assert abs(bpb - metrics["bits_per_byte"]) < 1e-3, proc.stdout[-1000:]
