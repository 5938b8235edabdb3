"""Task evaluation: intervals against hand-computed values, the gates, scores.json, the overlap count."""

import json
from pathlib import Path

import pytest

from hfllm.alignment.synthetic import SyntheticArguments, run_synthetic_stage
from hfllm.alignment.task_eval import TaskEvalArguments, paired_bootstrap, run_task_eval_stage, wilson_interval
from hfllm.errors import CheckFailed
from hfllm.report import Section, StageContext


@pytest.fixture(scope="session")
def tiny_dir(tiny_run) -> Path:
    return tiny_run


def context(tmp_path, name="task_eval"):
    return StageContext(entry_id=name, run_dir=tmp_path, section=Section(name, name))


def test_wilson_interval_hand_values():
    low, high = wilson_interval(50, 100)  # p = 0.5, n = 100: 0.5 ± 0.0962 (Wilson, z = 1.96)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    low, high = wilson_interval(0, 10)  # never zero width: [0, 0.2775]
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.2775, abs=1e-4)


def test_paired_bootstrap():
    a = [True] * 60 + [False] * 40
    same = paired_bootstrap(a, a)
    assert same == {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n": 100}
    b = [True] * 40 + [False] * 60  # a wins on 20 prompts, never loses: every resample is ≥ 0
    diff = paired_bootstrap(a, b, samples=4000, seed=1)
    assert diff["difference"] == pytest.approx(0.2)
    assert 0.11 < diff["ci_low"] < 0.2 < diff["ci_high"] < 0.29  # ≈ 0.2 ± 1.96·sqrt(0.2·0.8/100)
    assert paired_bootstrap(a, b, seed=1) == paired_bootstrap(a, b, seed=1)


def test_gates_config_is_checked():
    with pytest.raises(ValueError, match="require_better"):
        TaskEvalArguments(models=["x"], require_better=["dpo beats sft"])
    with pytest.raises(ValueError, match="unknown task"):
        TaskEvalArguments(models=["x"], tasks=["chess"])


def test_task_eval_scores_overlap_and_failing_gate(tiny_dir, tmp_path):
    synthetic = tmp_path / "synthetic"
    run_synthetic_stage(SyntheticArguments(tasks=["addition"], num_conversations=2000, num_prompts=300,
                                           tokenizer_name=str(tiny_dir / "tokenizer"), output_dir=str(synthetic)),
                        context=context(tmp_path, "synthetic"))
    base = str(tiny_dir / "pretrain")
    args = TaskEvalArguments(models=[base], tasks=["addition"], num_prompts=300, max_new_tokens=8,
                             train_datasets=[str(synthetic)], require_better=["pretrain > pretrain + 0.05"],
                             output_dir=str(tmp_path / "task_eval"))
    with pytest.raises(CheckFailed, match=r"pretrain − pretrain = \+0.000") as failed:
        run_task_eval_stage(args, context=context(tmp_path))
    assert "95 % CI" in str(failed.value)
    scores = json.loads((tmp_path / "task_eval" / "scores.json").read_text())
    assert list(scores) == ["pretrain"] and set(scores["pretrain"]) == {"accuracy", "ci_low", "ci_high", "n"}
    assert scores["pretrain"]["n"] == 300 and scores["pretrain"]["accuracy"] == 0.0  # no chat training yet
    results = json.loads((tmp_path / "task_eval" / "results.json").read_text())
    assert results["heldout_training_overlap"] == 0
    replies = (tmp_path / "task_eval" / "replies.jsonl").read_text().splitlines()
    assert len(replies) == 300 and json.loads(replies[0])["model"] == "pretrain"

    # A training set that contains held-out prompts is caught.
    import datasets

    from hfllm.alignment.tasks import distinct_problems

    leaked = tmp_path / "leaked"
    rows = [{"messages": [{"role": "user", "content": p.prompt}, {"role": "assistant", "content": p.solution}]}
            for p in distinct_problems(["addition"], 300, 0, "test")[:7]]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(leaked))
    args = TaskEvalArguments(models=[base], tasks=["addition"], num_prompts=300, max_new_tokens=4,
                             train_datasets=[str(leaked)], output_dir=str(tmp_path / "task_eval2"))
    with pytest.raises(CheckFailed, match="7 held-out prompts appear in a training dataset"):
        run_task_eval_stage(args, context=context(tmp_path))


def test_win_rates_by_hand_with_the_verifier_as_judge():
    """100 held-out problems: a right on the first 30, b on the first 10. a wins 20, the other 80 tie:
    raw win-rate (20 + 80 / 2) / 100 = 60 %, equal to the verifier's own; the judge (here the verifier)
    agrees with the verifier on all 20 pairs where exactly one reply is right."""
    from hfllm.alignment.task_eval import judge_win_rates
    from hfllm.alignment.tasks import distinct_problems

    problems = distinct_problems(["addition"], 100, 0, "test")
    prompts = [p.prompt for p in problems]
    replies = {"a": [p.solution if i < 30 else "no idea" for i, p in enumerate(problems)],
               "b": [p.solution if i < 10 else "no idea" for i, p in enumerate(problems)]}
    outcomes = {m: [i < (30 if m == "a" else 10) for i in range(100)] for m in replies}
    args = TaskEvalArguments(models=["a", "b"], tasks=["addition"], win_rates=["a vs b"], judge="verifier")
    (judged,) = judge_win_rates(args, prompts, outcomes, replies).values()
    assert judged["win_rate"] == pytest.approx(60.0) and judged["verifier_win_rate"] == pytest.approx(60.0)
    assert judged["verifier_agreement"] == {"agreement": 1.0, "pairs": 20}
    assert judged["win_rate_ci"][0] < 60.0 < judged["win_rate_ci"][1] and judged["judge"] == "verifier"
    with pytest.raises(ValueError, match="need a judge"):
        TaskEvalArguments(models=["a"], win_rates=["a vs b"])
    with pytest.raises(ValueError, match="not 'a vs b'"):
        TaskEvalArguments(models=["a"], win_rates=["a beats b"], judge="verifier")
