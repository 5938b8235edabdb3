"""`make demo` as a user runs it (the console script, its own process, the demo profile unchanged)
into a temporary run directory, with every gate the issues ask for: the pretrained model below the
bigram floor, SFT above the base model, SFT at its plateau, DPO ≥ 5 points above SFT with a paired
interval above 0, and the reward model's held-out pairwise accuracy ≥ 75 %. The longest test
(≈ 20 min on 2 cores); `pytest -m "not demo"` leaves it out of a quick local run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from test_bpb import assert_ten_percent_below_bigram


@pytest.mark.demo
def test_make_demo_passes_every_gate(tmp_path):
    run_dir = tmp_path / "demo"
    hfllm = Path(sys.executable).with_name("hfllm")
    demo = REPO / "recipes/configs/demo/pipeline.yaml"
    proc = subprocess.run([str(hfllm), "run", str(demo), "--run_dir", str(run_dir)],
                          capture_output=True, text=True, timeout=2700, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_ten_percent_below_bigram(run_dir)
    report = (run_dir / "report.md").read_text()
    assert "(at least 10% required)" in report  # the evaluation stage's own gate ran

    # The post-training gates ran in task_eval (its exit status passed them); the numbers are there.
    results = json.loads((run_dir / "task_eval" / "results.json").read_text())
    scores, diffs = results["scores"], results["differences"]
    assert set(scores) == {"pretrain", "sft", "dpo", "sft_chosen"} and all(s["n"] >= 300 for s in scores.values())
    assert diffs["sft - pretrain"]["ci_low"] > 0
    assert diffs["dpo - sft"]["difference"] >= 0.05 and diffs["dpo - sft"]["ci_low"] > 0, diffs["dpo - sft"]
    assert abs(results["plateau"]["change"]) <= 0.02, results["plateau"]
    assert results["reward_model"]["accuracy"] >= 0.75, results["reward_model"]
    assert results["heldout_training_overlap"] == 0
    assert "Gates: all passed." in report
    for plot in ("sft_loss", "dpo_loss", "dpo_rewards"):
        assert (run_dir / "plots" / f"{plot}.png").exists(), plot
