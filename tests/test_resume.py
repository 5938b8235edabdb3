"""Faults in every training stage: kill -9 at a seeded random step, kill -9 in the middle of a
checkpoint save, SIGTERM (pre-emption), and a corrupted newest checkpoint. After each, the same
command resumes from the last complete checkpoint and every step's loss (fp32, ≤ 1e-6) and batch
equal an uninterrupted run's. A stage joins by adding a harness to `STAGES`."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

HERE = Path(__file__).parent
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


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


def run(cmd, expect=0, env=None):
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env or ONE_THREAD)
    assert proc.returncode == expect, proc.stderr[-3000:]
    return proc


def trace(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "step_trace.jsonl").read_text().splitlines()]


def assert_same_run(rows, reference):
    assert [r["step"] for r in rows] == [r["step"] for r in reference]
    assert [r["batch"] for r in rows] == [r["batch"] for r in reference]
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(rows, reference)) <= 1e-6


class PretrainHarness:
    """recipes/pretrain.py; faults injected by resume_driver.py; the stage's own step trace."""

    name, steps, save_steps = "pretrain", 30, 10

    def __init__(self, request, tmp_path_factory):
        self.config = request.getfixturevalue("resume_config")

    def command(self, out: Path, mode: str = "none", step: int = 0) -> list[str]:
        if mode == "none":
            return recipe(self.config, out)
        return [sys.executable, str(HERE / "resume_driver.py"), mode, str(step), *recipe(self.config, out)[2:]]

    def trace(self, out: Path) -> list[dict]:
        return trace(out)

    def weights(self, checkpoint: Path) -> Path:
        return checkpoint / "model.safetensors"


class PPOHarness:
    """hfllm's PPO through execute_stage (ppo_resume_driver.py): each update's rollout batch hash, and its
    policy loss from the log history."""

    name, steps, save_steps = "ppo", 6, 2

    def __init__(self, request, tmp_path_factory):
        import ppo_models

        root = tmp_path_factory.mktemp("ppo_resume")
        paths = ppo_models.save_models(root, ppo_models.tokenizer())
        self.spec = {"paths": {k: str(v) for k, v in paths.items()},
                     "prompts": str(ppo_models.prompt_dataset(root / "prompts", n_train=24)),
                     "overrides": {"total_episodes": 24, "num_sample_generations": 0,
                                   "enable_jit_checkpoint": True}}  # TRL 1.12's PPOConfig: off by default
        self.root = root

    def command(self, out: Path, mode: str = "none", step: int = 0) -> list[str]:
        spec = self.root / f"{out.parent.name}_{out.name}.json"
        spec.write_text(json.dumps({**self.spec, "output_dir": str(out)}))
        return [sys.executable, str(HERE / "ppo_resume_driver.py"), mode, str(step), str(spec)]

    def trace(self, out: Path) -> list[dict]:
        batches = {}
        for line in (out / "batch_trace.jsonl").read_text().splitlines():
            row = json.loads(line)
            batches[row["step"]] = row["batch"]  # a resumed run repeats the killed run's unsaved updates
        last = max((p for p in out.glob("checkpoint-*")), key=lambda p: int(p.name.split("-")[1]))
        history = json.loads((last / "trainer_state.json").read_text())["log_history"]
        return [{"step": r["step"], "loss": r["loss/policy_avg"], "batch": batches[r["step"]]}
                for r in history if "loss/policy_avg" in r]

    def weights(self, checkpoint: Path) -> Path:
        return checkpoint / "value_model" / "model.safetensors"  # the second weights file of a PPO checkpoint


class TrlHarness:
    """TRL's trainers in hfllm's SFT, reward and DPO stages (trl_resume_driver.py): each step's loss
    as `Trainer.training_step` returned it and a hash of its batch; fp32, tiny model, 8 steps."""

    name, steps, save_steps, learning_rate = "", 8, 2, 1e-3
    settings = "max_length: 64\n"  # the stage's own YAML lines

    def __init__(self, request, tmp_path_factory):
        tiny = request.getfixturevalue("tiny_run")
        root = tmp_path_factory.mktemp(f"{self.name}_resume")
        self.config = root / f"{self.name}.yaml"
        self.config.write_text(f"""
model_name_or_path: {tiny / 'pretrain'}
dataset_name: {self.dataset(root / 'data')}
max_steps: {self.steps}
save_steps: {self.save_steps}
per_device_train_batch_size: 8
learning_rate: {self.learning_rate}
bf16: false
gradient_checkpointing: false
logging_steps: 1
report_to: none
disable_tqdm: true
seed: 3
{self.settings}""")

    def dataset(self, path: Path) -> str:
        from test_reward import preference_dataset

        return preference_dataset(path, n=100)

    def command(self, out: Path, mode: str = "none", step: int = 0) -> list[str]:
        return [sys.executable, str(HERE / "trl_resume_driver.py"), self.name, mode, str(step),
                "--config", str(self.config), "--output_dir", str(out)]

    def trace(self, out: Path) -> list[dict]:
        rows = {}
        for line in (out / "step_trace.jsonl").read_text().splitlines():
            row = json.loads(line)
            rows[row["step"]] = row  # a resumed run repeats the killed run's unsaved steps
        return [rows[s] for s in sorted(rows)]

    def weights(self, checkpoint: Path) -> Path:
        return checkpoint / "model.safetensors"


