"""Scaling laws: the fits against hand-computed values and against synthetic losses at the
`make scaling` sweep's own (N, D) points; the sweep's plan and its one-line errors; the smoke sweep
through the pretraining stage, end to end, skipped and resumed."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO

from hfllm.configs import load_yaml, parse_config
from hfllm.errors import ConfigError, DataError
from hfllm.planner import Law, load_law
from hfllm.scaling.fits import (
    SweepPoint,
    bootstrap,
    fit_isoflop,
    fit_law,
    fit_points,
    huber_objective,
    isoflop_minimum,
)
from hfllm.scaling.stage import batch_tokens, check_scaling_args, check_single_pass, pretrain_args
from hfllm.scaling.sweep import ScalingArguments, nearest_shape, plan_point, plan_prediction, plan_sweep

PROFILE = REPO / "recipes" / "configs" / "scaling"


def scaling_args(config: str = "scaling.yaml", **overrides) -> ScalingArguments:
    """A profile's scaling config, its `pretrain_config` (a path from the repository's root) made absolute."""
    pretrain_config = str(REPO / load_yaml(PROFILE / config)["pretrain_config"])
    (args,) = parse_config((ScalingArguments,), PROFILE / config,
                           overrides={"pretrain_config": pretrain_config, **overrides})
    return args


def make_scaling_points() -> list:
    """The 12 runs of `make scaling`, planned as the stage plans them: the profile's budgets and sizes,
    its tokenizer's vocabulary, its pretraining's block length and batch."""
    args = scaling_args()
    _, training_args, _ = pretrain_args(args)
    vocab = load_yaml(PROFILE / "tokenizer.yaml")["vocab_size"]
    return plan_sweep(args, vocab, training_args.max_length, batch_tokens(training_args))


# ---------------------------------------------------------------------------------------------
# The fits, by hand


def test_huber_objective_by_hand():
    """Only the E term (A and B at e^-60): log L̂ = log 2. A residual of 0.5 δ is quadratic,
    0.5 · 0.5² = 0.125; one of 3 δ is linear, 3 − 0.5 = 2.5 (units of δ²)."""
    theta = np.array([-60.0, -60.0, math.log(2.0), 0.0, 0.0])
    one = np.zeros(2)
    log_loss = np.array([math.log(2.0) + 0.0005, math.log(2.0) + 0.003])
    value, grad = huber_objective(theta, one, one, log_loss, delta=1e-3)
    assert value == pytest.approx(0.125 + 2.5, rel=1e-6)
    # d/de: Σ (r/δ clipped to ±1) / δ · share of E (= 1) = (−0.5 − 1) / 1e-3
    assert grad[2] == pytest.approx(-1500.0, rel=1e-6)


def test_huber_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    log_n, log_d = np.log(rng.uniform(1e5, 1e7, 10)), np.log(rng.uniform(1e6, 1e8, 10))
    log_loss = np.log(rng.uniform(2.5, 4.0, 10))
    theta = np.array([4.0, 5.0, 0.2, 0.35, 0.3])
    _, grad = huber_objective(theta, log_n, log_d, log_loss, delta=0.05)
    for i in range(5):
        step = np.zeros(5)
        step[i] = 1e-6
        up, _ = huber_objective(theta + step, log_n, log_d, log_loss, delta=0.05)
        down, _ = huber_objective(theta - step, log_n, log_d, log_loss, delta=0.05)
        assert grad[i] == pytest.approx((up - down) / 2e-6, rel=1e-4)


def test_isoflop_minimum_by_hand():
    """L = 3 + 0.2·(log N − log 1e5)²: the vertex is N = 1e5 at loss 3; D = C / 6N."""
    params = [2.5e4, 5e4, 1e5, 2e5, 4e5]
    losses = [3 + 0.2 * math.log(n / 1e5) ** 2 for n in params]
    m = isoflop_minimum(6e12, params, losses)
    assert m.params == pytest.approx(1e5, rel=1e-9) and m.loss == pytest.approx(3.0, abs=1e-12)
    assert m.tokens == pytest.approx(1e7) and m.inside
    assert isoflop_minimum(6e12, params, [-x for x in losses]) is None  # concave: no minimum
    assert isoflop_minimum(6e12, [1e5, 1e5, 2e5], [3.0, 3.1, 3.2]) is None  # two sizes: no parabola


def test_approach2_exponents_by_hand():
    """Vertices at N = 0.1·C^0.5 exactly: a = 0.5, and D = C / 6N = (10/6)·C^0.5: b = 0.5."""
    points = []
    for budget in (1e12, 4e12, 1.6e13):
        best = 0.1 * budget**0.5
        for n in (best / 4, best / 2, best, best * 2, best * 4):
            points.append(SweepPoint(budget, n, budget / (6 * n), 3 + 0.1 * math.log(n / best) ** 2))
    fit = fit_isoflop(points)
    assert fit.params.exponent == pytest.approx(0.5, abs=1e-9)
    assert fit.params.coefficient == pytest.approx(0.1, rel=1e-6)
    assert fit.tokens.exponent == pytest.approx(0.5, abs=1e-9)
    assert fit.tokens.coefficient == pytest.approx(10 / 6, rel=1e-6)


def test_compute_optimal_is_the_isoflop_minimum():
    """The closed form (Hoffmann et al. eq. 4) against a search along 6ND = C."""
    law = Law("t", E=1.5, A=60.0, B=120.0, alpha=0.35, beta=0.30)
    for flops in (1e12, 1e18, 5.76e23):
        params, tokens = law.compute_optimal(flops)
        grid = np.geomspace(params / 3, params * 3, 20001)
        best = grid[np.argmin([law.loss(n, flops / (6 * n)) for n in grid])]
        assert params == pytest.approx(best, rel=2e-3) and 6 * params * tokens == pytest.approx(flops)


def test_fit_recovers_exact_constants_at_the_sweeps_points():
    truth = Law("t", E=1.2, A=40.0, B=150.0, alpha=0.35, beta=0.30)
    points = make_scaling_points()
    law = fit_law([p.params for p in points], [p.tokens for p in points],
                  [truth.loss(p.params, p.tokens) for p in points])
    for k in ("E", "A", "B", "alpha", "beta"):
        assert getattr(law, k) == pytest.approx(getattr(truth, k), rel=1e-3), k


def test_bootstrap_of_exact_losses_collapses_on_the_truth():
    """Every resample of losses the law gives exactly is fitted exactly: each 95 % interval is the
    true constant to 1e-3, and approach 2 keeps only the resamples whose every budget still has its
    vertex inside its sizes (this law's optima lie inside the sweep's profiles; A = 40's lie below
    their smallest model, where approach 2 uses no resample)."""
    truth = Law("t", E=1.2, A=200.0, B=150.0, alpha=0.35, beta=0.30)
    points = [SweepPoint(p.budget, p.params, p.tokens, truth.loss(p.params, p.tokens)) for p in make_scaling_points()]
    full = fit_points(points)
    boot = bootstrap(points, samples=12, seed=0, full_fit=full)
    for k, (low, high) in boot.law_intervals().items():
        assert low == pytest.approx(getattr(truth, k), rel=1e-3) and high == pytest.approx(getattr(truth, k), rel=1e-3)
    assert len(boot.laws) == 12 and 0 < boot.approach2_used < 12
    for fit in boot.isoflop:
        assert len(fit.minima) == 3 and all(m.inside for m in fit.minima)
    below = [SweepPoint(p.budget, p.params, p.tokens, Law("t", E=1.2, A=40.0, B=150.0, alpha=0.35, beta=0.30).loss(
        p.params, p.tokens)) for p in make_scaling_points()]
    assert fit_isoflop(below) is None and bootstrap(below, samples=4, seed=0).approach2_used == 0


# ---------------------------------------------------------------------------------------------
# The sweep's plan and its errors


def test_make_scaling_plan():
    """3 budgets × 4 sizes, each run 6·N·D within half a step of its budget, four distinct models of
    at least two layers per budget, the largest run within the ≥ 20M unique tokens of its data."""
    points = make_scaling_points()
    assert len(points) == 12 and len({p.budget for p in points}) == 3
    for p in points:
        assert abs(p.flops - p.budget) <= 6 * p.params * p.batch_tokens / 2
        assert p.shape.num_layers >= 2 and p.steps >= 50
    for budget in {p.budget for p in points}:
        assert len({p.shape for p in points if p.budget == budget}) == 4
    assert max(p.tokens for p in points) < 20e6


def test_plan_point_steps_by_hand():
    """6e12 FLOPs on 291,264 parameters at 4,096 tokens a step: 6e12 / (6 · 291,264 · 4,096) = 838.2 → 838."""
    shape = next(p.shape for p in make_scaling_points() if p.shape.params == 291_264)
    point = plan_point(6e12, shape, 4096)
    assert point.steps == 838 and point.tokens == 838 * 4096 and point.id == "c6e12_3x64"


def _write_profile(tmp_path: Path, **scaling) -> Path:
    """A copy of the scaling profile with some of scaling.yaml's values replaced."""
    out = tmp_path / "profile"
    shutil.copytree(PROFILE, out)
    config = load_yaml(out / "scaling.yaml") | scaling
    (out / "scaling.yaml").write_text(yaml.safe_dump(config))
    return out


