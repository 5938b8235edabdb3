"""Shared fixtures. The tiny profile runs once per test session; tests read its artefacts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing in the suite may reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "configs" / "tiny" / "pipeline.yaml"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """Run the tiny pipeline into a temporary run directory; return that directory.

    HFLLM_TINY_RUN=<run dir> (local iteration only) starts from a copy of a finished tiny run: the
    runner skips the entries that the current code, profile and installed packages leave unchanged."""
    import shutil

    from hfllm.pipeline import run_pipeline

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    if os.environ.get("HFLLM_TINY_RUN"):
        shutil.copytree(os.environ["HFLLM_TINY_RUN"], run_dir)
        run_pipeline(TINY, run_dir=run_dir)
        return run_dir
    status = run_pipeline(TINY, run_dir=run_dir)
    assert set(status.values()) == {"ran"}
    return run_dir


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_run):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_run / "tokenizer")