class SftHarness(TrlHarness):
    name, settings = "sft", "max_length: 64\nassistant_only_loss: true\n"

    def dataset(self, path: Path) -> str:
        from test_sft import chat_dataset

        return chat_dataset(path, n=200)


class RewardHarness(TrlHarness):
    name = "reward"


class DpoHarness(TrlHarness):
    name, settings, learning_rate = "dpo", "max_length: 64\nprecompute_ref_log_probs: true\n", 1e-4


class GrpoHarness(TrlHarness):
    """GRPO samples its batch each step: the batch hash covers the sampled replies too."""

    name, learning_rate = "grpo", 1e-4
    settings = ("dataset_train_split: prompts\nverifier_reward: true\nnum_generations: 4\n"
                "max_completion_length: 8\n")

    def dataset(self, path: Path) -> str:
        import datasets

        rows = [{"task": "addition", "prompt": [{"role": "user", "content": f"What is {a}+{a + 7}?"}]}
                for a in range(10, 50)]
        datasets.DatasetDict({"prompts": datasets.Dataset.from_list(rows)}).save_to_disk(str(path))
        return str(path)


HARNESSES = {"pretrain": PretrainHarness, "sft": SftHarness, "reward": RewardHarness, "dpo": DpoHarness,
             "ppo": PPOHarness, "grpo": GrpoHarness}


@pytest.fixture(scope="module", params=list(HARNESSES))
def stage(request, tmp_path_factory):
    harness = HARNESSES[request.param](request, tmp_path_factory)
    out = tmp_path_factory.mktemp(f"{harness.name}_reference") / harness.name
    run(harness.command(out))
    harness.reference = harness.trace(out)
    assert [r["step"] for r in harness.reference] == list(range(1, harness.steps + 1))
    return harness


