"""`report_to` passes through to the training stages as in TRL: trackio in its local mode (an
optional extra) receives the run's losses, offline."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

pytest.importorskip("trackio", reason="the optional `trackio` extra (installed by `.[dev]`)")


def test_pretraining_reports_to_trackio_locally(tiny_run, tmp_path):
    cfg = tmp_path / "pretrain.yaml"
    cfg.write_text(f"""
dataset_name: {tiny_run / 'data'}
tokenizer_name: {tiny_run / 'tokenizer'}
num_layers: 1
hidden_size: 32
num_heads: 2
max_length: 32
per_device_train_batch_size: 4
max_steps: 6
logging_steps: 2
eval_strategy: "no"
save_strategy: "no"
precision: fp32
report_to: trackio
project: hfllm-test
run_name: tiny-trackio
""")
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio")}
    proc = subprocess.run([sys.executable, str(REPO / "recipes" / "pretrain.py"), "--config", str(cfg),
                           "--output_dir", str(tmp_path / "out")], capture_output=True, text=True, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    read = ("import json; from trackio.sqlite_storage import SQLiteStorage; "
            "print(json.dumps(SQLiteStorage.get_logs('hfllm-test', 'tiny-trackio'), default=str))")
    logs = json.loads(subprocess.run([sys.executable, "-c", read], capture_output=True, text=True, env=env,
                                     check=True).stdout)
    losses = [row for row in logs if "train/loss" in row]
    assert [row["train/global_step"] for row in losses] == [2, 4, 6]  # trackio counts its own "step"
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["report_to"] == ["trackio"]
