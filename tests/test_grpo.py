"""The GRPO stage (TRL's GRPOTrainer) on PPO's tiny models built from configs: the reward model and
the task verifier as rewards, a chat model directory out, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import ppo_models
import pytest
from transformers import AutoModelForCausalLM
from trl import GRPOConfig, ModelConfig

from hfllm.alignment.grpo import GRPOScriptArguments, grpo_prompts, run_grpo_stage, verifier_reward
from hfllm.errors import ConfigError, DataError
from hfllm.report import Section, StageContext
from hfllm.tokenizer import IM_END


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    with ppo_models.one_thread():
        yield


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo")
    tokenizer = ppo_models.tokenizer()
    paths = ppo_models.save_models(root, tokenizer)
    rows = [{"task": "addition", "prompt": [{"role": "user", "content": f"What is {a}+{a + 7}?"}]}
            for a in range(10, 26)]
    datasets.DatasetDict({"prompts": datasets.Dataset.from_list(rows)}).save_to_disk(str(root / "prompts"))
    return root, tokenizer, paths


def context(tmp_path: Path) -> StageContext:
    return StageContext(entry_id="grpo", run_dir=tmp_path, section=Section("grpo", "GRPO"))


def grpo_config(out: Path, **kw) -> GRPOConfig:
    return GRPOConfig(output_dir=str(out), per_device_train_batch_size=8, num_generations=4, max_completion_length=8,
                      max_steps=kw.pop("max_steps", 2), learning_rate=1e-3, bf16=False, use_cpu=True,
                      gradient_checkpointing=False, save_strategy="no", logging_steps=1, report_to="none",
                      disable_tqdm=True, seed=3, **kw)


def test_verifier_reward_hand_values():
    prompts = [[{"role": "user", "content": "What is 27+15?"}], "What is 27+15?", "What is 1+1?"]
    completions = [[{"role": "assistant", "content": "7+5=12, 1+2+1=4, answer 42"}], "answer 32", "2"]
    assert verifier_reward(prompts, completions, task=["addition", "addition", "not_a_task"]) == [1.0, 0.0, None]
    with pytest.raises(DataError, match="needs a `task` column"):
        verifier_reward(prompts, completions)


def test_prompt_columns():
    conversation = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    rows = datasets.Dataset.from_list([{"messages": conversation, "task": "addition"}])
    prompts = grpo_prompts(rows, None, "d")
    assert prompts.column_names == ["prompt", "task"] and prompts[0]["prompt"] == conversation[:1]
    with pytest.raises(DataError) as err:
        grpo_prompts(datasets.Dataset.from_list([{"text": "Hi?"}]), None, "d")
    assert err.value.field == "dataset_prompt_column" and "columns: text" in str(err.value)
    assert grpo_prompts(datasets.Dataset.from_list([{"text": "Hi?"}]), "text", "d")[0]["prompt"] == "Hi?"


def test_stage_trains_on_both_rewards_and_writes_a_chat_model(artefacts, tmp_path):
    root, tokenizer, paths = artefacts
    out = tmp_path / "grpo"
    script = GRPOScriptArguments(dataset_name=str(root / "prompts"), dataset_train_split="prompts",
                                 reward_model_path=str(paths["reward"]), verifier_reward=True)
    ctx = context(tmp_path)
    metrics = run_grpo_stage(script, grpo_config(out), ModelConfig(model_name_or_path=str(paths["policy"])),
                             context=ctx)
    assert metrics["steps"] == 2 and metrics["prompts"] == 16 and metrics["resumed_from"] is None
    assert metrics["reward_functions"][1] == "verifier_reward" and metrics["reward"] is not None
    history = json.loads((out / "log_history.json").read_text())
    assert all("rewards/verifier_reward/mean" in r for r in history if "reward" in r)
    policy = AutoModelForCausalLM.from_pretrained(out)
    before = AutoModelForCausalLM.from_pretrained(paths["policy"])
    assert any((a != b).any() for a, b in zip(policy.state_dict().values(), before.state_dict().values()))
    stops = json.loads((out / "generation_config.json").read_text())["eos_token_id"]
    assert tokenizer.convert_tokens_to_ids(IM_END) in stops
    ctx.section.save(tmp_path, tmp_path)
    assert (tmp_path / "plots" / "grpo_rewards.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_input_is_one_error_naming_the_field(artefacts, tmp_path):
    root, _, paths = artefacts
    model = ModelConfig(model_name_or_path=str(paths["policy"]))
    no_reward = GRPOScriptArguments(dataset_name=str(root / "prompts"), dataset_train_split="prompts")
    with pytest.raises(ConfigError) as err:
        run_grpo_stage(no_reward, grpo_config(tmp_path / "a"), model, context=context(tmp_path))
    assert err.value.field == "reward_model_path"
    plain = tmp_path / "plain"
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"prompt": "What is 1+2?"}] * 8)}).save_to_disk(plain)
    with pytest.raises(DataError) as err:
        run_grpo_stage(GRPOScriptArguments(dataset_name=str(plain), verifier_reward=True),
                       grpo_config(tmp_path / "b"), model, context=context(tmp_path))
    assert err.value.field == "task"
    with pytest.raises(ConfigError) as err:
        run_grpo_stage(GRPOScriptArguments(dataset_name=str(plain), reward_model_path=str(root / "nowhere")),
                       grpo_config(tmp_path / "c"), model, context=context(tmp_path))
    assert err.value.field == "reward_model_path"
