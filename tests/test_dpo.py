"""DPO stage on the tiny model: a chat model directory, β and loss type by config, the reward
curves in the report, bad input."""

import json
from pathlib import Path

import datasets
import pytest
from test_reward import preference_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, ModelConfig

from hfllm.alignment.dpo import DPOScriptArguments, run_dpo_stage
from hfllm.errors import DataError
from hfllm.report import Section, StageContext
from hfllm.tokenizer import IM_END


@pytest.fixture(scope="session")
def tiny_dir(tiny_run) -> Path:
    return tiny_run


def dpo_config(out, **kw):
    return DPOConfig(output_dir=str(out), max_steps=kw.pop("max_steps", 6), per_device_train_batch_size=8,
                     learning_rate=1e-4, bf16=False, gradient_checkpointing=False, max_length=64, save_strategy="no",
                     report_to="none", disable_tqdm=True, logging_steps=1, precompute_ref_log_probs=True, **kw)


@pytest.mark.parametrize("loss_type, beta", [("sigmoid", 0.1), ("ipo", 0.5)])
def test_dpo_stage(tiny_dir, tmp_path, loss_type, beta):
    data = preference_dataset(tmp_path / "pairs")
    out = tmp_path / "dpo"
    ctx = StageContext(entry_id="dpo", run_dir=tmp_path, section=Section("dpo", "DPO"))
    metrics = run_dpo_stage(DPOScriptArguments(dataset_name=data), dpo_config(out, beta=beta, loss_type=[loss_type]),
                            ModelConfig(model_name_or_path=str(tiny_dir / "pretrain")), context=ctx)
    assert metrics["steps"] == 6 and metrics["loss_type"] == loss_type and metrics["beta"] == beta
    assert metrics["precompute_ref_log_probs"] and "final_reward_margin" in metrics
    model = AutoModelForCausalLM.from_pretrained(out)
    gen = json.loads((out / "generation_config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert gen["eos_token_id"] == [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.eos_token_id]
    assert model.config.pad_token_id is not None
    history = json.loads((out / "log_history.json").read_text())
    assert [r["step"] for r in history if "rewards/margins" in r] == [1, 2, 3, 4, 5, 6]
    ctx.section.save(out, tmp_path)
    assert (tmp_path / "plots" / "dpo_rewards.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "plots" / "dpo_loss.png").exists()


def test_dpo_bad_input(tiny_dir, tmp_path):
    bad = tmp_path / "bad"
    rows = [{"prompt": "a", "rejected": "b"}]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(bad))
    with pytest.raises(DataError, match="column not found") as err:
        run_dpo_stage(DPOScriptArguments(dataset_name=str(bad)), dpo_config(tmp_path / "dpo"),
                      ModelConfig(model_name_or_path=str(tiny_dir / "pretrain")),
                      context=StageContext(entry_id="dpo", run_dir=tmp_path, section=Section("dpo", "DPO")))
    assert err.value.field == "chosen" and err.value.where == str(bad)
