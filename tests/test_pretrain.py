"""Packing, the pretraining stage's outputs, skip-if-unchanged, and artefact mismatches."""

import json

import datasets
import pytest
from conftest import TINY
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from hfllm.errors import ConfigError
from hfllm.pipeline import STAGES, config_fingerprint, run_pipeline
from hfllm.pretrain import PretrainModelArguments, build_model, is_complete_checkpoint, pack_documents


def test_packing_by_hand(tiny_tokenizer):
    tok = tiny_tokenizer
    docs = ["first document", "second one", "third"]
    ds = datasets.Dataset.from_dict({"text": docs})
    stream = []
    for d in docs:
        stream += [tok.bos_token_id] + tok(d)["input_ids"] + [tok.eos_token_id]
    packed = pack_documents(ds, tok, "text", block_size=4)
    n = len(stream) // 4
    assert packed["input_ids"] == [stream[i * 4:(i + 1) * 4] for i in range(n)]
    assert tok.pad_token_id not in stream


def test_pretrain_stage_is_a_standard_hf_directory(tiny_run):
    out = tiny_run / "pretrain"
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    gen = GenerationConfig.from_pretrained(out)
    assert gen.eos_token_id == tok.eos_token_id and gen.pad_token_id == tok.pad_token_id
    assert (out / "model.safetensors").exists() and not list(out.rglob("pytorch_model*.bin"))
    ids = model.generate(**tok("The", return_tensors="pt"), max_new_tokens=5, do_sample=False)
    assert ids.shape[1] == 1 + 5 or tok.eos_token_id in ids[0].tolist()
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert checkpoints and all(is_complete_checkpoint(c) for c in checkpoints)


def test_manifest_records_what_a_run_needs(tiny_run):
    m = json.loads((tiny_run / "pretrain" / "manifest.json").read_text())
    assert set(m) >= {"config", "metrics", "versions", "git_revision", "wall_time_s", "inputs", "fingerprint"}
    assert m["versions"]["transformers"] and m["versions"]["torch"]
    data = json.loads((tiny_run / "data" / "manifest.json").read_text())
    assert m["inputs"]["dataset_name"]["fingerprint"] == data["fingerprint"]
    assert m["metrics"]["eval_loss"] < m["metrics"]["train_loss"] + 1.0
    assert m["config"]["hub_token"] in (None, "<HUB_TOKEN>")


def test_lm_eval_loads_the_stage_directory(tiny_run):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(tiny_run / "pretrain"), batch_size=2, device="cpu")
    req = Instance(request_type="loglikelihood_rolling", doc={}, arguments=("Return the value of x.",), idx=0)
    (ll,) = lm.loglikelihood_rolling([req])
    assert ll < 0


def test_lm_eval_generation_keeps_the_tasks_length(tiny_run):
    """lm-eval asks generate() for `max_length` = context + the task's max_gen_toks; a max_new_tokens
    saved in the stage's generation_config would override that (every reply ran to 128 tokens)."""
    import torch
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(tiny_run / "pretrain"), batch_size=2, device="cpu")
    context = lm.tok_encode("The value of")
    out = lm._model_generate(torch.tensor([context]), max_length=len(context) + 3, stop=["never in a reply"],
                             do_sample=False, min_new_tokens=3)
    assert out.shape[1] == len(context) + 3


def test_rerun_skips_unchanged_stages(tiny_run):
    assert run_pipeline(TINY, run_dir=tiny_run) == {s: "skipped" for s in ("data", "tokenizer", "pretrain", "eval")}
    assert run_pipeline(TINY, run_dir=tiny_run, start_from="pretrain") == {"pretrain": "skipped", "eval": "skipped"}
    before = json.loads((tiny_run / "tokenizer" / "manifest.json").read_text())
    assert run_pipeline(TINY, run_dir=tiny_run, only="tokenizer", force=True) == {"tokenizer": "ran"}
    after = json.loads((tiny_run / "tokenizer" / "manifest.json").read_text())
    # Same config and inputs: same fingerprint, so the stages after it stay valid.
    assert after["fingerprint"] == before["fingerprint"] and after["started_at"] >= before["started_at"]
    assert run_pipeline(TINY, run_dir=tiny_run, start_from="pretrain") == {"pretrain": "skipped", "eval": "skipped"}


def test_fingerprint_follows_config_and_inputs(tiny_run):
    m = json.loads((tiny_run / "pretrain" / "manifest.json").read_text())
    config = dict(m["config"])
    spec = STAGES["pretrain"]

    def fingerprint(**changes):
        return config_fingerprint(spec, {**config, **changes}, spec.load()[0])[0]

    fp = fingerprint()
    assert fp == m["fingerprint"]
    assert fingerprint(learning_rate=1.0) != fp
    assert fingerprint(output_dir="/elsewhere") == fp
    assert fingerprint(tokenizer_name=str(tiny_run / "data")) != fp


def test_tokenizer_model_vocab_mismatch(tiny_run, tiny_tokenizer):
    bigger = AutoTokenizer.from_pretrained(tiny_run / "tokenizer")
    bigger.add_tokens([f"<extra_{i}>" for i in range(10)])
    args = PretrainModelArguments(model_name_or_path=str(tiny_run / "pretrain"))
    with pytest.raises(ConfigError) as err:
        build_model(args, bigger, 128)
    assert err.value.field == "tokenizer_name" and "2058" in err.value.message


def test_auto_precision(monkeypatch):
    import torch

    from hfllm import precision as pretrain

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert pretrain.auto_precision() == "fp16"  # older GPUs: fp16 with loss scaling
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert pretrain.auto_precision() == "bf16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pretrain.auto_precision() == ("bf16" if pretrain.cpu_has_native_bf16() else "fp32")


def test_hfllm_run_bad_pipeline_exits_2(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    bad = tmp_path / "pipeline.yaml"
    bad.write_text("name: x\nstages:\n  - {stage: pretrian}\n")
    hfllm = Path(sys.executable).parent / "hfllm"
    proc = subprocess.run([str(hfllm), "run", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "pretrian" in proc.stderr and str(bad) in proc.stderr
