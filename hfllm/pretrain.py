"""The pretraining stage: documents → packed blocks → transformers `Trainer` → HF model directory.

Why a `Trainer` subclass and not a hand loop: users keep the Trainer's checkpoints, resume,
callbacks, trackers and launch configs; what pretraining needs beyond it enters through its
hooks — the collator of packed blocks, a stateful callback carrying a stream's position into
each checkpoint, and the model's own `forward` given the chunked loss (`hfllm.loss`). Measured on
the CPU benchmark, the Trainer's step equals a hand loop over the same objects
(benchmarks/RESULTS.md). What the stage does, step by step, is in the README.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from transformers import AutoModelForCausalLM, GenerationConfig, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_callback import ExportableState

from hfllm import (
    attention,  # noqa: F401  (registers attn_implementation="blocked_causal")
    faults,
)
from hfllm.data.loading import check_texts, load_text_dataset
from hfllm.data.split import is_held_out
from hfllm.errors import ConfigError, DataError
from hfllm.loss import use_chunked_loss_unless_liger
from hfllm.memory import keep_freed_memory_on_cpu
from hfllm.modeling import check_vocab, count_parameters, llama_config, load_causal_lm, load_tokenizer
from hfllm.packing import PackedStream, collate_blocks, pack_documents
from hfllm.precision import CHOSEN_BY_ATTRIBUTE, PRECISIONS, cpu_only, precision_flags
from hfllm.report import StageContext, loss_plot
from hfllm.schedule import Schedule, build_schedule, read_mixture

TRACE_FILE = "step_trace.jsonl"


@dataclass
class PretrainScriptArguments:
    """Data and tokenizer (TRL's `ScriptArguments` names)."""

    dataset_name: str = field(metadata={"help": "Data stage dir, local file, or Hub id."})
    tokenizer_name: str = field(metadata={"help": "Tokenizer dir or Hub id."})
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
    data_mixture: bool = field(
        default=False,
        metadata={"help": "Draw training blocks by domain with the data stage's mixture.json probabilities "
                          "(hfllm.schedule)."},
    )
    final_phase_fraction: float = field(
        default=0.0,
        metadata={"help": "Train the last fraction of the steps on the data stage's top-quality split, while the "
                          "learning rate decays to its minimum."},
    )
    dataset_final_phase_split: str = field(default="final_phase", metadata={"help": "The final phase's split."})


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
        default="sdpa",
        metadata={"help": "sdpa, eager, flash_attention_2, … or blocked_causal (hfllm.attention; CPU)."},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub."})


@dataclass
class PretrainConfig(faults.PreemptionArguments, TrainingArguments):
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
    # Packed blocks carry only what the collator needs (input_ids, and a stream's block_index).
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep dataset columns as they are."})
    include_num_input_tokens_seen: str | bool = field(  # True = "all" (argparse reads the default as a bool)
        default=True, metadata={"help": "Count tokens seen (the stage's tokens and tokens/s are this count)."})

    # None = not said: the precision rule decides (an explicit bf16/fp16 wins over `precision`).
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision (unset: `precision` decides)."})
    fp16: bool | None = field(default=None, metadata={"help": "fp16 mixed precision (unset: `precision` decides)."})

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.bf16 is None and self.fp16 is None:
            for name, value in precision_flags(self.precision).items():
                setattr(self, name, value)
            setattr(self, CHOSEN_BY_ATTRIBUTE, "auto" if self.precision == "auto" else "config")
        else:
            if self.precision != "auto":
                raise ValueError(f"precision: {self.precision} and bf16/fp16 both set: keep one")
            self.bf16, self.fp16 = bool(self.bf16), bool(self.fp16)
            if cpu_only():
                self.use_cpu = True
        super().__post_init__()


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
    return faults.checkpoint_step(path)


def is_complete_checkpoint(path: Path) -> bool:
    """Whole and undamaged: trainer_state.json (written last) readable, safetensors weights, and every
    file it records (`hfllm.faults.CheckpointChecksums`) present with its size and SHA-256."""
    return faults.checkpoint_problem(path) is None


def last_complete_checkpoint(output_dir: str | Path, set_aside_partial: bool = True) -> Path | None:
    """Newest complete checkpoint; newer partial or damaged ones (a kill mid-save, a truncated or changed
    file) are refused with one line and moved aside, unless `set_aside_partial` is False (the processes
    other than the main one only read). See `hfllm.faults.last_complete_checkpoint`."""
    return faults.last_complete_checkpoint(output_dir, set_aside_partial)


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
    # A length cap, not max_new_tokens: a saved max_new_tokens overrides the max_length that lm-eval
    # passes to generate(), so every generation task ran to 128 tokens whatever its max_gen_toks.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_length=max_length,
    )
    return model


