"""hfllm.faults on a real Trainer (a tiny Llama on packed Python documentation, one thread): checkpoints
record their files' SHA-256 in trainer_state.json; a checkpoint cut, truncated, emptied, changed or
pickled on disk is refused with one line and the previous one used; SIGTERM saves and exits 143."""

from __future__ import annotations

import json
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

from hfllm import faults
from hfllm.corpus import iter_documents
from hfllm.errors import ConfigError
from hfllm.modeling import llama_config
from hfllm.packing import collate_blocks, pack_documents
from hfllm.tokenizer import train_bpe


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def blocks_and_tokenizer():
    import datasets

    texts = [d["text"] for _, d in zip(range(60), iter_documents(("pydoc_topics",)))]
    tokenizer = train_bpe(iter(texts), 512)
    blocks = pack_documents(datasets.Dataset.from_dict({"text": texts}), tokenizer, "text", 32)
    return blocks, tokenizer


@dataclass
class Args(faults.PreemptionArguments, TrainingArguments):
    """What a stage's config is: TrainingArguments with saving on SIGTERM on, and its grace period."""


class SigtermAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def train(blocks_and_tokenizer, out: Path, max_steps: int = 4, callbacks=(), **args) -> Trainer:
    blocks, tokenizer = blocks_and_tokenizer
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(llama_config(1, 32, 2, 32, vocab_size=512), dtype=torch.float32)
    settings = dict(output_dir=str(out), max_steps=max_steps, save_steps=2, per_device_train_batch_size=2,
                    report_to="none", use_cpu=True, disable_tqdm=True, logging_steps=1, seed=1)
    trainer = Trainer(model=model, args=Args(**{**settings, **args}), train_dataset=blocks,
                      data_collator=collate_blocks, processing_class=tokenizer,
                      callbacks=[*callbacks, *faults.fault_tolerance_callbacks()])
    trainer.train(resume_from_checkpoint=faults.resume_checkpoint(out))
    return trainer


