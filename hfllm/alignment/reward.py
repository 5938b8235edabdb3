"""Reward-model stage: TRL's `RewardTrainer` on preference pairs, saved as a sequence-classification
model directory (one score per sequence; `pad_token_id` in its config, which the model needs to
find each sequence's last token).

Data: `prompt`/`chosen`/`rejected` (conversational or plain) or `chosen`/`rejected` alone, checked
and filtered by `hfllm.alignment.chat_data` (identical pairs, empty completions and over-long
prompts dropped and counted). The stage reports held-out pairwise accuracy (chosen scored above
rejected) and the mean margin on the test split, in the manifest and the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import set_seed
from trl import ModelConfig, RewardConfig, RewardTrainer, get_peft_config

from hfllm.alignment.chat_data import load_split, prepare_preference_dataset, prompt_text
from hfllm.alignment.sft import drop_table, load_chat_tokenizer, write_log_history
from hfllm.errors import ConfigError
from hfllm.faults import fault_tolerance_callbacks, resume_checkpoint
from hfllm.memory import keep_freed_memory_on_cpu
from hfllm.modeling import attention_kwargs, check_vocab, load_sequence_classifier
from hfllm.report import StageContext, loss_plot


@dataclass
class RewardScriptArguments:
    dataset_name: str = field(
        metadata={"help": "Preference pairs: stage dir, file or Hub id."})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str | None = field(
        default="test", metadata={"help": "Held-out pairs for accuracy and margin."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer (default: the model's)."})
    merge_adapters: bool = field(default=True, metadata={"help": "LoRA: merge the adapters into the saved model."})


def _as_text(value) -> str:
    return value if isinstance(value, str) else "".join(m["content"] for m in value)


@torch.no_grad()
def reply_scores(model, tokenizer, prompts: list, replies: list, batch_size: int = 64) -> list[float]:
    """The model's score of each reply to its prompt (chat template, no padding bias: right-padded,
    read at each sequence's last token by the model). A prompt is text, messages or None; a reply
    is messages (rendered with the prompt through the template) or text (appended as is)."""
    model.eval()

    def render(prompt, reply) -> str:
        if isinstance(reply, list):
            messages = ([] if prompt is None else list(prompt) if isinstance(prompt, list) else
                        [{"role": "user", "content": prompt}]) + list(reply)
            return tokenizer.apply_chat_template(messages, tokenize=False)
        return (prompt or "") + reply

    texts = [render(p, r) for p, r in zip(prompts, replies)]
    scores: list[float] = []
    for start in range(0, len(texts), batch_size):
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts[start:start + batch_size]]
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([x + [tokenizer.pad_token_id] * (width - len(x)) for x in ids])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
        scores += model(input_ids=input_ids, attention_mask=mask).logits[:, 0].tolist()
    return scores


def pairwise_scores(model, tokenizer, ds, batch_size: int = 64) -> tuple[list[float], list[float]]:
    """The model's score of each pair's chosen and rejected reply (`reply_scores`)."""
    prompts = ds["prompt"] if "prompt" in ds.column_names else [None] * len(ds)
    return (reply_scores(model, tokenizer, prompts, ds["chosen"], batch_size),
            reply_scores(model, tokenizer, prompts, ds["rejected"], batch_size))


def pairwise_accuracy(chosen: list[float], rejected: list[float]) -> dict[str, float]:
    n = len(chosen)
    return {"accuracy": sum(c > r for c, r in zip(chosen, rejected)) / n,
            "margin": sum(c - r for c, r in zip(chosen, rejected)) / n, "pairs": n}


def run_reward_stage(
    script_args: RewardScriptArguments,
    training_args: RewardConfig,
    model_args: ModelConfig,
    *,
    context: StageContext,
    callbacks: list | None = None,
) -> dict[str, Any]:
    output_dir = Path(training_args.output_dir)
    tokenizer = load_chat_tokenizer(script_args, model_args, training_args)
    if tokenizer.pad_token_id is None:
        raise ConfigError("the tokenizer has no pad token: a reward model reads each sequence's last token by it",
                          field="tokenizer_name")
    train = load_split(script_args.dataset_name, script_args.dataset_train_split, script_args.dataset_config)
    train, dropped = prepare_preference_dataset(train, tokenizer, training_args.max_length, script_args.dataset_name)
    test = None
    if script_args.dataset_test_split:
        test = load_split(script_args.dataset_name, script_args.dataset_test_split, script_args.dataset_config)
        test, _ = prepare_preference_dataset(test, tokenizer, training_args.max_length, script_args.dataset_name)
    extra = [c for c in train.column_names if c not in ("prompt", "chosen", "rejected", "margin")]
    train = train.remove_columns(extra)

    memory_kept = keep_freed_memory_on_cpu(training_args)
    if not model_args.model_name_or_path:
        raise ConfigError("no model to start from", field="model_name_or_path")
    # The score head is new: seeded, so that the same config gives the same model (the Trainer
    # seeds only after the model exists; a resumed run must repeat the killed run's first steps).
    set_seed(training_args.seed)
    model = load_sequence_classifier(model_args.model_name_or_path, field="model_name_or_path", num_labels=1,
                                     pad_token_id=tokenizer.pad_token_id,
                                     trust_remote_code=training_args.trust_remote_code,
                                     **attention_kwargs(model_args))
    check_vocab(model, tokenizer, model_args.model_name_or_path, field="tokenizer_name")
    output_dir.mkdir(parents=True, exist_ok=True)
    resume = resume_checkpoint(output_dir, training_args.resume_from_checkpoint)  # newest undamaged
    trainer = RewardTrainer(model=model, args=training_args, train_dataset=train, processing_class=tokenizer,
                            peft_config=get_peft_config(model_args),
                            callbacks=[*(callbacks or []), *fault_tolerance_callbacks()])
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    # Without its mixed-precision wrapper: the held-out scores below are then the saved fp32 model's
    # (under the bf16 autocast the wrapper keeps, 3 of 174 demo pairs flipped against task_eval's).
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    if model_args.use_peft and script_args.merge_adapters:
        model = model.merge_and_unload()
    model.config.pad_token_id = tokenizer.pad_token_id
    if trainer.accelerator.is_main_process:
        model.save_pretrained(str(output_dir), safe_serialization=True)
        tokenizer.save_pretrained(str(output_dir))
    write_log_history(trainer, output_dir)

    metrics: dict[str, Any] = {"train_pairs": len(train), "dropped": dict(dropped), "steps": trainer.state.global_step,
                               "train_loss": result.training_loss, "keep_freed_memory": memory_kept,
                               "attn_implementation": model.config._attn_implementation,
                               "resumed_from": Path(str(resume)).name if resume else None}
    if test is not None:
        chosen, rejected = pairwise_scores(model, tokenizer, test)
        held_out = pairwise_accuracy(chosen, rejected)
        metrics.update({"heldout_accuracy": held_out["accuracy"], "heldout_margin": held_out["margin"],
                        "heldout_pairs": held_out["pairs"]})
    if context.is_main_process:
        section = context.section
        section.text(f"Reward model from `{model_args.model_name_or_path}` trained on {len(train):,} pairs from "
                     f"`{script_args.dataset_name}` for {metrics['steps']} steps.")
        if test is not None:
            section.text(f"Held-out pairwise accuracy {metrics['heldout_accuracy']:.1%} on "
                         f"{metrics['heldout_pairs']} pairs "
                         f"(chosen scored above rejected), mean margin {metrics['heldout_margin']:.3f}.")
        drop_table(section, dropped, script_args.dataset_name)
        section.plot(loss_plot(trainer.state.log_history), "loss", "reward-model loss")
    return metrics


def held_out_examples(ds, n: int = 3) -> list[tuple[str, str, str]]:
    """A few (prompt, chosen, rejected) texts, for the report."""
    prompts = ds["prompt"] if "prompt" in ds.column_names else [""] * len(ds)
    return [(prompt_text(p) if p else "", _as_text(c), _as_text(r))
            for p, c, r in list(zip(prompts, ds["chosen"], ds["rejected"]))[:n]]
