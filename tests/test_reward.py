"""Reward-model stage on the tiny model: pad_token_id saved, held-out accuracy and margin,
drops counted, bad input."""

import json
from pathlib import Path

import datasets
import pytest
from transformers import AutoModelForSequenceClassification
from trl import ModelConfig, RewardConfig

from hfllm.alignment.reward import RewardScriptArguments, pairwise_accuracy, run_reward_stage
from hfllm.alignment.tasks import TASKS, sample_problems
from hfllm.errors import DataError
from hfllm.report import Section, StageContext


@pytest.fixture(scope="session")
def tiny_dir(tiny_run) -> Path:
    return tiny_run


def context(tmp_path, name="reward"):
    return StageContext(entry_id=name, run_dir=tmp_path, section=Section(name, name))


def preference_dataset(path: Path, n: int = 120) -> str:
    """Right worked solutions against the teacher's forgotten carry (problems that have one)."""
    rows = []
    for p in sample_problems(["addition"], 4 * n, seed=9):
        wrong = TASKS["addition"].write_solution(p.prompt, mistake=True)
        if wrong is None:
            continue
        rows.append({"prompt": [{"role": "user", "content": p.prompt}],
                     "chosen": [{"role": "assistant", "content": p.solution}],
                     "rejected": [{"role": "assistant", "content": wrong}],
                     "score_chosen": 1.0, "score_rejected": 0.0})
        if len(rows) == n:
            break
    ds = datasets.Dataset.from_list(rows)
    datasets.DatasetDict({"train": ds.select(range(20, n)), "test": ds.select(range(20))}).save_to_disk(str(path))
    return str(path)


def reward_config(out, steps=6):
    return RewardConfig(output_dir=str(out), max_steps=steps, per_device_train_batch_size=8, learning_rate=1e-3,
                        bf16=False, gradient_checkpointing=False, max_length=64, save_strategy="no", report_to="none",
                        disable_tqdm=True, logging_steps=1)


def test_pairwise_accuracy_hand_values():
    measured = pairwise_accuracy([1.0, 0.5, 2.0, 0.0], [0.0, 1.0, 1.0, 0.0])
    assert measured == {"accuracy": 0.5, "margin": 0.375, "pairs": 4}


def test_reward_stage(tiny_dir, tmp_path):
    data = preference_dataset(tmp_path / "pairs")
    out = tmp_path / "reward"
    metrics = run_reward_stage(RewardScriptArguments(dataset_name=data), reward_config(out),
                               ModelConfig(model_name_or_path=str(tiny_dir / "pretrain")), context=context(tmp_path))
    assert metrics["train_pairs"] == 100 and metrics["steps"] == 6 and metrics["attn_implementation"] == "sdpa"
    config = json.loads((out / "config.json").read_text())
    assert config["pad_token_id"] is not None
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.pad_token_id == config["pad_token_id"] and model.config.num_labels == 1
    assert 0 <= metrics["heldout_accuracy"] <= 1 and metrics["heldout_pairs"] == 20


def test_reward_stage_measures_held_out_pairs_and_counts_identical(tiny_dir, tmp_path):
    data = preference_dataset(tmp_path / "pairs")
    dd = datasets.load_from_disk(data)
    train = dd["train"].to_list()
    train[0]["rejected"] = train[0]["chosen"]  # one identical pair
    edited = datasets.DatasetDict({"train": datasets.Dataset.from_list(train), "test": dd["test"]})
    edited.save_to_disk(str(tmp_path / "p2"))
    metrics = run_reward_stage(RewardScriptArguments(dataset_name=str(tmp_path / "p2")), reward_config(tmp_path / "r"),
                               ModelConfig(model_name_or_path=str(tiny_dir / "pretrain"), attn_implementation="eager"),
                               context=context(tmp_path))
    assert metrics["attn_implementation"] == "eager"  # ModelConfig's choice reaches the reward model
    assert metrics["dropped"] == {"identical chosen and rejected": 1} and metrics["train_pairs"] == 99
    assert metrics["heldout_pairs"] == 20 and -100 < metrics["heldout_margin"] < 100


def test_reward_stage_bad_input(tiny_dir, tmp_path):
    no_rejected = tmp_path / "bad"
    rows = [{"prompt": "a", "chosen": "b"}]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(no_rejected))
    with pytest.raises(DataError, match="column not found") as err:
        run_reward_stage(RewardScriptArguments(dataset_name=str(no_rejected), dataset_test_split=None),
                         reward_config(tmp_path / "r"), ModelConfig(model_name_or_path=str(tiny_dir / "pretrain")),
                         context=context(tmp_path))
    assert err.value.field == "rejected"
