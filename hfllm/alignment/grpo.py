"""GRPO stage: TRL's maintained `GRPOTrainer` beside hfllm's PPO, on the same prompts and reward.

Why beside PPO: GRPO drops PPO's value model — each prompt gets `num_generations` replies and a
reply's advantage is its reward against the group's — which is what TRL, open-instruct and axolotl
kept when they dropped PPO. The stage takes PPO's inputs (the SFT policy, the reward model, the
synthetic prompts), so the two compare on equal terms:

- reward: the reward model (a one-output sequence classifier on the policy's tokenizer, checked as
  PPO checks it), the task verifier (`verifier_reward: true`: 1 for a right answer, 0 otherwise, for
  prompts of hfllm's verifiable tasks), or both (TRL sums them, `reward_weights` weighs them);
- prompts: PPO's columns (`prompt` text or conversation, or `messages` with the trailing assistant
  turn dropped; `dataset_prompt_column` names another), the other columns passed on to the reward
  functions as TRL does (the verifier reads `task`);
- saved as a chat model (LoRA merged, `generation_config` stopping at `<|im_end|>`), resumable like
  every training stage (`hfllm.faults`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from transformers import PreTrainedModel
from trl import GRPOConfig, GRPOTrainer, ModelConfig, get_peft_config

from hfllm.alignment.chat_data import load_split
from hfllm.alignment.ppo import PROMPT_COLUMNS, _load_scorer, _prompt_messages
from hfllm.alignment.sft import load_policy, save_chat_model, write_log_history
from hfllm.alignment.tasks import TASKS
from hfllm.errors import ConfigError, DataError
from hfllm.faults import fault_tolerance_callbacks, resume_checkpoint
from hfllm.memory import keep_freed_memory_on_cpu
from hfllm.modeling import load_tokenizer
from hfllm.report import StageContext, loss_plot


@dataclass
class GRPOScriptArguments:
    """The prompts (TRL's `ScriptArguments` names) and the reward."""

    dataset_name: str = field(metadata={"help": "Prompt dataset: stage dir, file or Hub id."})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split of prompts to train on."})
    dataset_prompt_column: str | None = field(
        default=None, metadata={"help": "Column holding the prompts (unset: `prompt`, else `messages`)."})
    reward_model_path: str | None = field(
        default=None, metadata={"help": "Reward model (one-output sequence classifier on the policy's tokenizer)."})
    verifier_reward: bool = field(
        default=False, metadata={"help": "Add the task verifier as a reward: 1 for a right answer, else 0 (prompts "
                                 "need a `task` column of hfllm's verifiable tasks)."})
    merge_adapters: bool = field(default=True, metadata={"help": "Merge LoRA adapters into the saved weights."})


def grpo_prompts(dataset: datasets.Dataset, column: str | None, where: str) -> datasets.Dataset:
    """The prompts in TRL's `prompt` column (text or conversation), the other columns kept."""
    column = column or next((c for c in PROMPT_COLUMNS[:2] if c in dataset.column_names), None)
    if column is None or column not in dataset.column_names:
        raise DataError(f"no prompt column {column or 'prompt or messages'!r} (columns: "
                        f"{', '.join(dataset.column_names)})", where=where, field="dataset_prompt_column")
    if column != "prompt":
        dataset = dataset.remove_columns([c for c in ("prompt",) if c in dataset.column_names])
        dataset = dataset.rename_column(column, "prompt")
    if column == "messages":
        dataset = dataset.map(lambda row: {"prompt": _prompt_messages(row["prompt"])})
    return dataset


def _text(value: Any) -> str:
    """A prompt or completion as text: the last user turn of a conversation, or the text itself."""
    if isinstance(value, str):
        return value
    turns = [m.get("content", "") for m in value if m.get("role") in ("user", "assistant")]
    return turns[-1] if turns else ""


def verifier_reward(prompts: list, completions: list, task: list[str] | None = None, **_: Any) -> list[float | None]:
    """TRL reward function: 1.0 when the task's verifier accepts the reply, 0.0 when not; None
    (TRL: no reward from this function) for rows of no known task."""
    if task is None:
        raise DataError("verifier_reward needs a `task` column in the prompt dataset", field="verifier_reward")
    return [None if TASKS.get(t) is None else float(TASKS[t].verify(_text(p), _text(c)))
            for p, c, t in zip(prompts, completions, task)]


def run_grpo_stage(
    script_args: GRPOScriptArguments,
    training_args: GRPOConfig,
    model_args: ModelConfig,
    *,
    context: StageContext,
    callbacks: list | None = None,
) -> dict[str, Any]:
    output_dir = Path(training_args.output_dir)
    if not model_args.model_name_or_path:
        raise ConfigError("no model to start from", field="model_name_or_path")
    tokenizer = load_tokenizer(model_args.model_name_or_path, field="model_name_or_path")
    prompts = grpo_prompts(load_split(script_args.dataset_name, script_args.dataset_train_split,
                                      script_args.dataset_config),
                           script_args.dataset_prompt_column, script_args.dataset_name)
    memory_kept = keep_freed_memory_on_cpu(training_args)
    model = load_policy(model_args, training_args, tokenizer)
    rewards: list[Any] = []
    if script_args.reward_model_path:
        rewards.append(_load_scorer(script_args.reward_model_path, "reward_model_path", tokenizer, model))
    if script_args.verifier_reward:
        if "task" not in prompts.column_names:
            raise DataError("verifier_reward needs a `task` column", where=script_args.dataset_name, field="task")
        rewards.append(verifier_reward)
    if not rewards:
        raise ConfigError("set reward_model_path, verifier_reward: true, or both", field="reward_model_path")

    output_dir.mkdir(parents=True, exist_ok=True)
    resume = resume_checkpoint(output_dir, training_args.resume_from_checkpoint)  # newest undamaged
    trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=training_args, train_dataset=prompts,
                          processing_class=tokenizer,
                          reward_processing_classes=[tokenizer if isinstance(r, PreTrainedModel) else None
                                                     for r in rewards],
                          peft_config=get_peft_config(model_args),
                          callbacks=[*(callbacks or []), *fault_tolerance_callbacks()])
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    merged = save_chat_model(trainer, tokenizer, output_dir, merge_adapters=script_args.merge_adapters)
    write_log_history(trainer, output_dir)

    logged = [r for r in trainer.state.log_history if "reward" in r]
    metrics: dict[str, Any] = {
        "prompts": len(prompts), "steps": trainer.state.global_step, "train_loss": result.training_loss,
        "reward_functions": trainer.reward_func_names, "first_reward": logged[0]["reward"] if logged else None,
        "reward": logged[-1]["reward"] if logged else None,
        "adapters_merged": merged, "keep_freed_memory": memory_kept,
        "resumed_from": Path(str(resume)).name if resume else None,
    }
    if context.is_main_process:
        section = context.section
        section.text(
            f"GRPO (TRL's GRPOTrainer) from `{model_args.model_name_or_path}` on {len(prompts):,} prompts from "
            f"`{script_args.dataset_name}`: {metrics['steps']} steps, {training_args.num_generations} replies a "
            f"prompt, reward: {', '.join(trainer.reward_func_names)}.")
        keys = ("reward", *[f"rewards/{name}/mean" for name in trainer.reward_func_names])
        figure = loss_plot(trainer.state.log_history, keys=keys)
        figure.axes[0].set_ylabel("reward (mean over the step's replies)")
        section.plot(figure, "rewards", "GRPO rewards per step")
    return metrics
