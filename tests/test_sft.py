"""SFT stage on the tiny model: chat data, LoRA merged on save, generation stopping at <|im_end|>,
drops counted, bad input and the CPU's compact LM head (kill and resume: tests/test_resume.py)."""

import json
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, SFTConfig

from hfllm.alignment.sft import SFTScriptArguments, compact_lm_head_on_cpu, run_sft_stage
from hfllm.alignment.tasks import sample_problems
from hfllm.errors import ConfigError, DataError
from hfllm.report import Section, StageContext
from hfllm.tokenizer import IM_END


@pytest.fixture(scope="session")
def tiny_dir(tiny_run) -> Path:
    return tiny_run


def context(tmp_path, name="sft"):
    return StageContext(entry_id=name, run_dir=tmp_path, section=Section(name, name))


def chat_dataset(path: Path, n: int = 64, *, empty: int = 0, fmt: str = "messages") -> str:
    rows = []
    for i, p in enumerate(sample_problems(["addition"], n, seed=5)):
        reply = "" if i < empty else p.solution
        if fmt == "messages":
            rows.append({"messages": [{"role": "user", "content": p.prompt}, {"role": "assistant", "content": reply}]})
        else:
            rows.append({"prompt": [{"role": "user", "content": p.prompt}],
                         "completion": [{"role": "assistant", "content": reply}]})
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(path))
    return str(path)


def sft_config(out, steps=4, **kw):
    return SFTConfig(output_dir=str(out), max_steps=steps, per_device_train_batch_size=8, learning_rate=1e-3,
                     bf16=False, gradient_checkpointing=False,
                     assistant_only_loss=kw.pop("assistant_only_loss", True), max_length=64,
                     save_strategy=kw.pop("save_strategy", "no"), report_to="none", disable_tqdm=True, logging_steps=1,
                     seed=3, **kw)


def test_sft_lora_merged_chat_model(tiny_dir, tmp_path):
    data = chat_dataset(tmp_path / "data")
    base = str(tiny_dir / "pretrain")
    out = tmp_path / "sft"
    metrics = run_sft_stage(SFTScriptArguments(dataset_name=data), sft_config(out),
                            ModelConfig(model_name_or_path=base, use_peft=True, lora_r=4, lora_alpha=8,
                                        lora_target_modules=["q_proj", "v_proj"]), context=context(tmp_path))
    assert metrics["adapters_merged"] and metrics["steps"] == 4 and metrics["lora"]
    assert not (out / "adapter_config.json").exists()  # a plain model directory
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template and "generation" in tokenizer.chat_template
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.eos_token_id]
    assert gen["pad_token_id"] == tokenizer.pad_token_id
    before = AutoModelForCausalLM.from_pretrained(base).state_dict()
    after = model.state_dict()
    changed = [k for k in after if "q_proj" in k and not torch.equal(after[k], before[k])]
    assert changed and all(torch.equal(after[k], before[k]) for k in after if "mlp" in k)  # only LoRA'd layers moved
    assert json.loads((out / "log_history.json").read_text())[0]["step"] == 1


def test_sft_prompt_completion_counts_empty_completions(tiny_dir, tmp_path):
    data = chat_dataset(tmp_path / "data", n=40, empty=5, fmt="prompt_completion")
    metrics = run_sft_stage(SFTScriptArguments(dataset_name=data), sft_config(tmp_path / "sft", steps=2),
                            ModelConfig(model_name_or_path=str(tiny_dir / "pretrain")), context=context(tmp_path))
    assert metrics["dropped"] == {"empty completion": 5} and metrics["train_rows"] == 35


def test_sft_bad_input(tiny_dir, tmp_path):
    base = str(tiny_dir / "pretrain")
    text_only = tmp_path / "text"
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"body": "x"}])}).save_to_disk(str(text_only))
    with pytest.raises(DataError, match="SFT needs 'messages'") as err:
        run_sft_stage(SFTScriptArguments(dataset_name=str(text_only)), sft_config(tmp_path / "a"),
                      ModelConfig(model_name_or_path=base), context=context(tmp_path))
    assert err.value.field == "messages" and err.value.where == str(text_only)
    all_empty = chat_dataset(tmp_path / "empty", n=6, empty=6)
    with pytest.raises(DataError, match=r"every row was dropped \(6 empty completion\)"):
        run_sft_stage(SFTScriptArguments(dataset_name=all_empty), sft_config(tmp_path / "b"),
                      ModelConfig(model_name_or_path=base), context=context(tmp_path))
    no_template = tmp_path / "no_template"
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(no_template)
    (no_template / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(ConfigError, match="no chat template") as err:
        run_sft_stage(SFTScriptArguments(dataset_name=all_empty, tokenizer_name=str(no_template)),
                      sft_config(tmp_path / "c"), ModelConfig(model_name_or_path=base), context=context(tmp_path))
    assert err.value.field == "tokenizer_name"


def test_compact_lm_head_gives_the_same_loss(tiny_dir):
    import trl.trainer.utils as trl_utils
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "pretrain")
    add_fused_lm_head(model)
    ids = torch.randint(0, 1000, (4, 20))
    labels = ids.clone()
    labels[:, :15] = -100
    original = trl_utils._use_triton
    full = model(input_ids=ids, labels=labels, fused_lm_head=True).loss
    try:
        compact_lm_head_on_cpu()
        compact = model(input_ids=ids, labels=labels, fused_lm_head=True).loss
    finally:
        trl_utils._use_triton = original
    assert torch.allclose(full, compact, atol=1e-5)
