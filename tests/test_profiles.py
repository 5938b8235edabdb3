"""The llama-125m profile's wiring, run end to end offline: its own YAML files, with the Hub
dataset swapped for a local jsonl stream and the model and step counts shrunk."""

import json
import re

import datasets
import yaml
from conftest import REPO

from hfllm.pipeline import load_pipeline, run_pipeline

SHRINK = {  # field: value for a CPU-sized run of the same configs
    "data.yaml": {"max_train_docs": 200, "test_fraction": 0.1},
    "tokenizer.yaml": {"vocab_size": 1024},
    "pretrain.yaml": {"num_layers": 2, "hidden_size": 64, "num_heads": 4, "max_length": 128,
                      "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "max_steps": 12,
                      "warmup_steps": 2, "eval_steps": 6, "save_steps": 6, "max_eval_blocks": 8,
                      "per_device_eval_batch_size": 4, "torch_compile": "false", "stream_shuffle_blocks": 16,
                      "exclude_held_out_fraction": 0.1},
    # lm-eval's mmlu, hellaswag and arc_easy read the Hub: left to real runs
    "evaluation.yaml": {"max_eval_docs": 10, "per_device_eval_batch_size": 4, "tasks": "[]", "mmlu": "false"},
}


def test_llama_125m_profile_runs_offline_on_a_local_stream(tiny_run, tmp_path):
    docs = tmp_path / "fineweb.jsonl"
    splits = datasets.load_from_disk(str(tiny_run / "data"))  # both splits: the hash split must find some
    texts = list(splits["test"]["text"]) + list(splits["train"]["text"])
    docs.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)))
    profile = tmp_path / "llama-125m"
    profile.mkdir()
    for source in (REPO / "recipes/configs/llama-125m").glob("*.yaml"):
        text = source.read_text()
        if source.name in SHRINK:
            text = text.replace("HuggingFaceFW/fineweb-edu", str(docs))
            text = re.sub(r"^dataset_config:.*\n", "", text, flags=re.M)
            for key, value in SHRINK[source.name].items():
                text, n = re.subn(rf"^{key}:.*$", f"{key}: {value}", text, flags=re.M)
                if not n:
                    text += f"{key}: {value}\n"
        (profile / source.name).write_text(text)

    # The whole profile wires and parses (its post-training reads Hub datasets: not run offline) ...
    run_dir = tmp_path / "run"
    assert load_pipeline(profile / "pipeline.yaml", run_dir).ids == [
        "data", "tokenizer", "pretrain", "eval", "synthetic", "sft", "reward", "dpo", "ppo", "task_eval"]
    # ... and its pretraining part runs from the profile's own entries.
    spec = yaml.safe_load((profile / "pipeline.yaml").read_text())
    spec["stages"] = spec["stages"][:4]
    (profile / "pretraining.yaml").write_text(yaml.safe_dump(spec))
    assert set(run_pipeline(profile / "pretraining.yaml", run_dir=run_dir).values()) == {"ran"}
    data = json.loads((run_dir / "data" / "manifest.json").read_text())["metrics"]
    assert data["raw_docs"] == 200 and data["train_docs"] > 0  # a sample of the stream, as from the Hub, cleaned
    pretrain = json.loads((run_dir / "pretrain" / "manifest.json").read_text())
    assert pretrain["config"]["dataset_name"] == str(docs)  # streamed, not the data stage's sample
    assert pretrain["metrics"]["steps"] == 12 and pretrain["metrics"]["eval_loss"] > 0
    assert json.loads((run_dir / "eval" / "manifest.json").read_text())["metrics"]["bits_per_byte"] > 0
    assert (run_dir / "report.md").exists()