def check_pretrain_args(script_args: PretrainScriptArguments, training_args: PretrainConfig,
                        model_args: PretrainModelArguments) -> None:
    """Checks across the stage's dataclasses (each one's own are in its `__post_init__`); the
    runner and the recipe call this before anything is written."""
    if script_args.dataset_streaming and training_args.max_steps <= 0:
        raise ConfigError("a streamed dataset has no length: set max_steps", field="max_steps")
    scheduled = script_args.data_mixture or script_args.final_phase_fraction > 0
    if scheduled and (script_args.dataset_streaming or training_args.max_steps <= 0):
        raise ConfigError("a mixture or final phase is planned over a known number of steps of a map-style "
                          "dataset: set max_steps, no streaming", field="max_steps")
    if not 0 <= script_args.final_phase_fraction < 1:
        raise ConfigError("must be at least 0 and below 1", field="final_phase_fraction")
    if script_args.dataset_streaming and training_args.dataloader_num_workers > 0:
        raise ConfigError("a resumable stream is read by one process: set dataloader_num_workers: 0",
                          field="dataloader_num_workers")


def find_resume_checkpoint(training_args: PretrainConfig, is_main_process: bool) -> Path | None:
    """The checkpoint to resume from: the one asked for (refused if damaged), else the newest complete
    one in the output directory (the main process checks and sets damaged ones aside first; the others
    only read)."""
    return faults.resume_checkpoint(training_args.output_dir, training_args.resume_from_checkpoint)


class TrainBlocks(NamedTuple):
    blocks: Any  # a map-style dataset, or the stream itself
    stream: PackedStream | None
    schedule: Schedule | None  # the mixture / final-phase plan, when there is one


def load_train_blocks(script_args: PretrainScriptArguments, training_args: PretrainConfig, tokenizer,
                      resume: Path | None) -> TrainBlocks:
    """The training split as packed blocks: a map-style dataset (in the order of its schedule when
    it has one), or a `PackedStream` restarted at the position saved in the checkpoint we resume from."""
    text_field = script_args.dataset_text_field
    docs = load_text_dataset(script_args.dataset_name, script_args.dataset_train_split, text_field=text_field,
                             config=script_args.dataset_config, streaming=script_args.dataset_streaming)
    if not script_args.dataset_streaming:  # a stream's rows are checked as they are read
        check_texts(docs, text_field, script_args.dataset_name)
    if script_args.exclude_held_out_fraction:
        fraction = script_args.exclude_held_out_fraction
        # A row without a string text is kept, for the stream's row check to name.
        docs = docs.filter(lambda row: not (isinstance(row.get(text_field), str)
                                            and is_held_out(row[text_field], fraction)))
    if script_args.dataset_streaming:
        # The Trainer must not also skip the batches the stream's position already accounts for.
        training_args.ignore_data_skip = True
        seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
        stream = PackedStream(docs, tokenizer, text_field, training_args.max_length,
                              saved_stream_position(resume) if resume else None,
                              shuffle_blocks=script_args.stream_shuffle_blocks, seed=seed,
                              where=script_args.dataset_name)
        return TrainBlocks(stream, stream, None)
    if script_args.data_mixture or script_args.final_phase_fraction:
        schedule = schedule_blocks(docs, script_args, training_args, tokenizer)
        return TrainBlocks(schedule.blocks, None, schedule)
    blocks = pack_documents(docs, tokenizer, text_field, training_args.max_length, training_args.dataset_num_proc)
    if len(blocks) == 0:
        raise DataError(f"no full block of {training_args.max_length} tokens in the training split",
                        where=script_args.dataset_name)
    return TrainBlocks(blocks, None, None)


