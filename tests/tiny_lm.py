"""Tiny causal LMs built and trained inside tests: a BPE tokenizer trained on the test's text, a tiny
Llama config, and a transformers `Trainer` on the CPU (fp32)."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from hfllm.evaluation.loglikelihood import encode_pair
from hfllm.modeling import llama_config
from hfllm.packing import collate_blocks, pack_documents
from hfllm.tokenizer import train_bpe


@pytest.fixture(autouse=True)
def single_thread():
    """One torch thread while a test runs: a tiny model's matmuls gain nothing from a second one, and
    on a shared, busy machine two threads spin-waiting on each other cost ~10× the CPU time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tokenizer_for(texts: list[str], vocab_size: int = 512):
    return train_bpe(iter(texts), vocab_size)


def tiny_llama(tokenizer, *, layers: int = 2, hidden: int = 64, heads: int = 2, context: int = 128, seed: int = 0):
    torch.manual_seed(seed)
    config = llama_config(layers, hidden, heads, context, -(-len(tokenizer) // 64) * 64,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def _args(out_dir, steps: int, batch_size: int, lr: float, seed: int) -> TrainingArguments:
    return TrainingArguments(output_dir=str(out_dir), max_steps=steps, per_device_train_batch_size=batch_size,
                             learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=0.0,
                             use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=50,
                             seed=seed, data_seed=seed, disable_tqdm=True, remove_unused_columns=False)


def train_on_answers(model, tokenizer, pairs: list[tuple[str, str]], out_dir, *, steps: int, batch_size: int = 16,
                     lr: float = 3e-3, seed: int = 0):
    """Fine-tune on (prompt, answer) pairs, the loss on the answer's tokens and a closing eos only."""
    rows = []
    for prompt, answer in pairs:
        prompt_ids, answer_ids = encode_pair(tokenizer, prompt, answer)
        answer_ids = answer_ids + [tokenizer.eos_token_id]
        rows.append({"input_ids": prompt_ids + answer_ids, "labels": [-100] * len(prompt_ids) + answer_ids})

    def collate(batch):
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, r in enumerate(batch):
            n = len(r["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    Trainer(model=model, args=_args(out_dir, steps, batch_size, lr, seed), train_dataset=Dataset.from_list(rows),
            data_collator=collate).train()
    return model.eval()


def pretrain(model, tokenizer, documents: list[str], out_dir, *, steps: int, batch_size: int = 16, lr: float = 3e-3,
             seed: int = 0):
    """Pretrain on `documents` packed into full blocks of the model's context (hfllm.packing)."""
    blocks = pack_documents(Dataset.from_dict({"text": documents}), tokenizer, "text",
                            model.config.max_position_embeddings)
    Trainer(model=model, args=_args(out_dir, steps, batch_size, lr, seed), train_dataset=blocks,
            data_collator=collate_blocks).train()
    return model.eval()
