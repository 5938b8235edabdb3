"""Pretraining stage: documents → packed blocks → transformers `Trainer` → HF model directory.

- Packing (`hfllm.packing`): each document becomes `bos … eos`, documents are concatenated and
  cut into full blocks of `max_length` tokens, so no compute is spent on padding: a map-style
  dataset with `datasets.map` (batched, `dataset_num_proc`), a streamed one on the fly
  (`PackedStream`, whose position is saved in every checkpoint).
- Precision `auto`: bf16 on GPUs that have it and on CPUs with native bf16 matmul
  (AVX512-BF16/AMX, ≈2.4× fp32 here), fp16 with loss scaling on older GPUs, otherwise fp32.
- Loss: computed from hidden states a chunk of tokens at a time (`hfllm.loss`), so the full
  logits are never a training output.
- Attention: any transformers `attn_implementation`, plus hfllm's `blocked_causal`
  (`hfllm.attention`: eager attention that skips the masked upper blocks; on the CPU for
  sequences of 512 tokens and more).
- Host memory on CPU: freed activations stay mapped for the next step (`hfllm.memory`), instead
  of glibc returning them to the kernel and faulting them back in every step.
- Optimizer: fused AdamW where torch has it (CUDA, and CPU since torch 2.4), warmup + cosine.
- Checkpoints: safetensors every `save_steps`, `save_total_limit` kept. Re-running the same
  command resumes from the newest *complete* checkpoint (a run killed mid-save leaves a partial
  `checkpoint-N` without `trainer_state.json`, which is set aside), at the next step with the
  same data order (the Trainer's seeded sampler and restored RNG states; for a stream, the
  saved stream position).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (AutoModelForCausalLM, GenerationConfig, Trainer, TrainerCallback, TrainingArguments,
                          set_seed)
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import sort_checkpoints

from hfllm import attention  # noqa: F401  (registers attn_implementation="blocked_causal")
from hfllm.data.loading import check_texts, load_text_dataset
from hfllm.data.split import is_held_out
from hfllm.errors import ConfigError, DataError
from hfllm.loss import use_chunked_loss_unless_liger
from hfllm.memory import keep_freed_memory_on_cpu
from hfllm.modeling import check_vocab, count_parameters, llama_config, load_causal_lm, load_tokenizer
from hfllm.packing import PackedStream, collate_blocks, pack_documents
from hfllm.report import Section, StageResult

TRACE_FILE = "step_trace.jsonl"


@dataclass
class PretrainScriptArguments:
    """Data and tokenizer (TRL's `ScriptArguments` names)."""

    dataset_name: str = field(default="runs/demo/data", metadata={"help": "Data stage dir, local file, or Hub id."})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str = field(default="test", metadata={"help": "Held-out split for eval loss."})
    eval_dataset_name: str | None = field(
        default=None,
        metadata={"help": "Where the held-out split is, if not in dataset_name (e.g. the data stage's dir while "
                  "dataset_name streams a Hub dataset that has no test split)."},
    )
    dataset_text_field: str = field(default="text", metadata={"help": "Column holding the document text."})
    dataset_streaming: bool = field(default=False, metadata={"help": "Stream the dataset (needs max_steps)."})
    tokenizer_name: str = field(default="runs/demo/tokenizer", metadata={"help": "Tokenizer dir or Hub id."})
    exclude_held_out_fraction: float | None = field(
        default=None,
        metadata={"help": "Skip training documents that the data stage's content-hash split (this test_fraction) "
                  "holds out — for streaming the same dataset the data stage sampled."},
    )
    stream_shuffle_blocks: int = field(
        default=1024,
        metadata={"help": "Streamed data: shuffle blocks within windows of this many consecutive blocks "
                  "(seeded, replayed exactly on resume; memory ≈ window × max_length tokens). 1: stream order."},
    )
    max_eval_blocks: int | None = field(default=None, metadata={"help": "Evaluate on at most this many blocks."})


@dataclass
class PretrainModelArguments:
    """The model: continue from `model_name_or_path`, or a new Llama of the given shape."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "Start from these weights."})
    num_layers: int = field(default=4, metadata={"help": "Transformer blocks (new model)."})
    hidden_size: int = field(default=256, metadata={"help": "Model width (new model)."})
    num_heads: int = field(default=4, metadata={"help": "Attention heads (new model)."})
    num_kv_heads: int | None = field(default=None, metadata={"help": "KV heads for GQA (default: num_heads)."})
    intermediate_size: int | None = field(default=None, metadata={"help": "FFN width (default 8/3·d rounded to 64)."})
    tie_word_embeddings: bool = field(default=True, metadata={"help": "Share input and output embeddings."})
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "sdpa, eager, flash_attention_2, … or blocked_causal (hfllm.attention; CPU)."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub."})


@dataclass
class PretrainConfig(TrainingArguments):
    """`TrainingArguments` with pretraining defaults and the packing/precision switches."""

    max_length: int = field(default=256, metadata={"help": "Block (sequence) length in tokens."})
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenizing/packing."})
    precision: str = field(default="auto", metadata={"help": "auto, bf16, fp16 or fp32 (auto: see module doc)."})
    loss_chunk_size: int = field(
        default=1024,
        metadata={"help": "Training loss from hidden states in chunks of this many tokens, never returning the "
                  "full logits (hfllm.loss; faster). 0: the model's own loss."},
    )
    record_step_trace: bool = field(
        default=False, metadata={"help": f"Write per-micro-step loss and batch hash to {TRACE_FILE}."}
    )
    # Defaults that differ from TrainingArguments', chosen for pretraining.
    learning_rate: float = field(default=3e-4, metadata={"help": "Peak learning rate."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Scheduler after warmup."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warmup steps (<1: fraction of all steps)."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2."})
    optim: str = field(default="adamw_torch_fused", metadata={"help": "Optimizer (fused AdamW by default)."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    save_steps: float = field(default=200, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Trackers (none, wandb, …)."})
    output_dir: str | None = field(default="runs/demo/pretrain", metadata={"help": "Model and checkpoints."})
    # Packed blocks carry only what the collator needs (input_ids, and a stream's block_index).
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep dataset columns as they are."})

    def __post_init__(self):
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"precision must be auto, bf16, fp16 or fp32, got {self.precision!r}")
        chosen = auto_precision() if self.precision == "auto" else self.precision
        self.bf16, self.fp16 = chosen == "bf16", chosen == "fp16"
        if self.bf16 and not torch.cuda.is_available():
            self.use_cpu = True  # transformers refuses CPU bf16 (autocast) unless told it is on CPU
        super().__post_init__()


def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (x86 AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def auto_precision() -> str:
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def batch_hash(input_ids: torch.Tensor) -> str:
    return hashlib.sha256(input_ids.detach().cpu().numpy().astype("int64").tobytes()).hexdigest()[:16]


class StreamPosition(TrainerCallback, ExportableState):
    """Carries the stream's position into trainer_state.json (the Trainer's stateful callbacks).

    trainer_state.json is the last file of a checkpoint, so a checkpoint that has it has the
    matching position too: no second file that a kill could separate from it.
    """

    def __init__(self):
        self.position: dict[str, Any] | None = None

    def state(self) -> dict[str, Any]:
        return {"args": {}, "attributes": {"position": self.position}}


def saved_stream_position(checkpoint: str | Path) -> dict[str, Any] | None:
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    saved = state.get("stateful_callbacks", {}).get(StreamPosition.__name__)
    return saved["attributes"]["position"] if saved else None


class PretrainTrainer(Trainer):
    """`Trainer` for packed blocks, with two additions:

    - with a `PackedStream`, it records the stream position after each batch it trains on
      (`StreamPosition` saves it with every checkpoint);
    - with `trace_path`, it appends each micro-step's loss and a hash of its batch, which is
      what makes "resume continues at the next step with the same data order" checkable.
    """

    trace_path: Path | None = None
    stream: PackedStream | None = None
    stream_position: StreamPosition | None = None

    def training_step(self, model, inputs, num_items_in_batch=None):
        block_index = inputs.pop("block_index", None)
        if self.stream is not None and block_index is not None:
            self.stream_position.position = self.stream.position_after(int(block_index.max()))
        digest = batch_hash(inputs["input_ids"]) if self.trace_path else None
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.trace_path is not None:
            row = {"step": self.state.global_step + 1, "loss": float(loss.item()), "batch": digest}
            with self.trace_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        return loss


def checkpoint_step(path: str | Path) -> int:
    """The global step in a Trainer checkpoint's name (`checkpoint-N`)."""
    return int(Path(path).name.rsplit("-", 1)[-1])