def metrics(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["metrics"]


def resumes_the_same(stage, out: Path, checkpoint: str) -> None:
    """The same command again: it resumes from `checkpoint` and matches the uninterrupted run."""
    proc = run(stage.command(out))
    assert metrics(out)["resumed_from"] == checkpoint, proc.stderr[-2000:]
    assert_same_run(stage.trace(out), stage.reference)


def test_kill_at_a_seeded_random_step_resumes_the_same(stage, tmp_path):
    step = random.Random(f"kill {stage.name}").randint(stage.save_steps + 1, stage.steps - 1)
    out = tmp_path / stage.name
    run(stage.command(out, "step", step), expect=-9)
    last = (step - 1) // stage.save_steps * stage.save_steps  # a save comes after its step's callbacks
    assert max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*")) == last
    assert not (out / "manifest.json").exists()
    resumes_the_same(stage, out, f"checkpoint-{last}")


def test_kill_in_the_middle_of_a_checkpoint_save_resumes_from_the_previous(stage, tmp_path):
    out = tmp_path / stage.name
    step = 2 * stage.save_steps
    run(stage.command(out, "save", step), expect=-9)
    partial = out / f"checkpoint-{step}"
    assert partial.exists() and stage.weights(partial).exists() and not (partial / "trainer_state.json").exists()
    resumes_the_same(stage, out, f"checkpoint-{stage.save_steps}")
    # Checkpoints are safetensors; no pickled weights.
    assert list(out.glob(f"checkpoint-{stage.steps}/*.safetensors")) and not list(out.rglob("pytorch_model.bin"))


def test_sigterm_saves_a_checkpoint_then_the_same_command_resumes(stage, tmp_path):
    out = tmp_path / stage.name
    step = stage.save_steps + 1
    proc = run(stage.command(out, "term", step), expect=143)
    assert f"hfllm: SIGTERM: saved checkpoint-{step} (step {step} of {stage.steps})" in proc.stderr
    assert "Traceback" not in proc.stderr and not (out / "manifest.json").exists()
    assert sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*")) == [stage.save_steps, step]
    resumes_the_same(stage, out, f"checkpoint-{step}")


def test_a_corrupted_newest_checkpoint_is_refused_and_the_previous_used(stage, tmp_path):
    out = tmp_path / stage.name
    run(stage.command(out, "step", stage.steps - 1), expect=-9)
    newest = max(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    weights = stage.weights(newest)
    data = bytearray(weights.read_bytes())
    data[-8] ^= 0xFF  # one bit pattern in the last tensor: same size, header intact
    weights.write_bytes(bytes(data))
    proc = run(stage.command(out))
    refused = [line for line in proc.stderr.splitlines() if "refused" in line]
    assert refused == [f"hfllm: {newest}: refused, {weights.relative_to(newest)} changed since it was saved "
                       f"(SHA-256 differs); set aside as incomplete-{newest.name}"]
    previous = int(newest.name.split("-")[1]) - stage.save_steps
    assert metrics(out)["resumed_from"] == f"checkpoint-{previous}"
    assert_same_run(stage.trace(out), stage.reference)


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


# ------------------------------------------------------------------------------------ the pipeline

PLANTED_TOKEN = "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0123"


def test_hfllm_run_killed_mid_entry_resumes_there_and_skips_finished_ones(tiny_run, tmp_path):
    """data (an earlier run's) → tokenizer → pretrain (SIGKILLed after its first checkpoint) → eval; the
    same `hfllm run` again skips data and tokenizer, resumes pretraining from its checkpoint and runs
    the evaluation. A token in the environment reaches no file and no output."""
    import shutil
    import signal
    import time

    tiny = REPO / "recipes" / "configs" / "tiny"
    shutil.copy(tiny / "data.yaml", tmp_path / "data.yaml")
    (tmp_path / "tokenizer.yaml").write_text("vocab_size: 512\nmax_train_bytes: 300000\n")
    (tmp_path / "pretrain.yaml").write_text("num_layers: 1\nhidden_size: 32\nnum_heads: 2\nmax_length: 64\n"
                                            "per_device_train_batch_size: 4\nmax_steps: 300\nsave_steps: 10\n"
                                            "precision: fp32\nrecord_step_trace: true\nseed: 5\n")
    (tmp_path / "evaluation.yaml").write_text("max_eval_docs: 4\nbigram_baseline: false\nlm_eval_check: false\n")
    (tmp_path / "pipeline.yaml").write_text("name: killed\nstages:\n  - {stage: data, config: data.yaml}\n"
                                            "  - {stage: tokenizer, config: tokenizer.yaml}\n"
                                            "  - {stage: pretrain, config: pretrain.yaml}\n"
                                            "  - {stage: eval, config: evaluation.yaml}\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copytree(tiny_run / "data", run_dir / "data")  # what an earlier run of the same data entry wrote
    cmd = [sys.executable, "-m", "hfllm.cli", "run", str(tmp_path / "pipeline.yaml"), "--run_dir", str(run_dir)]
    env = {**ONE_THREAD, "HF_TOKEN": PLANTED_TOKEN}
    log = tmp_path / "first.log"
    with log.open("w") as out:
        first = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
        checkpoint = run_dir / "pretrain" / "checkpoint-10" / "trainer_state.json"
        while not checkpoint.exists() and first.poll() is None:
            time.sleep(0.05)
        assert first.poll() is None, log.read_text()[-3000:]  # 300 steps outlast the poll (40 once did not)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert first.returncode == -9, log.read_text()[-3000:]
    assert (run_dir / "tokenizer" / "manifest.json").exists() and not (run_dir / "pretrain" / "manifest.json").exists()

    second = run(cmd, env=env)
    status = [line for line in second.stdout.splitlines() if line.startswith("[hfllm]")]
    assert any(line.startswith("[hfllm] data: unchanged, skipped") for line in status), status
    assert any(line.startswith("[hfllm] tokenizer: unchanged, skipped") for line in status), status
    assert any(line.startswith("[hfllm] pretrain: running") for line in status), status
    pretrain = json.loads((run_dir / "pretrain" / "manifest.json").read_text())["metrics"]
    resumed = int(pretrain["resumed_from"].split("-")[1])
    assert resumed >= 10 and pretrain["steps"] == 300
    assert [r["step"] for r in trace(run_dir / "pretrain")] == list(range(1, 301))
    assert json.loads((run_dir / "eval" / "manifest.json").read_text())["metrics"]["bits_per_byte"] > 0
    assert run(cmd).stdout.count("unchanged, skipped") == 4  # and a third run has nothing left to do

    outputs = log.read_text() + second.stdout + second.stderr
    assert PLANTED_TOKEN not in outputs
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert PLANTED_TOKEN.encode() not in path.read_bytes(), f"the token leaked into {path}"
