"""DPO stage: TRL's `DPOTrainer` on preference pairs, the reference being the model it starts from
(the SFT stage's), saved as a chat model directory.

β and the loss (`sigmoid`, `ipo`, …) are TRL's `beta` and `loss_type`. Speed, by measurement on
the CPU (benchmarks/dpo_throughput.py, benchmarks/RESULTS.md): the reference log-probabilities are
computed once before training (`precompute_ref_log_probs`: the reference model is then not run,
nor kept, during training), no gradient checkpointing on small models (TRL's default recomputes
the forward), and TRL's fused LM head scores only completion positions on the CPU too
(`compact_lm_head_on_cpu`). TRL 1.16 disables DPO's padding-free mode and refuses Liger's fused
cross-entropy here, so neither is offered.

The report shows the loss, and the implicit reward margin and accuracy (chosen rewarded above
rejected) along training, from TRL's logged `rewards/margins` and `rewards/accuracies`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import DPOConfig, DPOTrainer, ModelConfig, get_peft_config

from hfllm.alignment.chat_data import load_split, prepare_preference_dataset
from hfllm.alignment.sft import (
    compact_lm_head_on_cpu,
    drop_table,
    load_chat_tokenizer,
    load_policy,
    save_chat_model,
    write_log_history,
)
from hfllm.faults import fault_tolerance_callbacks, resume_checkpoint
from hfllm.memory import keep_freed_memory_on_cpu
from hfllm.modeling import attention_kwargs, load_causal_lm
from hfllm.report import StageContext, loss_plot

PAIR_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class DPOScriptArguments:
    dataset_name: str = field(
        metadata={"help": "Preference pairs: stage dir, file or Hub id."})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str | None = field(
        default=None, metadata={"help": "Held-out pairs for eval metrics (optional)."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer (default: the model's)."})
    ref_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Reference model (default: the starting model)."})
    merge_adapters: bool = field(default=True, metadata={"help": "LoRA: merge the adapters into the saved model."})
    compact_lm_head: bool = field(default=True, metadata={"help": "CPU: score only completion positions (faster)."})


def reward_plot(log_history: list[dict[str, Any]]):
    """DPO's implicit reward margin (chosen − rejected) and accuracy along training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    panels = ((left, "rewards/margins", "reward margin"), (right, "rewards/accuracies", "reward accuracy"))
    for ax, key, label in panels:
        points = [(r["step"], r[key]) for r in log_history if key in r and "eval_loss" not in r]
        if points:
            ax.plot(*zip(*points), "-")
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def run_dpo_stage(
    script_args: DPOScriptArguments,
    training_args: DPOConfig,
    model_args: ModelConfig,
    *,
    context: StageContext,
    callbacks: list | None = None,
) -> dict[str, Any]:
    output_dir = Path(training_args.output_dir)
    tokenizer = load_chat_tokenizer(script_args, model_args, training_args)
    train = load_split(script_args.dataset_name, script_args.dataset_train_split, script_args.dataset_config)
    train, dropped = prepare_preference_dataset(train, tokenizer, training_args.max_length, script_args.dataset_name)
    train = train.select_columns([c for c in PAIR_COLUMNS if c in train.column_names])
    eval_ds = None
    if script_args.dataset_test_split and training_args.eval_strategy != "no":
        eval_ds = load_split(script_args.dataset_name, script_args.dataset_test_split, script_args.dataset_config)
        eval_ds, _ = prepare_preference_dataset(eval_ds, tokenizer, training_args.max_length, script_args.dataset_name)
        eval_ds = eval_ds.select_columns([c for c in PAIR_COLUMNS if c in eval_ds.column_names])

    memory_kept = keep_freed_memory_on_cpu(training_args)
    if script_args.compact_lm_head:
        compact_lm_head_on_cpu()
    model = load_policy(model_args, training_args, tokenizer)
    ref_model = None
    if script_args.ref_model_name_or_path:
        ref_model = load_causal_lm(script_args.ref_model_name_or_path, field="ref_model_name_or_path",
                                   **attention_kwargs(model_args))
    output_dir.mkdir(parents=True, exist_ok=True)
    resume = resume_checkpoint(output_dir, training_args.resume_from_checkpoint)  # newest undamaged
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=training_args, train_dataset=train,
                         eval_dataset=eval_ds,
                         processing_class=tokenizer, peft_config=get_peft_config(model_args),
                         callbacks=[*(callbacks or []), *fault_tolerance_callbacks()])
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    merged = save_chat_model(trainer, tokenizer, output_dir, merge_adapters=script_args.merge_adapters)
    write_log_history(trainer, output_dir)

    logged = [r for r in trainer.state.log_history if "rewards/margins" in r and "eval_loss" not in r]
    metrics: dict[str, Any] = {
        "train_pairs": len(train), "dropped": dict(dropped), "steps": trainer.state.global_step,
        "train_loss": result.training_loss, "train_runtime_s": result.metrics.get("train_runtime"),
        "beta": training_args.beta, "loss_type": ",".join(training_args.loss_type),
        "precompute_ref_log_probs": training_args.precompute_ref_log_probs, "adapters_merged": merged,
        "keep_freed_memory": memory_kept, "resumed_from": Path(str(resume)).name if resume else None,
    }
    if logged:
        metrics.update({"final_reward_margin": logged[-1]["rewards/margins"],
                        "final_reward_accuracy": logged[-1]["rewards/accuracies"]})
    if eval_ds is not None:
        metrics.update({k: v for k, v in trainer.evaluate().items() if k in ("eval_loss", "eval_rewards/accuracies")})
    if context.is_main_process:
        section = context.section
        section.text(f"DPO ({metrics['loss_type']}, β = {training_args.beta}) of `{model_args.model_name_or_path}` on "
                     f"{len(train):,} pairs from `{script_args.dataset_name}` for {metrics['steps']} steps; "
                     "reference: "
                     f"`{script_args.ref_model_name_or_path or model_args.model_name_or_path}`.")
        drop_table(section, dropped, script_args.dataset_name)
        section.plot(loss_plot(trainer.state.log_history), "loss", "DPO loss")
        section.plot(reward_plot(trainer.state.log_history), "rewards", "DPO implicit reward margin and accuracy")
    return metrics