def _hfllm(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hfllm.cli", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("hfllm: error:")]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_budget_smaller_than_the_smallest_model_is_one_line(tmp_path):
    profile = _write_profile(tmp_path, budgets=[1.0e9, 3.0e9])
    line = _one_error_line(_hfllm("scaling", "plan", str(profile / "scaling.yaml"), "--vocab_size", "2048"))
    assert "budget 1e+09 FLOPs" in line and "smaller than the smallest model" in line and "2x32" in line
    # the same check stops `hfllm run` before any entry runs (the vocabulary wired from tokenizer.yaml)
    line = _one_error_line(_hfllm("run", str(profile / "pipeline.yaml"), "--run_dir", str(tmp_path / "run")))
    assert "smaller than the smallest model" in line and "scaling.yaml" in line
    assert not (tmp_path / "run").exists()


def test_pipeline_wires_the_sweep(tmp_path, monkeypatch):
    from hfllm.pipeline import load_pipeline

    monkeypatch.chdir(REPO)
    pipeline = load_pipeline(PROFILE / "pipeline.yaml", run_dir=tmp_path)
    (args,) = pipeline.entries[-1].args
    assert pipeline.ids == ["data", "tokenizer", "scaling"]
    assert args.dataset_name == str(tmp_path / "data") and args.tokenizer_name == str(tmp_path / "tokenizer")
    assert args.vocab_size == 2048 and args.runs_dir == tmp_path / "sweep"


def test_runs_must_read_each_block_once(tmp_path):
    points = make_scaling_points()
    largest = max(p.tokens for p in points)
    check_single_pass(points, largest)
    with pytest.raises(DataError, match="at most once"):
        check_single_pass(points, largest - 1)
    pretrain = tmp_path / "pretrain.yaml"
    pretrain.write_text((PROFILE / "pretrain.yaml").read_text() + "data_mixture: true\nmax_steps: 10\n")
    with pytest.raises(ConfigError, match="at most once"):
        check_scaling_args(scaling_args(pretrain_config=str(pretrain)))


# ---------------------------------------------------------------------------------------------
# The smoke sweep: through the pretraining stage, end to end


def _started(runs_dir: Path) -> dict[str, str]:
    """Each finished run's start time and wall time: a run trained again changes both."""
    out = {}
    for d in sorted(runs_dir.iterdir()):
        if (d / "manifest.json").exists():
            m = json.loads((d / "manifest.json").read_text())
            out[d.name] = f"{m['started_at']} {m['wall_time_s']}"
    return out


@pytest.mark.training
def test_smoke_sweep(tiny_run, tmp_path):
    """recipes/configs/scaling/smoke.yaml on the tiny profile's data and tokenizer: every run a
    pretraining entry that trained on its planned tokens, each block once; law.json readable by the
    planner, with an interval on every constant; the plot and the prediction row; run again, nothing
    is retrained; a run killed before its manifest continues from its checkpoint."""
    from hfllm.pipeline import STAGES, execute_stage

    args = scaling_args("smoke.yaml", dataset_name=str(tiny_run / "data"), tokenizer_name=str(tiny_run / "tokenizer"),
                        output_dir=str(tmp_path / "scaling"))
    manifest = execute_stage(STAGES["scaling"], (args,))
    out, runs_dir = tmp_path / "scaling", tmp_path / "sweep"
    runs = json.loads((out / "sweep.json").read_text())["runs"]
    assert len(runs) == 7 and runs[-1]["id"].startswith("predict_c1.8e10_")
    for run in runs:
        m = json.loads((runs_dir / run["id"] / "manifest.json").read_text())
        assert m["stage"] == "pretrain" and m["id"] == run["id"]
        assert m["metrics"]["tokens_seen"] == run["tokens"] <= m["metrics"]["train_blocks"] * 64
        assert m["metrics"]["eval_loss"] == pytest.approx(run["loss"])
        assert m["config"]["max_steps"] == run["steps"] and m["config"]["lr_scheduler_type"] == "cosine"

    law = load_law(str(out / "law.json"))
    assert set(law.intervals) == {"E", "A", "B", "alpha", "beta"}
    record = json.loads((out / "law.json").read_text())
    assert record["prediction"]["measured"] == pytest.approx(runs[-1]["loss"])
    assert record["prediction"]["predicted"] == pytest.approx(law.loss(runs[-1]["params"], runs[-1]["tokens"]))
    assert Path(record["plot"]).stat().st_size > 10_000
    assert manifest["metrics"]["prediction_run"] == runs[-1]["id"]
    section = json.loads((out / "report_section.json").read_text())
    assert any("prediction run" in block and runs[-1]["id"] in block for block in section["blocks"])
    shown = _hfllm("scaling", "show", str(out))
    assert shown.returncode == 0 and "alpha" in shown.stdout and "predicted" in shown.stdout
    assert _hfllm("plan", "--flops", "1e15", "--law", str(out / "law.json")).returncode == 0

    before = _started(runs_dir)
    execute_stage(STAGES["scaling"], (args,))
    assert _started(runs_dir) == before  # nothing retrained

    # a run killed between two checkpoints: its manifest, final weights and last checkpoint never written
    killed = max(runs[:-1], key=lambda r: r["steps"])
    save_steps = load_yaml(PROFILE / "smoke_pretrain.yaml")["save_steps"]
    last_before_kill = (killed["steps"] - 1) // save_steps * save_steps
    for path in [runs_dir / killed["id"] / "manifest.json", runs_dir / killed["id"] / "model.safetensors",
                 *(runs_dir / killed["id"]).glob("checkpoint-*")]:
        if path.name != f"checkpoint-{last_before_kill}":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    execute_stage(STAGES["scaling"], (args,))
    after = _started(runs_dir)
    assert {k: v for k, v in after.items() if k != killed["id"]} == {k: v for k, v in before.items()
                                                                       if k != killed["id"]}
    resumed = json.loads((runs_dir / killed["id"] / "manifest.json").read_text())["metrics"]
    assert resumed["resumed_from"] == f"checkpoint-{last_before_kill}" and resumed["steps"] == killed["steps"]
    assert resumed["tokens_seen"] == killed["tokens"]


def test_the_prediction_run_reads_each_block_at_most_once():
    """Sized at the law's compute-optimal N while that N's tokens fit in the training split; when they
    do not, the smallest shape whose tokens fit (the run nearest the optimum that still reads each
    block once)."""
    args = scaling_args()
    _, training_args, _ = pretrain_args(args)
    vocab, batch = load_yaml(PROFILE / "tokenizer.yaml")["vocab_size"], batch_tokens(training_args)
    shapes = args.shapes(vocab, training_args.max_length)
    optimal = 270_000.0  # 7.2e13 FLOPs / (6 · 270k) ≈ 44M tokens
    free = plan_prediction(args, optimal, vocab, training_args.max_length, batch)
    assert free.shape == nearest_shape(optimal, shapes) and free.tokens > 40_000_000
    assert plan_prediction(args, optimal, vocab, training_args.max_length, batch, unique_tokens=10**9) == free
    bounded = plan_prediction(args, optimal, vocab, training_args.max_length, batch, unique_tokens=20_000_000)
    assert bounded.tokens <= 20_000_000 and bounded.budget == args.prediction_budget
    smaller = [s for s in shapes if s.params < bounded.params]
    assert all(plan_point(args.prediction_budget, s, batch).tokens > 20_000_000 for s in smaller)


def test_a_missed_prediction_says_why():
    """Where the measured loss lies against the interval, the extrapolation in D, and the profiles that
    hold no minimum (a law whose optima lie below the sweep's smallest models: none do)."""
    from hfllm.scaling.report import miss_reasons
    from hfllm.scaling.stage import Prediction

    truth = Law("t", E=1.2, A=40.0, B=150.0, alpha=0.35, beta=0.30)
    points = [SweepPoint(p.budget, p.params, p.tokens, truth.loss(p.params, p.tokens), p.id)
              for p in make_scaling_points()]
    tokens = 2 * max(p.tokens for p in points)
    prediction = Prediction("predict", 7.2e13, 6e5, tokens, 3.3, (3.2, 3.4), 2.9, 3.8)
    text = miss_reasons(fit_points(points), points, prediction)
    assert "lies below the fit's 95 % interval" in text and "its D is 2.0× the sweep's largest" in text
    assert "N is" not in text  # 6e5 parameters is inside the sweep's sizes
    assert "profiles of 2e+12, 6e+12, 1.8e+13 FLOPs hold no minimum" in text and "misses most on c" in text