def is_complete_checkpoint(path: Path) -> bool:
    """The Trainer writes trainer_state.json last: without a readable one the save was cut."""
    try:
        json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return any(path.glob("*.safetensors"))


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """Newest complete checkpoint; newer partial ones (a kill mid-save) are moved aside."""
    output_dir = Path(output_dir)
    for path in map(Path, reversed(sort_checkpoints(str(output_dir)))):
        if is_complete_checkpoint(path):
            return path
        aside = output_dir / f"incomplete-checkpoint-{checkpoint_step(path)}"
        shutil.rmtree(aside, ignore_errors=True)
        path.rename(aside)
    return None


def _truncate_trace(trace: Path, last_step: int) -> None:
    """Drop trace rows of steps after the checkpoint we resume from (the killed run's)."""
    if not trace.exists():
        return
    rows = [line for line in trace.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    trace.write_text("".join(r + "\n" for r in rows))


def build_model(model_args: PretrainModelArguments, tokenizer, max_length: int):
    vocab = len(tokenizer)
    if model_args.model_name_or_path:
        model = load_causal_lm(model_args.model_name_or_path, field="model_name_or_path",
                               trust_remote_code=model_args.trust_remote_code,
                               attn_implementation=model_args.attn_implementation)
        check_vocab(model, tokenizer, model_args.model_name_or_path, field="tokenizer_name")
        return model
    config = llama_config(
        model_args.num_layers, model_args.hidden_size, model_args.num_heads, max_length,
        # Pad the embedding table to a multiple of 64: faster matmuls, unused rows never trained.
        vocab_size=-(-vocab // 64) * 64,
        num_kv_heads=model_args.num_kv_heads,
        intermediate_size=model_args.intermediate_size,
        tie_word_embeddings=model_args.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config._attn_implementation = model_args.attn_implementation
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=128,
    )
    return model


def _loss_plot(log_history: list[dict[str, Any]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    train = [(r["step"], r["loss"]) for r in log_history if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in log_history if "eval_loss" in r]
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="held-out loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    if train or evals:  # a run shorter than logging_steps logs no loss
        ax.legend()
    ax.grid(alpha=0.3)
    return fig


def run_pretrain_stage(
    script_args: PretrainScriptArguments,
    training_args: PretrainConfig,
    model_args: PretrainModelArguments,
    callbacks: list[TrainerCallback] | None = None,
) -> StageResult:
    output_dir = Path(training_args.output_dir)
    tokenizer = load_tokenizer(script_args.tokenizer_name, field="tokenizer_name", trust_remote_code=model_args.trust_remote_code)
    if script_args.dataset_streaming and training_args.max_steps <= 0:
        raise ConfigError("a streamed dataset has no length: set max_steps", field="max_steps")
    if script_args.dataset_streaming and training_args.dataloader_num_workers > 0:
        raise ConfigError("a resumable stream is read by one process: set dataloader_num_workers: 0",
                          field="dataloader_num_workers")
    output_dir.mkdir(parents=True, exist_ok=True)
    resume = training_args.resume_from_checkpoint or last_complete_checkpoint(output_dir)

    train_docs = load_text_dataset(
        script_args.dataset_name, script_args.dataset_train_split, text_field=script_args.dataset_text_field,
        config=script_args.dataset_config, streaming=script_args.dataset_streaming,
    )
    if not script_args.dataset_streaming:  # a stream's rows are checked as they are read
        check_texts(train_docs, script_args.dataset_text_field, script_args.dataset_name)
    if script_args.exclude_held_out_fraction:
        fraction, text_field = script_args.exclude_held_out_fraction, script_args.dataset_text_field
        # A row without a string text is kept, for the stream's row check to name.
        train_docs = train_docs.filter(lambda row: not (isinstance(row.get(text_field), str)
                                                        and is_held_out(row[text_field], fraction)))
    stream = None
    if script_args.dataset_streaming:
        # Packed on the fly, shuffled within windows, and resumed from the saved position: the
        # Trainer must not also skip the batches it already trained on.
        position = saved_stream_position(resume) if resume else None
        seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
        train = stream = PackedStream(train_docs, tokenizer, script_args.dataset_text_field, training_args.max_length,
                                      position, shuffle_blocks=script_args.stream_shuffle_blocks, seed=seed,
                                      where=script_args.dataset_name)
        training_args.ignore_data_skip = True
    else:
        train = pack_documents(train_docs, tokenizer, script_args.dataset_text_field, training_args.max_length,
                               training_args.dataset_num_proc)
        if len(train) == 0:
            raise DataError(f"no full block of {training_args.max_length} tokens in the training split",
                            where=script_args.dataset_name)
    eval_ds = None
    if training_args.eval_strategy != "no":
        eval_name = script_args.eval_dataset_name or script_args.dataset_name
        test_docs = load_text_dataset(
            eval_name, script_args.dataset_test_split, text_field=script_args.dataset_text_field,
            config=None if script_args.eval_dataset_name else script_args.dataset_config,
        )
        check_texts(test_docs, script_args.dataset_text_field, eval_name)
        eval_ds = pack_documents(test_docs, tokenizer, script_args.dataset_text_field, training_args.max_length, training_args.dataset_num_proc)
        if script_args.max_eval_blocks is not None:
            eval_ds = eval_ds.select(range(min(script_args.max_eval_blocks, len(eval_ds))))

    memory_kept = keep_freed_memory_on_cpu(training_args)
    set_seed(training_args.seed)  # the same initial weights on every run of the same config
    model = build_model(model_args, tokenizer, training_args.max_length)
    chunked_loss = use_chunked_loss_unless_liger(model, training_args)
    stream_position = StreamPosition()
    trainer = PretrainTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=eval_ds,
        data_collator=collate_blocks,
        processing_class=tokenizer,
        callbacks=[*(callbacks or []), *([stream_position] if stream else [])],
    )
    trainer.stream, trainer.stream_position = stream, stream_position
    if training_args.record_step_trace:
        trainer.trace_path = output_dir / TRACE_FILE
        if resume:
            _truncate_trace(trainer.trace_path, checkpoint_step(resume))
        else:
            trainer.trace_path.unlink(missing_ok=True)
    train_result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    trainer.save_model(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))

    tokens_per_step = (training_args.max_length * training_args.per_device_train_batch_size
                       * training_args.gradient_accumulation_steps * training_args.world_size)
    start_step = checkpoint_step(resume) if resume else 0
    runtime = train_result.metrics.get("train_runtime") or 0.0
    metrics: dict[str, Any] = {
        "parameters": model.num_parameters(),
        "parameters_non_embedding": count_parameters(model.config, embeddings=False),
        "train_blocks": None if stream else len(train),
        "tokens_seen": trainer.state.global_step * tokens_per_step,
        # This process's throughput (compile time and evaluation included), all packed tokens real.
        "train_tokens_per_s": (trainer.state.global_step - start_step) * tokens_per_step / runtime if runtime else None,
        "steps": trainer.state.global_step,
        "train_loss": train_result.training_loss,
        "precision": "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32",
        "chunked_loss": chunked_loss,
        "keep_freed_memory": memory_kept,
        "resumed_from": os.path.basename(str(resume)) if resume else None,
    }
    if eval_ds is not None:
        eval_loss = trainer.evaluate()["eval_loss"]
        metrics.update(eval_loss=eval_loss, eval_perplexity=math.exp(eval_loss))
    section = Section("pretrain", "Pretraining")
    section.text(
        f"Llama-style model, {metrics['parameters']:,} parameters, trained for {metrics['steps']} steps "
        f"({metrics['tokens_seen']:,} tokens) in {metrics['precision']} on packed blocks of {training_args.max_length} tokens."
    )
    section.metrics({k: v for k, v in metrics.items() if v is not None})
    section.plot(_loss_plot(trainer.state.log_history), "loss", "training and held-out loss")
    return StageResult(metrics=metrics, section=section)
