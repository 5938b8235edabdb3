"""SFT stage: TRL's `SFTTrainer` on chat data, saved as a plain chat model directory.

- Data: `messages` or `prompt`/`completion` (TRL's conventions), checked and filtered by
  `hfllm.alignment.chat_data` (drops counted by reason); the tokenizer's chat template (the
  project's ChatML with `{% generation %}` markers, which `assistant_only_loss` needs).
- LoRA with TRL's own flags (`use_peft`, `lora_r`, …; QLoRA with `load_in_4bit` where
  bitsandbytes runs): the adapters are merged into the weights on save (`merge_adapters: true`,
  hfllm's field: TRL has none), so the stage directory is a model every later stage loads as is.
- `generation_config.json` stops at `<|im_end|>` and eos: generation ends where a reply ends.
- Speed on the CPU: TRL's fused LM head scores only labelled positions on GPUs; on the CPU it
  scores every position (`compact_lm_head_on_cpu` makes it skip the prompt there too: 0.76 →
  0.39 CPU-s a step on the demo model's shape, benchmarks/RESULTS.md); freed memory kept mapped
  (`hfllm.memory`). TRL computes the loss itself, so pretraining's chunked loss does not apply.
- Faults (`hfllm.faults`, as every training stage): re-running the same command continues from
  the newest complete, undamaged checkpoint at the next step in the same data order; SIGTERM
  (pre-emption) saves a checkpoint first.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trl.trainer.utils as trl_utils
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config, get_quantization_config

from hfllm.alignment.chat_data import load_split, prepare_sft_dataset
from hfllm.alignment.generation import require_chat_template, set_chat_generation_config
from hfllm.errors import ConfigError
from hfllm.faults import fault_tolerance_callbacks, resume_checkpoint
from hfllm.memory import keep_freed_memory_on_cpu
from hfllm.modeling import attention_kwargs, check_vocab, load_causal_lm, load_tokenizer
from hfllm.pretrain import checkpoint_step
from hfllm.report import StageContext, loss_plot

LOG_HISTORY = "log_history.json"
_trl_use_triton = trl_utils._use_triton


def compact_lm_head_on_cpu() -> None:
    """Make TRL's fused LM head project only the positions that have a label on the CPU too (TRL
    does so only where Triton runs). Same log-probabilities; the prompt's positions are skipped."""
    trl_utils._use_triton = lambda device: _trl_use_triton(device) or device.type == "cpu"


