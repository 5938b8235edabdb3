"""`make demo` as a user runs it (the console script, its own process, the demo profile unchanged)
into a temporary run directory: its model below the bigram floor (the evaluation stage's own gate),
then post-training with task_eval's gates (SFT above base and at its plateau, DPO and PPO ≥ 5 points
above SFT with intervals that exclude 0, the reward model ≥ 75 %). The longest test (≈ 20–25 min on
2 cores); `pytest -m "not demo"` leaves it out of a quick local run."""

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
    # MMLU scored three ways and the contamination table, in stages.json and the report
    table = json.loads((run_dir / "eval" / "stages.json").read_text())
    assert {"hfllm_mmlu", "hfllm_mmlu_text", "hfllm_mmlu_gen"} <= set(table["pretrain"])
    assert table["pretrain"]["hfllm_mmlu"]["n"] == 150
    assert "letter/text differ" in report and "items sharing an n-gram" in report
    # the data stage decontaminated against the run's MMLU items and wrote the copy the eval stage read
    assert (run_dir / "tasks" / "hfllm_mmlu" / "task.json").exists()
    assert "The MMLU-format task was written by this stage" not in report
    # the data section quotes the recorded cleaning ablation, with its plot
    assert "Does cleaning help?" in report and (run_dir / "plots" / "data_ablation.png").exists()
    # post-training: task_eval's gates passed (else the run would have failed, with the numbers)
    scores = json.loads((run_dir / "task_eval" / "scores.json").read_text())
    assert {"pretrain", "sft", "dpo", "ppo", "sft_chosen"} <= set(scores)
    results = json.loads((run_dir / "task_eval" / "results.json").read_text())
    for better in ("dpo - sft", "ppo - sft"):
        assert results["differences"][better]["difference"] >= 0.05 and results["differences"][better]["ci_low"] > 0
    assert results["reward_model"]["accuracy"] >= 0.75 and results["heldout_training_overlap"] == 0
    assert "Gates: all passed." in report and "ppo vs sft" in report  # with the judge's win-rates
    for plot in ("sft_loss.png", "dpo_loss.png", "dpo_rewards.png", "ppo_curves.png"):
        assert (run_dir / "plots" / plot).exists(), plot
    # the table across stages, task_eval's accuracies joined
    table = json.loads((run_dir / "eval_post" / "stages.json").read_text())
    assert {"pretrain", "sft", "dpo", "ppo", "sft_chosen"} <= set(table)


def test_the_demo_post_training_chain_gates_what_the_issues_ask(tmp_path):
    """The demo's post-training entries, wired and gated as the post-training and PPO issues ask."""
    from hfllm.pipeline import load_pipeline

    post = load_pipeline(REPO / "recipes/configs/demo/pipeline.yaml", run_dir=tmp_path)
    assert post.ids[:4] == ["data", "tokenizer", "pretrain", "eval"] and post.name == "demo"
    # pairs ranked with the worked steps checked: a right answer reached by a wrong step is not chosen
    assert post.entries[post.ids.index("feedback")].args[0].judge == "verifier:steps"
    gates = post.entries[post.ids.index("task_eval")].args[0]
    assert gates.require_better == ["sft > pretrain", "dpo > sft + 0.05", "ppo > sft + 0.05"]
    assert (gates.require_plateau_within, gates.require_reward_accuracy) == (0.02, 0.75)
    assert [e.split("/")[-1] for e in gates.models] == ["pretrain", "sft", "dpo", "ppo", "sft_chosen"]
    # PPO from the SFT policy against the first reward model (not the judge), on the synthetic prompts
    ppo = post.entries[post.ids.index("ppo")]
    assert ppo.inputs == {"sft_model_path": "sft", "model_name_or_path": "sft", "reward_model_path": "reward",
                          "dataset_name": "synthetic"}
    # the win-rates' judge: a second reward model on the pairs the first holds out
    judge = post.entries[post.ids.index("reward_judge")].args[0]
    first = post.entries[post.ids.index("reward")].args[0]
    assert (judge.dataset_train_split, first.dataset_train_split) == ("test", "train")
    assert judge.dataset_name == first.dataset_name and gates.judge_model.endswith("/reward_judge")
    assert gates.reward_model.endswith("/reward")  # the gate measures the reward model, not the judge
    assert gates.win_rates == ["dpo vs sft", "ppo vs sft", "sft_chosen vs sft"]
    # the table across stages: every model on the MMLU-format task, task_eval's accuracies joined
    table = post.entries[post.ids.index("eval_post")].args[0]
    assert [m.split("/")[-1] for m in table.models] == ["pretrain", "sft", "dpo", "ppo", "sft_chosen"]
    assert table.mmlu and table.task_scores.endswith("/task_eval")