@pytest.fixture(scope="module")
def trained(blocks_and_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "run"
    train(blocks_and_tokenizer, out)
    return out


def test_trainer_state_records_every_file_of_its_checkpoint(trained):
    for ckpt in ("checkpoint-2", "checkpoint-4"):
        folder = trained / ckpt
        state = json.loads((folder / "trainer_state.json").read_text())
        recorded = faults.recorded_files(state)
        on_disk = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        assert sorted(recorded) == [n for n in on_disk if n != "trainer_state.json"]
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"} <= set(recorded)
        for name, entry in recorded.items():
            assert entry == {"bytes": (folder / name).stat().st_size, "sha256": faults.file_sha256(folder / name)}
        assert faults.checkpoint_problem(folder) is None


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # in the tensor data: same size, header intact
    path.write_bytes(bytes(data))


def cut_trainer_state(path: Path) -> None:
    state = path.parent / "trainer_state.json"
    state.write_text(state.read_text()[:100])


DAMAGE = {
    "missing_file": (lambda c: (c / "optimizer.pt").unlink(), "optimizer.pt is missing"),
    "zero_byte_weights": (lambda c: (c / "model.safetensors").write_bytes(b""), "model.safetensors is 0 bytes"),
    "truncated_weights": (lambda c: (c / "model.safetensors").write_bytes((c / "model.safetensors").read_bytes()[:99]),
                          "model.safetensors is 99 bytes, .* when saved"),
    "changed_bytes": (lambda c: flip_a_byte(c / "model.safetensors"),
                      r"model.safetensors changed since it was saved \(SHA-256 differs\)"),
    "changed_optimizer": (lambda c: flip_a_byte(c / "optimizer.pt"), "optimizer.pt changed since it was saved"),
    "cut_mid_save": (lambda c: cut_trainer_state(c / "model.safetensors"), "no readable trainer_state.json"),
    "pickle_weights": (lambda c: (c / "model.safetensors").rename(c / "pytorch_model.bin"),
                       r"only pickle weights \(pytorch_model.bin\)"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_is_refused_and_the_previous_one_used(trained, tmp_path, capfd, damage):
    import re

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    harm, reason = DAMAGE[damage]
    harm(out / "checkpoint-4")
    capfd.readouterr()
    assert faults.last_complete_checkpoint(out) == out / "checkpoint-2"
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.search(reason, lines[0]), lines
    assert lines[0].startswith(f"hfllm: {out / 'checkpoint-4'}: refused, ")
    assert lines[0].endswith("set aside as incomplete-checkpoint-4")
    assert (out / "incomplete-checkpoint-4").is_dir() and not (out / "checkpoint-4").exists()


def test_other_processes_read_without_setting_aside_or_hashing(trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    flip_a_byte(out / "checkpoint-4" / "model.safetensors")  # only the hash check sees this
    assert faults.last_complete_checkpoint(out, set_aside_partial=False) == out / "checkpoint-4"
    (out / "checkpoint-4" / "model.safetensors").write_bytes(b"")
    assert faults.last_complete_checkpoint(out, set_aside_partial=False) == out / "checkpoint-2"
    assert (out / "checkpoint-4").exists()


def test_a_missing_shard_of_an_unrecorded_checkpoint(trained, tmp_path):
    """A checkpoint from before the checksums (or another tool) is checked by its structure: every
    shard the index names, every safetensors header against its size."""
    ckpt = tmp_path / "run" / "checkpoint-4"
    shutil.copytree(trained / "checkpoint-4", ckpt)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    del state["stateful_callbacks"]["CheckpointChecksums"]
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    (ckpt / "model.safetensors").unlink()
    AutoModelForCausalLM.from_pretrained(trained / "checkpoint-4").save_pretrained(ckpt, max_shard_size="20KB")
    shards = sorted(ckpt.glob("model-*.safetensors"))
    assert len(shards) > 1 and faults.checkpoint_problem(ckpt) is None
    data = shards[1].read_bytes()
    shards[1].write_bytes(data[:-100])
    assert faults.checkpoint_problem(ckpt) == f"{shards[1].name} is {len(data) - 100:,} bytes, its header says " \
                                              f"{len(data):,}"
    shards[1].unlink()
    assert faults.checkpoint_problem(ckpt) == f"shard {shards[1].name} named by model.safetensors.index.json is " \
                                              "missing"


def test_a_damaged_checkpoint_named_explicitly_is_a_config_error(trained, tmp_path):
    ckpt = tmp_path / "checkpoint-4"
    shutil.copytree(trained / "checkpoint-4", ckpt)
    (ckpt / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="field 'resume_from_checkpoint': cannot resume from .*checkpoint-4: "
                                          "model.safetensors is 0 bytes"):
        faults.resume_checkpoint(tmp_path, str(ckpt))


def test_sigterm_saves_at_the_end_of_the_step_and_exits_143(blocks_and_tokenizer, tmp_path, capfd):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        train(blocks_and_tokenizer, out, max_steps=8, save_steps=100, callbacks=[SigtermAt(3)])
    assert stop.value.code == 143
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is put back
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]
    assert faults.checkpoint_problem(out / "checkpoint-3") is None
    assert not (out / "checkpoint-3" / "checkpoint-is-incomplete.txt").exists()  # transformers' handler never ran
    err = capfd.readouterr().err
    assert "hfllm: SIGTERM: saved checkpoint-3 (step 3 of 8) in " in err
    # the same command resumes at step 4
    trainer = train(blocks_and_tokenizer, out, max_steps=8, save_steps=100)
    assert trainer.state.global_step == 8 and [r["step"] for r in trainer.state.log_history if "loss" in r] == \
        list(range(1, 9))


def test_sigterm_without_time_for_a_save_keeps_the_last_checkpoint(blocks_and_tokenizer, tmp_path, capfd):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        train(blocks_and_tokenizer, out, max_steps=8, save_steps=2, callbacks=[SigtermAt(3)],
              jit_checkpoint_grace_period=0.0)
    assert stop.value.code == 143
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert "no checkpoint written; the last complete one stands" in capfd.readouterr().err


def test_sigterm_is_ignored_by_the_callback_unless_enabled(blocks_and_tokenizer, tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    trainer = train(blocks_and_tokenizer, tmp_path / "run", max_steps=2, enable_jit_checkpoint=False,
                    callbacks=[SigtermAt(99)])
    assert trainer.state.global_step == 2 and signal.getsignal(signal.SIGTERM) == before