def schedule_blocks(docs, script_args: PretrainScriptArguments, training_args: PretrainConfig,
                    tokenizer) -> Schedule:
    """Every block the run trains on, in order (hfllm.schedule): by the data stage's domain
    mixture, then the final phase; read sequentially."""
    text_field, max_length, num_proc = script_args.dataset_text_field, training_args.max_length, \
        training_args.dataset_num_proc
    probabilities = None
    if script_args.data_mixture:
        if "domain" not in docs.column_names:
            raise DataError("no `domain` column: the mixture needs hfllm's data stage", where=script_args.dataset_name,
                            field="domain")
        probabilities = read_mixture(script_args.dataset_name)["probabilities"]
        by_domain = {d: pack_documents(docs.filter(lambda row, d=d: row["domain"] == d), tokenizer, text_field,
                                       max_length, num_proc) for d in sorted(set(docs["domain"]))}
    else:
        by_domain = {"all": pack_documents(docs, tokenizer, text_field, max_length, num_proc)}
    final = None
    if script_args.final_phase_fraction:
        final_docs = load_text_dataset(script_args.dataset_name, script_args.dataset_final_phase_split,
                                       text_field=text_field, config=script_args.dataset_config)
        final = pack_documents(final_docs, tokenizer, text_field, max_length, num_proc)
    total = (training_args.max_steps * training_args.per_device_train_batch_size
             * training_args.gradient_accumulation_steps * training_args.world_size)
    seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
    schedule = build_schedule(by_domain, final, total, seed, probabilities, script_args.final_phase_fraction)
    training_args.train_sampling_strategy = "sequential"  # the schedule is the order
    return schedule


def load_eval_blocks(script_args: PretrainScriptArguments, training_args: PretrainConfig, tokenizer):
    """The held-out split as packed blocks (at most `max_eval_blocks`), or None without evaluation."""
    if training_args.eval_strategy == "no":
        return None
    name = script_args.eval_dataset_name or script_args.dataset_name
    docs = load_text_dataset(name, script_args.dataset_test_split, text_field=script_args.dataset_text_field,
                             config=None if script_args.eval_dataset_name else script_args.dataset_config)
    check_texts(docs, script_args.dataset_text_field, name)
    blocks = pack_documents(docs, tokenizer, script_args.dataset_text_field, training_args.max_length,
                            training_args.dataset_num_proc)
    if script_args.max_eval_blocks is not None:
        blocks = blocks.select(range(min(script_args.max_eval_blocks, len(blocks))))
    return blocks


def build_trainer(training_args: PretrainConfig, model, tokenizer, train, stream: PackedStream | None, eval_blocks,
                  callbacks: list[TrainerCallback] | None, resume: Path | None,
                  is_main_process: bool) -> PretrainTrainer:
    stream_position = StreamPosition()
    trainer = PretrainTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=eval_blocks,
        data_collator=collate_blocks,
        processing_class=tokenizer,
        callbacks=[*(callbacks or []), *([stream_position] if stream else []), *faults.fault_tolerance_callbacks()],
    )
    trainer.stream, trainer.stream_position = stream, stream_position
    if training_args.record_step_trace and is_main_process:
        trainer.trace_path = Path(training_args.output_dir) / TRACE_FILE
        if resume:
            _truncate_trace(trainer.trace_path, checkpoint_step(resume))
        else:
            trainer.trace_path.unlink(missing_ok=True)
    return trainer


