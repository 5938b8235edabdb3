"""Kill a pretraining run (at a step, and in the middle of a checkpoint save), re-run the same
command, and compare every step's loss and batch with an uninterrupted run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def resume_config(tiny_run, tmp_path_factory):
    cfg = tmp_path_factory.mktemp("resume") / "pretrain.yaml"
    cfg.write_text(f"""
dataset_name: {tiny_run / 'data'}
tokenizer_name: {tiny_run / 'tokenizer'}
num_layers: 2
hidden_size: 64
num_heads: 4
max_length: 64
per_device_train_batch_size: 8
max_steps: 30
save_steps: 10
save_total_limit: 2
logging_steps: 5
learning_rate: 1.0e-3
precision: fp32
record_step_trace: true
seed: 7
""")
    return cfg


def recipe(cfg, out):
    return [sys.executable, str(REPO / "recipes" / "pretrain.py"), "--config", str(cfg), "--output_dir", str(out)]


def run(cmd, expect=0):
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == expect, proc.stderr[-3000:]
    return proc


def trace(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "step_trace.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(resume_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "pretrain"
    run(recipe(resume_config, out))
    rows = trace(out)
    assert [r["step"] for r in rows] == list(range(1, 31))
    return rows


def assert_same_run(rows, reference):
    assert [r["step"] for r in rows] == [r["step"] for r in reference]
    assert [r["batch"] for r in rows] == [r["batch"] for r in reference]
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(rows, reference)) <= 1e-6


def test_resume_after_kill_at_step(resume_config, reference, tmp_path):
    out = tmp_path / "pretrain"
    run([sys.executable, str(HERE / "resume_driver.py"), "step", "15", *recipe(resume_config, out)[2:]], expect=-9)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-10"]
    assert not (out / "manifest.json").exists()
    run(recipe(resume_config, out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["resumed_from"] == "checkpoint-10"
    assert manifest["metrics"]["steps"] == 30
    assert_same_run(trace(out), reference)


def test_resume_after_kill_mid_checkpoint_save(resume_config, reference, tmp_path):
    out = tmp_path / "pretrain"
    run([sys.executable, str(HERE / "resume_driver.py"), "save", "20", *recipe(resume_config, out)[2:]], expect=-9)
    partial = out / "checkpoint-20"
    assert partial.exists() and not (partial / "trainer_state.json").exists()
    run(recipe(resume_config, out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["resumed_from"] == "checkpoint-10"
    assert_same_run(trace(out), reference)
    # Checkpoints are safetensors; no pickled weights.
    assert list(out.glob("checkpoint-30/*.safetensors")) and not list(out.rglob("pytorch_model.bin"))


@pytest.fixture(scope="module")
def stream_config(resume_config, tiny_run, tmp_path_factory):
    """The same run, but streaming a jsonl file (packed on the fly, shuffled in windows, resumed)."""
    import datasets

    folder = tmp_path_factory.mktemp("stream")
    docs = folder / "train.jsonl"
    train = datasets.load_from_disk(str(tiny_run / "data"))["train"]
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in train["text"]))
    cfg = folder / "pretrain.yaml"
    text = resume_config.read_text().replace(f"dataset_name: {tiny_run / 'data'}", f"dataset_name: {docs}")
    # Windows of 24 blocks: checkpoint-10 (80 blocks) falls 8 blocks into the fourth window.
    cfg.write_text(text + "dataset_streaming: true\nstream_shuffle_blocks: 24\n")
    return cfg


def test_streamed_run_resumes_from_saved_position(stream_config, tmp_path):
    ref = tmp_path / "ref"
    run(recipe(stream_config, ref))
    reference = trace(ref)
    assert [r["step"] for r in reference] == list(range(1, 31))
    out = tmp_path / "pretrain"
    run([sys.executable, str(HERE / "resume_driver.py"), "step", "15", *recipe(stream_config, out)[2:]], expect=-9)
    state = json.loads((out / "checkpoint-10" / "trainer_state.json").read_text())
    position = state["stateful_callbacks"]["StreamPosition"]["attributes"]["position"]
    assert (position["blocks"], position["packed"], position["taken"]) == (10 * 8, 3 * 24, 8)
    run(recipe(stream_config, out))
    assert json.loads((out / "manifest.json").read_text())["metrics"]["resumed_from"] == "checkpoint-10"
    assert_same_run(trace(out), reference)


def test_recipe_runs_under_accelerate_launch(resume_config, tmp_path):
    out = tmp_path / "pretrain"
    accelerate = Path(sys.executable).parent / "accelerate"
    run([str(accelerate), "launch", "--config_file", str(REPO / "recipes/accelerate/cpu.yaml"),
         *recipe(resume_config, out)[1:], "--max_steps", "4", "--save_steps", "2"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["steps"] == 4 and (out / "model.safetensors").exists()


def test_streamed_run_evaluates_on_the_data_stage_split(stream_config, tiny_run, tmp_path):
    # As llama-125m: training streams a dataset without a test split; eval loss uses the data stage's.
    out = tmp_path / "pretrain"
    run([*recipe(stream_config, out), "--max_steps", "4", "--eval_strategy", "steps", "--eval_steps", "2",
         "--max_eval_blocks", "8", "--eval_dataset_name", str(tiny_run / "data"), "--record_step_trace", "false"])
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert metrics["steps"] == 4 and metrics["eval_loss"] > 0


def test_compiled_run_resumes_the_same(resume_config, tmp_path):
    # demo and llama-125m compile: the checkpoint of a compiled model must resume the same run.
    compiled = ["--torch_compile", "true", "--max_steps", "12", "--save_steps", "5"]
    ref, out = tmp_path / "ref", tmp_path / "pretrain"
    run([*recipe(resume_config, ref), *compiled])
    run([sys.executable, str(HERE / "resume_driver.py"), "step", "7", *recipe(resume_config, out)[2:], *compiled],
        expect=-9)
    run([*recipe(resume_config, out), *compiled])
    assert json.loads((out / "manifest.json").read_text())["metrics"]["resumed_from"] == "checkpoint-5"
    assert_same_run(trace(out), trace(ref))
