"""Tiny PPO artefacts for the tests: a BPE tokenizer trained on local text (with hfllm's ChatML
template), a seeded Llama policy and sequence-classification reward/value models built from
configs, and chat prompts made of real sentences. Nothing is downloaded."""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, GenerationConfig

from hfllm.corpus import iter_documents
from hfllm.modeling import llama_config
from hfllm.tokenizer import train_bpe

VOCAB = 512
# Models this small run fastest on one thread: a second one mostly waits for a core that the
# other processes on a shared machine hold (≈ 10× slower updates under load).
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1"}


@contextmanager
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def texts(n: int = 80) -> list[str]:
    return [d["text"] for _, d in zip(range(n), iter_documents(("pydoc_topics",)))]


def tokenizer():
    return train_bpe(iter(texts()), VOCAB)


def sentences(n: int) -> list[str]:
    """`n` short sentences of Python's own documentation, used as user questions."""
    found: list[str] = []
    for text in texts():
        for s in re.split(r"(?<=[.?!])\s+", " ".join(text.split())):
            if 20 <= len(s) <= 70 and s not in found:
                found.append(s)
                if len(found) == n:
                    return found
    raise AssertionError("not enough sentences")


def conversations(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": s}] for s in sentences(n)]


def _config(tok, init_scale: float = 0.02, vocab: int = VOCAB):
    return llama_config(2, 32, 4, 128, vocab_size=vocab, initializer_range=init_scale,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def policy(tok, seed: int = 0, init_scale: float = 0.02):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(tok, init_scale), dtype=torch.float32)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id)
    return model


def scorer(tok, seed: int = 1, init_scale: float = 0.02, vocab: int = VOCAB):
    """A sequence-classification model with one output: a reward or a value model."""
    torch.manual_seed(seed)
    config = _config(tok, init_scale, vocab)
    config.num_labels = 1
    return AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)


def save_models(root: Path, tok, init_scale: float = 0.02) -> dict[str, Path]:
    """Policy (+ tokenizer), a different reference policy, reward and value model directories."""
    paths = {name: root / name for name in ("policy", "reference", "reward", "value")}
    for seed, name in ((0, "policy"), (3, "reference")):
        policy(tok, seed, init_scale).save_pretrained(paths[name])
        tok.save_pretrained(paths[name])
    for seed, name in ((1, "reward"), (2, "value")):
        scorer(tok, seed, init_scale).save_pretrained(paths[name])
        tok.save_pretrained(paths[name])
    return paths


def prompt_dataset(path: Path, n_train: int = 16, n_test: int = 4) -> Path:
    """A DatasetDict saved to disk: `messages` conversations (a user question and an assistant
    reply, as SFT data has them), train and test splits."""
    import datasets

    questions = sentences(n_train + n_test)
    rows = [[{"role": "user", "content": q}, {"role": "assistant", "content": "It is in the documentation."}]
            for q in questions]
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"messages": rows[:n_train]}),
        "test": datasets.Dataset.from_dict({"messages": rows[n_train:]}),
    }).save_to_disk(str(path))
    return path


def stage_args(paths: dict[str, Path], prompts: Path, output_dir: Path, script: dict | None = None,
               model: dict | None = None, **config):
    """The PPO stage's three dataclasses for the tiny artefacts: small, fp32, on the CPU."""
    from trl import ModelConfig

    from hfllm.alignment.ppo import PPOConfig, PPOScriptArguments

    settings = dict(output_dir=str(output_dir), sft_model_path=str(paths["policy"]),
                    reward_model_path=str(paths["reward"]), per_device_train_batch_size=4,
                    gradient_accumulation_steps=1, num_mini_batches=2, num_ppo_epochs=2, total_episodes=16,
                    response_length=8, learning_rate=1e-3, save_steps=2, bf16=False, use_cpu=True,
                    gradient_checkpointing=False, missing_eos_penalty=1.0, num_sample_generations=2,
                    per_device_eval_batch_size=2, report_to="none", disable_tqdm=True, seed=5)
    settings.update(config)
    script_args = PPOScriptArguments(**{"dataset_name": str(prompts), "dataset_test_split": "test",
                                        "value_model_path": str(paths["value"]), **(script or {})})
    return script_args, PPOConfig(**settings), ModelConfig(**{"model_name_or_path": str(paths["policy"]),
                                                              **(model or {})})
