"""Rank safety: the tiny pretraining under 2-process CPU DDP over gloo (torchrun; `accelerate
launch --cpu --num_processes 2` would start one process) writes one manifest and one report,
and a run killed mid-way resumes from its checkpoint with both ranks."""

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

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
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
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