@dataclass
class SFTScriptArguments:
    """Data and tokenizer (TRL's `ScriptArguments` names) and hfllm's own switches."""

    dataset_name: str = field(
        metadata={"help": "Chat dataset: stage dir, file or Hub id."})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str | None = field(default=None, metadata={"help": "Held-out split for eval loss (optional)."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer (default: the model's)."})
    dataset_completion_field: str | None = field(
        default=None, metadata={"help": "Train on `prompt` + this column as the completion (e.g. `chosen` of a "
                                "preference "
                                "dataset: SFT on the chosen replies, DPO's control)."})
    merge_adapters: bool = field(default=True, metadata={"help": "LoRA: merge the adapters into the saved model."})
    compact_lm_head: bool = field(default=True, metadata={"help": "CPU: score only labelled positions (faster)."})


def load_chat_tokenizer(script_args, model_args: ModelConfig, training_args):
    name = script_args.tokenizer_name or model_args.model_name_or_path
    field_name = "tokenizer_name" if script_args.tokenizer_name else "model_name_or_path"
    tokenizer = load_tokenizer(name, field=field_name, trust_remote_code=training_args.trust_remote_code)
    require_chat_template(tokenizer, None, field=field_name)
    return tokenizer


def load_policy(model_args: ModelConfig, training_args, tokenizer):
    """The model to train: fp32 (the Trainer's autocast picks the compute precision), 4-bit
    where `load_in_4bit` asks (bitsandbytes)."""
    if not model_args.model_name_or_path:
        raise ConfigError("no model to start from", field="model_name_or_path")
    kwargs: dict[str, Any] = attention_kwargs(model_args)
    quantization = get_quantization_config(model_args)
    if quantization is not None:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigError("load_in_4bit/load_in_8bit need bitsandbytes (pip install 'hfllm[gpu]')",
                              field="load_in_4bit") from None
        kwargs["quantization_config"] = quantization
    model = load_causal_lm(model_args.model_name_or_path, field="model_name_or_path",
                           trust_remote_code=training_args.trust_remote_code, **kwargs)
    check_vocab(model, tokenizer, model_args.model_name_or_path, field="tokenizer_name")
    return model


def save_chat_model(trainer, tokenizer, output_dir: Path, *, merge_adapters: bool) -> bool:
    """Save the trained model as a chat model directory; True when LoRA adapters were merged."""
    from peft import PeftModel

    model = trainer.accelerator.unwrap_model(trainer.model)
    merged = False
    if isinstance(model, PeftModel) and merge_adapters:
        base = model.get_base_model()
        if getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False):
            model = _merge_into_full_precision(model)  # QLoRA: a plain model, not re-quantized weights
        else:
            model = model.merge_and_unload()
        merged = True
    set_chat_generation_config(model, tokenizer)
    if trainer.accelerator.is_main_process:
        model.save_pretrained(str(output_dir), safe_serialization=True)
        tokenizer.save_pretrained(str(output_dir))
    return merged


def completion_from(ds, column: str, where: str):
    """`prompt` and `column` renamed `completion`: prompt/completion rows for SFT."""
    from hfllm.errors import DataError

    for name in ("prompt", column):
        if name not in ds.column_names:
            raise DataError(f"column not found (columns: {', '.join(ds.column_names)})", where=where, field=name)
    return ds.select_columns(["prompt", column]).rename_column(column, "completion")


def _merge_into_full_precision(peft_model):
    """The adapters merged into the base model's weights loaded again in full precision."""
    import tempfile

    from peft import PeftModel

    with tempfile.TemporaryDirectory() as adapter_dir:
        peft_model.save_pretrained(adapter_dir)
        base = load_causal_lm(peft_model.get_base_model().config._name_or_path, field="model_name_or_path")
        return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()


def write_log_history(trainer, output_dir: Path) -> None:
    (output_dir / LOG_HISTORY).write_text(json.dumps(trainer.state.log_history, indent=1))


def drop_table(section, dropped: Counter, where: str) -> None:
    if dropped:
        section.text(f"Rows dropped from `{where}`, by reason:")
        section.table(["reason", "rows"], [[r, n] for r, n in sorted(dropped.items())])


def run_sft_stage(
    script_args: SFTScriptArguments,
    training_args: SFTConfig,
    model_args: ModelConfig,
    *,
    context: StageContext,
    callbacks: list | None = None,
) -> dict[str, Any]:
    output_dir = Path(training_args.output_dir)
    tokenizer = load_chat_tokenizer(script_args, model_args, training_args)
    train = load_split(script_args.dataset_name, script_args.dataset_train_split, script_args.dataset_config)
    if script_args.dataset_completion_field:
        train = completion_from(train, script_args.dataset_completion_field, script_args.dataset_name)
    train, dropped = prepare_sft_dataset(train, tokenizer, training_args.max_length, script_args.dataset_name,
                                         training_args.dataset_text_field)
    eval_ds = None
    if script_args.dataset_test_split and training_args.eval_strategy != "no":
        eval_ds = load_split(script_args.dataset_name, script_args.dataset_test_split, script_args.dataset_config)
        eval_ds, _ = prepare_sft_dataset(eval_ds, tokenizer, training_args.max_length, script_args.dataset_name,
                                         training_args.dataset_text_field)
    # TRL's assistant_only_loss applies to conversations; for prompt/completion rows it is completion_only_loss.
    if training_args.assistant_only_loss and "messages" not in train.column_names:
        training_args.assistant_only_loss = False

    memory_kept = keep_freed_memory_on_cpu(training_args)
    if script_args.compact_lm_head:
        compact_lm_head_on_cpu()
    model = load_policy(model_args, training_args, tokenizer)
    output_dir.mkdir(parents=True, exist_ok=True)
    resume = resume_checkpoint(output_dir, training_args.resume_from_checkpoint)  # newest undamaged
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=[*(callbacks or []), *fault_tolerance_callbacks()],
    )
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    merged = save_chat_model(trainer, tokenizer, output_dir, merge_adapters=script_args.merge_adapters)
    write_log_history(trainer, output_dir)

    metrics: dict[str, Any] = {
        "train_rows": len(train),
        "dropped": dict(dropped),
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "lora": bool(model_args.use_peft),
        "adapters_merged": merged,
        "keep_freed_memory": memory_kept,
        "resumed_from": Path(str(resume)).name if resume else None,
    }
    final_losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    if final_losses:
        metrics["final_logged_loss"] = final_losses[-1]
    if eval_ds is not None:
        metrics["eval_loss"] = trainer.evaluate()["eval_loss"]
    if context.is_main_process:
        section = context.section
        how = ("LoRA, " + ("merged" if merged else "adapters only")) if model_args.use_peft else "full fine-tuning"
        section.text(
            f"SFT of `{model_args.model_name_or_path}` on {len(train):,} conversations from "
            f"`{script_args.dataset_name}` for {metrics['steps']} steps ({how}"
            f"{', loss on assistant tokens only' if training_args.assistant_only_loss else ''})."
        )
        drop_table(section, dropped, script_args.dataset_name)
        section.plot(loss_plot(trainer.state.log_history), "loss", "SFT loss")
    return metrics


def checkpoints(output_dir: str | Path) -> list[Path]:
    """The stage's complete checkpoints, oldest first (for evaluating SFT along its run)."""
    from hfllm.pretrain import is_complete_checkpoint

    found = [p for p in Path(output_dir).glob("checkpoint-*") if is_complete_checkpoint(p)]
    return sorted(found, key=checkpoint_step)
