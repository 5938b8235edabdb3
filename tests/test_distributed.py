"""Several processes: the tiny pretraining under 2-process CPU DDP over gloo (torchrun; `accelerate
launch --cpu --num_processes 2` would start one process) writes one manifest and one report, a run
killed mid-way resumes from its checkpoint with both ranks, and 2 processes train as 1 does at the
same global batch — the same blocks at every step, split between the ranks, and the same loss to
1e-4 in fp32 — from a map-style dataset and from a stream, across a SIGTERM that only one rank got —
and DPO at the same global batch to the same tolerance. A stage joins the parity test by adding a
harness to `PARITY`."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(script: Path, *args: str, expect_ok: bool = True) -> subprocess.CompletedProcess:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    cmd = [torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           str(script), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if expect_ok:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_two_process_ddp_writes_once_and_resumes(tiny_run, tmp_path):
    cfg = tmp_path / "pretrain.yaml"
    cfg.write_text(f"""
dataset_name: {tiny_run / 'data'}
tokenizer_name: {tiny_run / 'tokenizer'}
num_layers: 2
hidden_size: 64
num_heads: 4
max_length: 64
per_device_train_batch_size: 4
max_steps: 20
save_steps: 10
logging_steps: 5
eval_strategy: steps
eval_steps: 10
max_eval_blocks: 16
precision: fp32
record_step_trace: true
seed: 3
""")
    out = tmp_path / "pretrain"
    recipe_args = ["--config", str(cfg), "--output_dir", str(out)]
    killed = torchrun(HERE / "resume_driver.py", "step", "15", *recipe_args, expect_ok=False)
    assert killed.returncode != 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-10"]
    assert not (out / "manifest.json").exists()

    torchrun(REPO / "recipes" / "pretrain.py", *recipe_args)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    assert manifest["metrics"]["resumed_from"] == "checkpoint-10" and manifest["metrics"]["steps"] == 20
    # both ranks' tokens: 20 steps × 2 processes × 4 blocks × 64 tokens
    assert manifest["metrics"]["tokens_seen"] == 20 * 2 * 4 * 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pretrain", "pretrain.yaml"]  # nothing beside it
    assert len(list(out.rglob("manifest.json"))) == 1 and len(list(out.rglob("report.md"))) == 1
    steps = [json.loads(line)["step"] for line in (out / "step_trace.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 21))  # one trace, the main process's, no step twice


# ------------------------------------------------------------------------------------------ parity

def one_process(script: Path, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=REPO,
                          timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == expect, proc.stderr[-4000:]
    return proc


class PretrainParity:
    """Pretraining through resume_driver.py, which writes every rank's blocks; 20 steps of a global
    batch of 8 blocks (1 × 8 or 2 × 4), the loss logged at every step (the Trainer's mean over ranks)."""

    steps = 20
    streaming = False

    def __init__(self, tiny_run: Path, folder: Path):
        self.folder = folder
        data = tiny_run / "data"
        if self.streaming:  # a jsonl file, packed on the fly and shuffled in windows
            import datasets

            data = folder / "train.jsonl"
            train = datasets.load_from_disk(str(tiny_run / "data"))["train"]
            data.write_text("".join(json.dumps({"text": t}) + "\n" for t in train["text"]))
        self.config = folder / "pretrain.yaml"
        self.config.write_text(f"""
dataset_name: {data}
tokenizer_name: {tiny_run / 'tokenizer'}
dataset_streaming: {str(self.streaming).lower()}
stream_shuffle_blocks: 24
num_layers: 2
hidden_size: 64
num_heads: 4
max_length: 64
max_steps: {self.steps}
save_steps: 10
logging_steps: 1
learning_rate: 1.0e-3
precision: fp32
seed: 11
""")

    def args(self, out: Path, processes: int, mode: str = "none", step: int = 0) -> list[str]:
        return [mode, str(step), "--config", str(self.config), "--output_dir", str(out),
                "--per_device_train_batch_size", str(8 // processes)]

    def run(self, out: Path, processes: int, mode: str = "none", step: int = 0, expect_ok: bool = True):
        if processes == 1:
            return one_process(HERE / "resume_driver.py", *self.args(out, 1, mode, step))
        return torchrun(HERE / "resume_driver.py", *self.args(out, processes, mode, step), expect_ok=expect_ok)

    def losses(self, out: Path) -> list[float]:
        history = json.loads((out / f"checkpoint-{self.steps}" / "trainer_state.json").read_text())["log_history"]
        rows = [r for r in history if "loss" in r]
        assert [r["step"] for r in rows] == list(range(1, self.steps + 1))
        return [r["loss"] for r in rows]

    def batches(self, out: Path, processes: int) -> list[list[str]]:
        """Each step's blocks, the ranks' in rank order (a resumed run's rows replace the killed run's)."""
        per_rank = []
        for rank in range(processes):
            rows = {}
            for line in (out / f"blocks_rank{rank}.jsonl").read_text().splitlines():
                row = json.loads(line)
                rows[row["step"]] = row["blocks"]
            assert sorted(rows) == list(range(1, self.steps + 1))
            per_rank.append(rows)
        return [sum((r[step] for r in per_rank), []) for step in range(1, self.steps + 1)]


class StreamParity(PretrainParity):
    streaming = True


class DpoParity:
    """DPO through its recipe on the tiny model: 20 steps of a global batch of 8 pairs (1 × 8 or
    2 × 4) over 160 pairs — one epoch, so no rank pads its last batch — fp32, reference
    log-probabilities precomputed, the loss logged at every step (the Trainer's mean over ranks)."""

    steps = 20
    streaming = False
    batches = None  # the pairs of a step are the sampler's, not traced

    def __init__(self, tiny_run: Path, folder: Path):
        from test_reward import preference_dataset

        self.folder = folder
        self.config = folder / "dpo.yaml"
        self.config.write_text(f"""
dataset_name: {preference_dataset(folder / "pairs", n=180)}
model_name_or_path: {tiny_run / 'pretrain'}
max_steps: {self.steps}
logging_steps: 1
learning_rate: 1.0e-4
beta: 0.1
max_length: 64
precompute_ref_log_probs: true
gradient_checkpointing: false
bf16: false
save_strategy: "no"
report_to: none
seed: 11
""")

    def run(self, out: Path, processes: int, mode: str = "none", step: int = 0, expect_ok: bool = True):
        args = ["--config", str(self.config), "--output_dir", str(out),
                "--per_device_train_batch_size", str(8 // processes)]
        if processes == 1:
            return one_process(REPO / "recipes" / "dpo.py", *args)
        return torchrun(REPO / "recipes" / "dpo.py", *args, expect_ok=expect_ok)

    def losses(self, out: Path) -> list[float]:
        rows = [r for r in json.loads((out / "log_history.json").read_text()) if "loss" in r]
        assert [r["step"] for r in rows] == list(range(1, self.steps + 1))
        return [r["loss"] for r in rows]


PARITY = {"pretrain": PretrainParity, "pretrain_stream": StreamParity, "dpo": DpoParity}


def assert_same_training(one: list[float], two: list[float]) -> None:
    worst = max(abs(a - b) / abs(a) for a, b in zip(one, two, strict=True))
    assert worst <= 1e-4, worst


@pytest.fixture(scope="module", params=list(PARITY))
def parity(request, tiny_run, tmp_path_factory):
    harness = PARITY[request.param](tiny_run, tmp_path_factory.mktemp(request.param))
    harness.single = harness.folder / "one"
    harness.run(harness.single, 1)
    return harness


def test_two_processes_train_as_one_at_the_same_global_batch(parity):
    out = parity.folder / "two"
    parity.run(out, 2)
    assert json.loads((out / "manifest.json").read_text())["world_size"] == 2
    assert json.loads((parity.single / "manifest.json").read_text())["world_size"] == 1
    if parity.batches is not None:
        one, two = parity.batches(parity.single, 1), parity.batches(out, 2)
        assert all(len(b) == 8 for b in one) and all(len(b) == 8 for b in two)
        assert two == one  # rank 0 trains each batch's first 4 blocks, rank 1 the last 4: none twice, none skipped
    assert_same_training(parity.losses(parity.single), parity.losses(out))


def test_sigterm_to_one_rank_stops_both_at_one_step_and_the_run_resumes_the_same(parity):
    """The stream's position is the highest block any rank trained on: a resumed run neither repeats nor
    skips the other rank's blocks of the last batch."""
    if not parity.streaming:
        pytest.skip("the map-style resume under DDP is test_two_process_ddp_writes_once_and_resumes")
    out = parity.folder / "preempted"
    proc = parity.run(out, 2, "term@1", 13, expect_ok=False)
    assert "hfllm: SIGTERM: saved checkpoint-13 (step 13 of 20)" in proc.stderr, proc.stderr[-3000:]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-13"]
    position = json.loads((out / "checkpoint-13" / "trainer_state.json").read_text())["stateful_callbacks"][
        "StreamPosition"]["attributes"]["position"]
    assert position["blocks"] == 13 * 8
    parity.run(out, 2)
    assert json.loads((out / "manifest.json").read_text())["metrics"]["resumed_from"] == "checkpoint-13"
    assert parity.batches(out, 2) == parity.batches(parity.single, 1)
    assert_same_training(parity.losses(parity.single), parity.losses(out))