def pretrain_metrics(trainer: PretrainTrainer, train_result, resume: Path | None, speed: dict[str, bool],
                     schedule: Schedule | None) -> dict[str, Any]:
    args, model = trainer.args, trainer.model
    runtime = train_result.metrics.get("train_runtime") or 0.0
    # The Trainer's own count (include_num_input_tokens_seen), summed over processes, kept on resume.
    tokens_this_run = trainer.state.num_input_tokens_seen - trainer._initial_num_input_tokens_seen
    metrics: dict[str, Any] = {
        "parameters": model.num_parameters(),
        "parameters_non_embedding": count_parameters(model.config, embeddings=False),
        "train_blocks": None if trainer.stream else len(trainer.train_dataset),
        "tokens_seen": trainer.state.num_input_tokens_seen,
        # This run's throughput (compile time and evaluation included), all packed tokens real.
        "train_tokens_per_s": tokens_this_run / runtime if runtime else None,
        "steps": trainer.state.global_step,
        "train_loss": train_result.training_loss,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        **speed,
        "resumed_from": os.path.basename(str(resume)) if resume else None,
    }
    if schedule is not None:
        metrics.update(main_blocks_by_domain=schedule.main_blocks_by_domain,
                       final_phase_blocks=schedule.final_phase_blocks,
                       final_phase_fraction=schedule.final_phase_fraction)
    if trainer.eval_dataset is not None:
        eval_loss = trainer.evaluate()["eval_loss"]
        metrics.update(eval_loss=eval_loss, eval_perplexity=math.exp(eval_loss))
    return metrics


def describe_schedule(section, schedule: Schedule, max_steps: int) -> None:
    main = sum(schedule.main_blocks_by_domain.values())
    section.text(f"Blocks by domain (the data stage's mixture), then the final phase: the last "
                 f"{round(max_steps * schedule.final_phase_fraction)} of {max_steps} steps "
                 f"({schedule.final_phase_fraction:.0%}) on the top-quality subset, as the learning rate decays.")
    rows = [[d, n, n / main if main else 0] for d, n in schedule.main_blocks_by_domain.items()]
    section.table(["main phase: domain", "blocks", "share"], rows + [["final phase", schedule.final_phase_blocks, ""]])


def run_pretrain_stage(
    script_args: PretrainScriptArguments,
    training_args: PretrainConfig,
    model_args: PretrainModelArguments,
    *,
    context: StageContext,
    callbacks: list[TrainerCallback] | None = None,
) -> dict[str, Any]:
    tokenizer = load_tokenizer(script_args.tokenizer_name, field="tokenizer_name",
                               trust_remote_code=model_args.trust_remote_code)
    resume = find_resume_checkpoint(training_args, context.is_main_process)
    train = load_train_blocks(script_args, training_args, tokenizer, resume)
    eval_blocks = load_eval_blocks(script_args, training_args, tokenizer)

    speed = {"keep_freed_memory": keep_freed_memory_on_cpu(training_args)}
    set_seed(training_args.seed)  # the same initial weights on every run of the same config
    model = build_model(model_args, tokenizer, training_args.max_length)
    speed["chunked_loss"] = use_chunked_loss_unless_liger(model, training_args)
    trainer = build_trainer(training_args, model, tokenizer, train.blocks, train.stream, eval_blocks, callbacks,
                            resume, context.is_main_process)
    train_result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    trainer.save_model(training_args.output_dir)
    if context.is_main_process:
        tokenizer.save_pretrained(training_args.output_dir)

    metrics = pretrain_metrics(trainer, train_result, resume, speed, train.schedule)
    context.section.text(
        f"Llama-style model, {metrics['parameters']:,} parameters, trained for {metrics['steps']} steps "
        f"({metrics['tokens_seen']:,} tokens) in {metrics['precision']} on packed blocks of "
        f"{training_args.max_length} tokens."
    )
    if train.schedule is not None:
        describe_schedule(context.section, train.schedule, training_args.max_steps)
    context.section.plot(loss_plot(trainer.state.log_history), "loss", "training and held-out loss")
    return metrics
