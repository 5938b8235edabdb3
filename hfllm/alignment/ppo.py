"""PPO: the RLHF step of InstructGPT — a policy trained against a reward model, with a per-token KL
penalty to a frozen reference — as TRL 1.12 had it, under Accelerate.

Why hfllm owns this: TRL moved its `PPOTrainer` to `trl.experimental.ppo` and deleted it after
1.12.0. `PPOConfig` keeps that release's field names and defaults, so its YAML files parse, and
`PPOTrainer` takes the same arguments; one update (its metrics and the weights after it) equals
TRL 1.12.0's to 1e-5 (tests/test_ppo_parity.py). The maths is in `hfllm.alignment.ppo_math`.

Where it differs from TRL 1.12, on purpose:
- prompts: a `prompt` column (text or conversation, as TRL's `GRPOTrainer`/`RLOOTrainer` take
  them), a `messages` column (a trailing assistant turn is dropped), or pre-tokenized
  `input_ids` as TRL 1.12 took them;
- the stop token: with neither `stop_token` nor `stop_token_id` set, a tokenizer that has the
  ChatML `<|im_end|>` stops there (TRL stopped nowhere); a reply counts as ended (no
  `missing_eos_penalty`) when it contains the stop token (TRL looked for `eos_token` even when
  stopping at another token);
- the score (`score_turn_end`): a reward model trained by TRL's `RewardTrainer` on conversations
  read its score at the last token of the chat template's rendering, which ends past the stop
  token (ChatML: `<|im_end|>` then a newline); TRL 1.12 read it at the stop token, a position the
  reward model never learned to score. hfllm appends the template's text after the stop token
  first: on the demo's reward model the held-out margin between a right and a wrong worked sum was
  1.2 at the stop token against 5.4 where it was trained (benchmarks/RESULTS.md);
- rollout log-probabilities come from a forward pass after generation, the same computation as
  in training, so the first PPO ratio is exactly 1 (TRL took them from `generate`'s scores);
- resumable: each update's prompts, sampling seed and mini-batch order follow from (seed,
  update), so a run killed after update k and restarted from checkpoint-k repeats update k+1
  exactly; checkpoints hold the policy (or its adapter), the value model in `value_model/`, the
  optimizer, scheduler and trainer state;
- each mini-batch is one optimizer step (TRL 1.12, with both num_mini_batches and
  gradient_accumulation_steps above 1, stepped every gradient_accumulation_steps micro-batches,
  across mini-batches); gradients are clipped to `max_grad_norm` (TRL ignored it; 0: no clipping);
  `max_steps > 0` caps the number of updates; `gradient_checkpointing` is applied.
LoRA as TRL 1.12: with `peft_config` the policy gets adapters and the reference is the same base
with them switched off (no second copy); the value model is trained in full.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_callback import ExportableState, TrainerState
from transformers.trainer_utils import TrainOutput, get_last_checkpoint
from trl import ModelConfig, ScriptArguments, get_peft_config

from hfllm.alignment import ppo_math as pm
from hfllm.alignment.generation import chat_turn_end_ids, sampling_kwargs
from hfllm.data.loading import load_text_dataset
from hfllm.errors import ConfigError, DataError
from hfllm.faults import checkpoint_step, fault_tolerance_callbacks, resume_checkpoint
from hfllm.memory import keep_freed_memory_on_cpu
from hfllm.modeling import attention_kwargs, check_vocab, load_causal_lm, load_sequence_classifier, load_tokenizer
from hfllm.report import StageContext
from hfllm.tokenizer import IM_END

VALUE_MODEL_DIR = "value_model"  # the value model's subfolder in checkpoints and in the output dir


@dataclass
class PPOConfig(TrainingArguments):
    """TRL 1.12.0's `PPOConfig`: the same fields with the same defaults (TRL's base-config overrides
    of `TrainingArguments` included), so its YAML files and command lines parse unchanged.

    Batch sizes as TRL: one update generates `batch_size` = per_device_train_batch_size ×
    gradient_accumulation_steps × processes replies, then trains `num_ppo_epochs` passes over
    them in `num_mini_batches` mini-batches, each accumulated from micro-batches of
    `per_device_train_batch_size`. The run has ceil(total_episodes / batch_size) updates.
    """

    # TRL's defaults for every trainer (trl.trainer.base_config._BaseConfig).
    logging_steps: float = field(default=10, metadata={"help": "Kept for TRL; PPO logs every update."})
    gradient_checkpointing: bool = field(
        default=True, metadata={"help": "Recompute activations in the backward pass (less memory, ~20%% slower)."}
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; unset: on unless fp16 is set (TRL's default)."}
    )
    lr_scheduler_kwargs: dict | str | None = field(default=None, metadata={"help": "Extra scheduler arguments."})
    use_liger_kernel: bool = field(default=False, metadata={"help": "Liger kernels (not used by PPO's losses)."})
    torch_empty_cache_steps: int | None = field(
        default=None, metadata={"help": "Empty the accelerator cache every N steps."}
    )
    # PPOConfig's own.
    learning_rate: float = field(default=3e-6, metadata={"help": "The initial learning rate for AdamW."})
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenizing prompts."})
    num_mini_batches: int = field(default=1, metadata={"help": "Mini-batches each rollout batch is split into."})
    total_episodes: int | None = field(
        default=None, metadata={"help": "Replies generated in all (default: num_train_epochs × prompts)."}
    )
    local_rollout_forward_batch_size: int = field(
        default=64, metadata={"help": "Rows per no-grad forward pass in the rollout phase (per process)."}
    )
    num_sample_generations: int = field(
        default=10, metadata={"help": "Times in the run that replies to the first eval prompts are generated."}
    )
    response_length: int = field(default=53, metadata={"help": "Most tokens generated per reply."})
    stop_token: Literal["eos"] | None = field(
        default=None,
        metadata={"help": "'eos': stop at the tokenizer's eos_token. Exclusive with stop_token_id. Neither set: "
                  "<|im_end|> if the tokenizer has it, else no stop token."},
    )
    stop_token_id: int | None = field(default=None, metadata={"help": "Token id replies stop at."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature."})
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the score of a reply that does not reach the stop token."}
    )
    score_turn_end: bool = field(
        default=True,
        metadata={"help": "hfllm: read the reward model's score where its training read it — after the text the "
                  "chat template writes past the stop token (ChatML: a newline). False: at the stop token, as TRL."},
    )
    sft_model_path: str = field(default="EleutherAI/pythia-160m", metadata={"help": "Path to the SFT model."})
    world_size: int | None = field(default=None, metadata={"help": "Set by the trainer: number of processes."})
    num_total_batches: int | None = field(default=None, metadata={"help": "Set by the trainer: updates in all."})
    micro_batch_size: int | None = field(
        default=None, metadata={"help": "Set by the trainer: per_device_train_batch_size × world_size."}
    )
    local_batch_size: int | None = field(
        default=None,
        metadata={"help": "Set by the trainer: per_device_train_batch_size × gradient_accumulation_steps."},
    )
    batch_size: int | None = field(default=None, metadata={"help": "Set by the trainer: replies per update."})
    local_mini_batch_size: int | None = field(default=None, metadata={"help": "Set by the trainer: per process."})
    mini_batch_size: int | None = field(default=None, metadata={"help": "Set by the trainer: across processes."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the model to the Hub after training."})
    reward_model_path: str = field(default="EleutherAI/pythia-160m", metadata={"help": "Path to the reward model."})
    model_adapter_name: str | None = field(
        default=None, metadata={"help": "The trained PEFT adapter's name, with several adapters."}
    )
    ref_adapter_name: str | None = field(
        default=None, metadata={"help": "The reference PEFT adapter's name, with several adapters."}
    )
    num_ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch."})
    whiten_rewards: bool = field(default=False, metadata={"help": "Whiten the per-token rewards."})
    kl_coef: float = field(default=0.05, metadata={"help": "KL penalty coefficient."})
    kl_estimator: Literal["k1", "k3"] = field(
        default="k1", metadata={"help": "KL estimator (http://joschu.net/blog/kl-approx.html): k1 or k3."}
    )
    cliprange: float = field(default=0.2, metadata={"help": "Policy ratio clip range."})
    vf_coef: float = field(default=0.1, metadata={"help": "Value loss coefficient."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Value clip range."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    ds3_gather_for_generation: bool = field(
        default=True, metadata={"help": "DeepSpeed ZeRO-3: gather the policy's weights for generation."}
    )

    def __post_init__(self):
        self.bf16 = not self.fp16 if self.bf16 is None else self.bf16
        super().__post_init__()


@dataclass
class OnlineTrainerState(TrainerState):
    """`TrainerState` plus the number of replies generated so far (TRL's name: episode)."""

    episode: int = 0


# --------------------------------------------------------------------------------------- prompts

PROMPT_COLUMNS = ("prompt", "messages", "input_ids")


def prompt_column(dataset: datasets.Dataset, where: str | None = None) -> str:
    """Which column holds the prompts: `prompt`, `messages` or `input_ids`, in that order."""
    for column in PROMPT_COLUMNS:
        if column in dataset.column_names:
            return column
    columns = ", ".join(dataset.column_names)
    raise DataError(f"a prompt dataset needs a 'prompt', 'messages' or 'input_ids' column (columns: {columns})",
                    where=where, field="prompt")


def _prompt_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A conversation up to (not including) its trailing assistant turns: what the policy answers."""
    end = len(messages)
    while end and messages[end - 1].get("role") == "assistant":
        end -= 1
    return messages[:end]


def tokenize_prompts(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_prompt_length: int | None = None,
    num_proc: int | None = None,
    where: str | None = None,
) -> datasets.Dataset:
    """Prompts as token ids (one `input_ids` column): text tokenized as is, conversations with the
    chat template and its generation prompt. Empty or over-long prompts are errors naming the row."""
    column = prompt_column(dataset, where)

    def encode(row: dict[str, Any]) -> dict[str, list[int]]:
        value = row[column]
        if column == "input_ids":
            return {"input_ids": list(value)}
        if column == "messages":
            value = _prompt_messages(value)
        if isinstance(value, str):
            return {"input_ids": tokenizer(value)["input_ids"]}
        if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
            ids = tokenizer.apply_chat_template(value, add_generation_prompt=True, tokenize=True, return_dict=True)
            return {"input_ids": list(ids["input_ids"])}
        return {"input_ids": []}  # reported below with its row

    tokenized = dataset.map(encode, remove_columns=dataset.column_names, num_proc=num_proc)
    if len(tokenized) == 0:
        raise DataError("no prompts", where=where, field=column)
    lengths = [len(ids) for ids in tokenized["input_ids"]]
    for row, length in enumerate(lengths):
        if length == 0:
            raise DataError(f"row {row}: empty prompt, or not text nor a list of messages", where=where, field=column)
        if max_prompt_length is not None and length > max_prompt_length:
            raise DataError(
                f"row {row}: prompt is {length} tokens, more than max_prompt_length={max_prompt_length}",
                where=where, field=column,
            )
    return tokenized


def left_pad(rows: list[list[int]], pad_token_id: int) -> torch.Tensor:
    """Prompts padded on the left to one width, so every reply starts at the same column."""
    width = max(len(r) for r in rows)
    return torch.tensor([[pad_token_id] * (width - len(r)) + list(r) for r in rows], dtype=torch.long)


# -------------------------------------------------------------------------------- model passes

def _model_inputs(query_responses: torch.Tensor, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pads masked out and positions counted over real tokens only (prompts are left-padded)."""
    attention_mask = query_responses != pad_token_id
    return {
        "input_ids": query_responses.masked_fill(~attention_mask, 0),
        "attention_mask": attention_mask,
        "position_ids": attention_mask.cumsum(1) - attention_mask.long(),
    }


def _backbone_states(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Last hidden states of a sequence-classification model's backbone (before its `score` head)."""
    backbone = getattr(model, model.base_model_prefix)
    return backbone(**inputs, use_cache=False, return_dict=True).last_hidden_state


def response_logits(policy: nn.Module, query_responses: torch.Tensor, pad_token_id: int, width: int) -> torch.Tensor:
    """The policy's logits predicting each of the last `width` tokens (the reply)."""
    inputs = _model_inputs(query_responses, pad_token_id)
    return policy(**inputs, logits_to_keep=width + 1, use_cache=False).logits[:, :-1]


def response_values(value_model: PreTrainedModel, query_responses: torch.Tensor, pad_token_id: int, width: int):
    """The value head before each of the last `width` tokens: V of the state that token is drawn in."""
    states = _backbone_states(value_model, _model_inputs(query_responses, pad_token_id))
    return value_model.score(states[:, -width - 1 : -1]).squeeze(-1)


def sequence_scores(reward_model: PreTrainedModel, query_responses: torch.Tensor, pad_token_id: int,
                    positions: torch.Tensor) -> torch.Tensor:
    """The reward model's score read at one position per row (the reply's last token)."""
    states = _backbone_states(reward_model, _model_inputs(query_responses, pad_token_id))
    rows = torch.arange(states.shape[0], device=states.device)
    return reward_model.score(states[rows, positions]).squeeze(-1)


class PolicyAndValue(nn.Module):
    """Policy and value model as one module: Accelerate prepares (and DDP synchronises) both, and
    one optimizer steps both, as in TRL."""

    def __init__(self, policy: nn.Module, value_model: PreTrainedModel):
        super().__init__()
        self.policy = policy
        self.value_model = value_model

    def forward(self, query_responses: torch.Tensor, pad_token_id: int, width: int):
        return (response_logits(self.policy, query_responses, pad_token_id, width),
                response_values(self.value_model, query_responses, pad_token_id, width))


def disable_dropout(model: nn.Module) -> None:
    """PPO's ratio compares two forward passes: dropout would make them differ at random."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


@dataclass
class Rollout:
    """One update's replies and everything PPO computes from them before training (local rows)."""

    query_responses: torch.Tensor
    responses: torch.Tensor  # as generated
    postprocessed: torch.Tensor  # cut after the stop token
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor  # after the missing-stop penalty
    last_indices: torch.Tensor
    padding_mask: torch.Tensor
    padding_mask_p1: torch.Tensor
    kl: torch.Tensor
    non_score_reward: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


# ------------------------------------------------------------------------------------ trainer

class PPOTrainer(Trainer):
    """TRL 1.12's `PPOTrainer` (same arguments) on transformers' `Trainer` for optimizer,
    scheduler, callbacks, logging and checkpoints.

    Three methods decide what is random in an update; override them to replay given choices
    (the parity test replays TRL's): `rollout_prompts`, `generate_responses`, `minibatch_order`.

    hfllm's addition: `reply_verifier(prompt row, reply text)` → True/False (None: not checkable)
    logs `objective/verifier_accuracy` of each update's replies beside the reward model's score,
    so that reward hacking shows as the two parting.
    """

    def __init__(
        self,
        args: PPOConfig,
        processing_class: PreTrainedTokenizerBase,
        model: PreTrainedModel,
        ref_model: PreTrainedModel | None,
        reward_model: PreTrainedModel,
        train_dataset: datasets.Dataset,
        value_model: PreTrainedModel,
        eval_dataset: datasets.Dataset | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        callbacks: list[TrainerCallback] | None = None,
        peft_config: Any = None,
        reply_verifier: Callable[[int, str], bool | None] | None = None,
    ):
        if ref_model is not None and ref_model is model:
            raise ValueError("`model` and `ref_model` cannot be the same object: pass a copy, or None with peft.")
        if args.stop_token and args.stop_token_id is not None:
            raise ValueError("Set `stop_token` or `stop_token_id`, not both.")
        if args.stop_token not in (None, "eos"):
            raise ValueError(f"Unknown `stop_token` {args.stop_token!r}: 'eos' or None.")
        if args.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl_estimator must be 'k1' or 'k3', got {args.kl_estimator!r}.")
        if processing_class.pad_token_id is None:
            raise ValueError("The tokenizer needs a pad token (prompts are left-padded, replies right-padded).")
        self.stop_token_id = self._stop_token_id(args, processing_class)
        self.turn_end_ids = (chat_turn_end_ids(processing_class, self.stop_token_id)
                             if args.score_turn_end else [])

        if peft_config is not None:
            from peft import PeftModel, get_peft_model

            set_seed(args.seed)  # the adapters' initial weights, the same on every run of a config

            if isinstance(model, PeftModel):
                raise ValueError("Pass the base model with `peft_config`, not a PeftModel.")
            model = get_peft_model(model, peft_config)
        self.is_peft_model = hasattr(model, "disable_adapter") and hasattr(model, "peft_config")
        if ref_model is None and not self.is_peft_model:
            ref_model = _frozen_copy(model)
        for module in (model, ref_model, value_model, reward_model):
            if module is not None:
                disable_dropout(module)

        self._set_batch_sizes(args, len(train_dataset))
        self.policy_model, self.value_model = model, value_model
        super().__init__(
            model=PolicyAndValue(model, value_model), args=args, train_dataset=train_dataset,
            eval_dataset=eval_dataset, processing_class=processing_class, callbacks=callbacks, optimizers=optimizers,
        )
        self.train_dataset = tokenize_prompts(train_dataset, processing_class, num_proc=args.dataset_num_proc)
        self.eval_dataset = (tokenize_prompts(eval_dataset, processing_class, num_proc=args.dataset_num_proc)
                             if eval_dataset is not None else None)
        self.ref_model = ref_model.to(self.accelerator.device).eval() if ref_model is not None else None
        self.reward_model = reward_model.to(self.accelerator.device).eval()
        self.completions: list[dict[str, Any]] = []  # sample replies to eval prompts, by update
        self.reply_verifier = reply_verifier

    @staticmethod
    def _stop_token_id(args: PPOConfig, tokenizer: PreTrainedTokenizerBase) -> int | None:
        if args.stop_token == "eos":
            return tokenizer.eos_token_id
        if args.stop_token_id is not None:
            return args.stop_token_id
        chat_stop = tokenizer.convert_tokens_to_ids(IM_END)
        return chat_stop if chat_stop is not None and chat_stop != tokenizer.unk_token_id else None

    @staticmethod
    def _set_batch_sizes(args: PPOConfig, num_prompts: int) -> None:
        """TRL's batch arithmetic, written into `args` as TRL did."""
        args.world_size = TrainingArguments.world_size.fget(args)
        args.local_batch_size = args.per_device_train_batch_size * args.gradient_accumulation_steps
        args.micro_batch_size = args.per_device_train_batch_size * args.world_size
        args.batch_size = args.local_batch_size * args.world_size
        if args.batch_size % args.num_mini_batches or args.local_batch_size % args.num_mini_batches:
            raise ValueError(f"A batch of {args.batch_size} does not split into {args.num_mini_batches} mini-batches.")
        args.mini_batch_size = args.batch_size // args.num_mini_batches
        args.local_mini_batch_size = args.local_batch_size // args.num_mini_batches
        if args.whiten_rewards and args.local_mini_batch_size < 8:
            raise ValueError(f"whiten_rewards needs mini-batches of 8 rows or more, not {args.local_mini_batch_size}.")
        if num_prompts < args.batch_size:
            raise ValueError(f"{num_prompts} prompts are fewer than one update's batch of {args.batch_size}.")
        if args.total_episodes is None:
            args.total_episodes = int(args.num_train_epochs * num_prompts)
        args.num_total_batches = math.ceil(args.total_episodes / args.batch_size)
        if args.max_steps > 0:
            args.num_total_batches = min(args.num_total_batches, args.max_steps)

    # ---------------------------------------------------------------- what is random in an update

    def _seed(self, *parts: int) -> int:
        base = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return int(np.random.SeedSequence([base, *parts]).generate_state(1)[0])

    def rollout_prompts(self, update: int) -> list[int]:
        """This process's prompt rows for `update` (from 1): consecutive batches of a fresh seeded
        shuffle per pass over the prompts, the incomplete last batch of a pass left out."""
        args = self.args
        per_pass = len(self.train_dataset) // args.batch_size
        dataset_pass, batch = divmod(update - 1, per_pass)
        generator = torch.Generator().manual_seed(self._seed(dataset_pass))
        order = torch.randperm(len(self.train_dataset), generator=generator)
        start = batch * args.batch_size + self.accelerator.process_index * args.local_batch_size
        return order[start : start + args.local_batch_size].tolist()

    def generate_responses(self, policy: nn.Module, queries: torch.Tensor, update: int) -> torch.Tensor:
        """Sampled replies (`response_length` tokens at most; rows that stop early are padded)."""
        args = self.args
        config = GenerationConfig(
            max_new_tokens=args.response_length, use_cache=True, eos_token_id=self.stop_token_id,
            pad_token_id=self.processing_class.pad_token_id,
        )
        torch.manual_seed(self._seed(update, self.accelerator.process_index))
        # TRL's sampling (temperature + 1e-7, no top-k or top-p), drawn by hfllm's faster sampler
        return self._generate(policy, queries, config, args.temperature + 1e-7)

    def _generate(self, policy: nn.Module, queries: torch.Tensor, config: GenerationConfig,
                  temperature: float) -> torch.Tensor:
        inputs = _model_inputs(queries, self.processing_class.pad_token_id)
        was_training = policy.training
        policy.eval()  # no gradient checkpointing (and its cache switch-off) while sampling
        try:
            out = policy.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                  generation_config=config, **sampling_kwargs(temperature))
        finally:
            policy.train(was_training)
        return out[:, queries.shape[1]:]

    def minibatch_order(self, update: int, ppo_epoch: int) -> torch.Tensor:
        """The order in which this process's rollout rows are cut into mini-batches."""
        generator = torch.Generator().manual_seed(self._seed(update, ppo_epoch, self.accelerator.process_index, 1))
        return torch.randperm(self.args.local_batch_size, generator=generator)

    # --------------------------------------------------------------------------------- rollout

    @contextmanager
    def _reference(self, policy: nn.Module) -> Iterator[nn.Module]:
        """The frozen reference: its own model, or the policy's base with the adapter switched off."""
        if self.ref_model is not None:
            yield self.ref_model
        elif self.args.ref_adapter_name:
            policy.set_adapter(self.args.ref_adapter_name)
            try:
                yield policy
            finally:
                policy.set_adapter(self.args.model_adapter_name or "default")
        else:
            with policy.disable_adapter():
                yield policy

    @torch.no_grad()
    def rollout(self, update: int) -> Rollout:
        """Generate replies to this update's prompts and compute their rewards, values and advantages."""
        args, pad = self.args, self.processing_class.pad_token_id
        device = self.accelerator.device
        rows = [self.train_dataset[i]["input_ids"] for i in self.rollout_prompts(update)]
        queries = left_pad(rows, pad).to(device)
        unwrapped = self.accelerator.unwrap_model(self.model_wrapped)
        policy, value_model = unwrapped.policy, unwrapped.value_model
        with self.accelerator.autocast():
            responses = self.generate_responses(policy, queries, update)
        query_responses = torch.cat([queries, responses], 1)
        postprocessed = (pm.truncate_at_stop(responses, self.stop_token_id, pad)
                         if self.stop_token_id is not None else responses)
        last_indices = pm.last_token_indices(postprocessed, pad)
        width = responses.shape[1]
        temperature = args.temperature + 1e-7
        parts: dict[str, list[torch.Tensor]] = {"logprobs": [], "ref_logprobs": [], "values": [], "scores": []}
        step = args.local_rollout_forward_batch_size
        with self.accelerator.autocast():
            for start in range(0, queries.shape[0], step):
                chunk = slice(start, start + step)
                qr, response = query_responses[chunk], responses[chunk]
                logits = response_logits(policy, qr, pad, width) / temperature
                parts["logprobs"].append(pm.token_logprobs(logits.float(), response))
                with self._reference(policy) as reference:
                    ref_logits = response_logits(reference, qr, pad, width) / temperature
                parts["ref_logprobs"].append(pm.token_logprobs(ref_logits.float(), response))
                parts["values"].append(response_values(value_model, qr, pad, width).float())
                parts["scores"].append(self.score(queries[chunk], postprocessed[chunk], last_indices[chunk]).float())
        logprobs, ref_logprobs, values, scores = (torch.cat(parts[k]) for k in parts)

        stop_id = self.stop_token_id if self.stop_token_id is not None else self.processing_class.eos_token_id
        scores = pm.penalize_missing_stop(scores, postprocessed, stop_id, args.missing_eos_penalty)
        padding_mask, padding_mask_p1 = pm.response_masks(last_indices, width)
        logprobs = logprobs.masked_fill(padding_mask, pm.INVALID_LOGPROB)
        ref_logprobs = ref_logprobs.masked_fill(padding_mask, pm.INVALID_LOGPROB)
        values = values.masked_fill(padding_mask_p1, 0)
        kl = pm.kl_per_token(logprobs, ref_logprobs, args.kl_estimator)
        rewards, non_score_reward = pm.per_token_rewards(kl, scores, last_indices, args.kl_coef)
        if args.whiten_rewards:
            rewards = pm.masked_whiten(rewards, ~padding_mask_p1, shift_mean=False).masked_fill(padding_mask_p1, 0)
        advantages, returns = pm.gae(rewards, values, args.gamma, args.lam)
        advantages = pm.masked_whiten(advantages, ~padding_mask).masked_fill(padding_mask, 0)
        return Rollout(query_responses, responses, postprocessed, logprobs, ref_logprobs, values, scores,
                       last_indices, padding_mask, padding_mask_p1, kl, non_score_reward, advantages, returns)

    def score(self, queries: torch.Tensor, replies: torch.Tensor, last_indices: torch.Tensor) -> torch.Tensor:
        """The reward model's score of each (stop-truncated) reply, read after the chat template's
        end of turn where `score_turn_end` (the position its training read)."""
        pad = self.processing_class.pad_token_id
        replies, last = pm.append_after_stop(replies, last_indices, self.stop_token_id, self.turn_end_ids, pad)
        return sequence_scores(self.reward_model, torch.cat([queries, replies], 1), pad, queries.shape[1] + last)

    # ------------------------------------------------------------------------------- training

    def ppo_epochs(self, update: int, r: Rollout) -> dict[str, torch.Tensor]:
        """`num_ppo_epochs` passes over the rollout; each mini-batch is one optimizer step, its
        gradient the mean over micro-batches of `per_device_train_batch_size` rows (a mini-batch
        smaller than that is one micro-batch). Returns per-micro-batch statistics."""
        args, pad, accelerator = self.args, self.processing_class.pad_token_id, self.accelerator
        micro_starts = range(0, args.local_mini_batch_size, args.per_device_train_batch_size)
        shape = (args.num_ppo_epochs, args.num_mini_batches, len(micro_starts))
        stats = {k: torch.zeros(shape, device=accelerator.device)
                 for k in ("approxkl", "pg_clipfrac", "pg_loss", "vf_loss", "vf_clipfrac", "entropy", "ratio")}
        width, temperature = r.responses.shape[1], args.temperature + 1e-7
        for epoch in range(args.num_ppo_epochs):
            order = self.minibatch_order(update, epoch)
            for mini in range(args.num_mini_batches):
                mini_rows = order[mini * args.local_mini_batch_size : (mini + 1) * args.local_mini_batch_size]
                for micro, start in enumerate(micro_starts):
                    idx = mini_rows[start : start + args.per_device_train_batch_size]
                    last_micro = micro == len(micro_starts) - 1
                    with nullcontext() if last_micro else accelerator.no_sync(self.model_wrapped):
                        logits, vpred = self.model_wrapped(r.query_responses[idx], pad, width)
                        logits = logits.float() / temperature
                        new_logprobs = pm.token_logprobs(logits, r.responses[idx])
                        new_logprobs = new_logprobs.masked_fill(r.padding_mask[idx], pm.INVALID_LOGPROB)
                        vpred = vpred.float().masked_fill(r.padding_mask_p1[idx], 0)
                        vf_loss, vf_clipfrac = pm.clipped_value_loss(
                            vpred, r.values[idx], r.returns[idx], ~r.padding_mask_p1[idx], args.cliprange_value)
                        pg = pm.clipped_policy_loss(
                            new_logprobs, r.logprobs[idx], r.advantages[idx], ~r.padding_mask[idx], args.cliprange)
                        accelerator.backward((pg.loss + args.vf_coef * vf_loss) / len(micro_starts))
                    if last_micro:
                        if args.max_grad_norm and args.max_grad_norm > 0:
                            accelerator.clip_grad_norm_(self.model_wrapped.parameters(), args.max_grad_norm)
                        self.optimizer.step()
                        self.optimizer.zero_grad()
                    with torch.no_grad():  # TRL's statistics: means over every position of the micro-batch
                        at = (epoch, mini, micro)
                        stats["approxkl"][at] = 0.5 * (pg.log_ratio**2).mean()
                        stats["pg_clipfrac"][at] = pg.clipfrac
                        stats["pg_loss"][at] = pg.loss
                        stats["vf_loss"][at] = vf_loss
                        stats["vf_clipfrac"][at] = vf_clipfrac
                        stats["entropy"][at] = pm.entropy_from_logits(logits).mean()
                        stats["ratio"][at] = pg.ratio.mean()
        return stats

    def update_metrics(self, r: Rollout, stats: dict[str, torch.Tensor], start_time: float) -> dict[str, float]:
        """TRL 1.12's metrics (same names), then the replies' lengths as TRL's GRPO/RLOO name them."""
        def mean(x: torch.Tensor) -> float:
            return self.accelerator.gather_for_metrics(x).float().mean().item()

        mean_non_score_reward = r.non_score_reward.sum(1).mean()
        lengths = (r.last_indices + 1).float()
        all_lengths = self.accelerator.gather_for_metrics(lengths)
        ended = (r.postprocessed == (self.stop_token_id if self.stop_token_id is not None
                                     else self.processing_class.eos_token_id)).any(1).float()
        return {
            "eps": int(self.state.episode / max(time.time() - start_time, 1e-9)),
            "objective/kl": mean(r.kl.sum(1).mean()),
            "objective/entropy": mean(((-r.logprobs) * (~r.padding_mask).float()).sum(1).mean()),
            "objective/non_score_reward": mean(mean_non_score_reward),
            "objective/rlhf_reward": mean(mean_non_score_reward + r.scores.mean()),
            "objective/scores": mean(r.scores.mean()),
            "policy/approxkl_avg": mean(stats["approxkl"]),
            "policy/clipfrac_avg": mean(stats["pg_clipfrac"]),
            "loss/policy_avg": mean(stats["pg_loss"]),
            "loss/value_avg": mean(stats["vf_loss"]),
            "val/clipfrac_avg": mean(stats["vf_clipfrac"]),
            "policy/entropy_avg": mean(stats["entropy"]),
            "val/ratio": mean(stats["ratio"]),
            "val/ratio_var": self.accelerator.gather_for_metrics(stats["ratio"]).var().item(),
            "val/num_eos_tokens": int(self.accelerator.gather_for_metrics(
                (r.responses == self.processing_class.eos_token_id).sum()).sum().item()),
            "completions/mean_length": all_lengths.mean().item(),
            "completions/min_length": all_lengths.min().item(),
            "completions/max_length": all_lengths.max().item(),
            "completions/clipped_ratio": 1.0 - mean(ended),
            "lr": self.lr_scheduler.get_last_lr()[0],
            "episode": self.state.episode,
        }

    def verifier_accuracy(self, update: int, r: Rollout) -> float:
        """Share of this update's replies (all processes) that `reply_verifier` accepts, of those it can check."""
        replies = self.processing_class.batch_decode(r.postprocessed, skip_special_tokens=True)
        checks = [self.reply_verifier(row, reply) for row, reply in zip(self.rollout_prompts(update), replies)]
        counts = torch.tensor([[sum(c is True for c in checks), sum(c is not None for c in checks)]],
                              dtype=torch.float64, device=self.accelerator.device)
        right, checked = self.accelerator.gather_for_metrics(counts).sum(0).tolist()
        return right / checked if checked else float("nan")

    def train(self, resume_from_checkpoint: str | bool | None = None) -> TrainOutput:
        """Run the updates from the first, or from the one after `resume_from_checkpoint`'s (True:
        the newest checkpoint in `output_dir`)."""
        args = self.args
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(args.output_dir)
        self._prepare(resume_from_checkpoint or None)
        self.model_wrapped.train()
        start_time = time.time()
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)
        for update in range(self.state.global_step + 1, args.num_total_batches + 1):
            self.state.episode += args.batch_size
            rollout = self.rollout(update)
            stats = self.ppo_epochs(update, rollout)
            with torch.no_grad():
                metrics = self.update_metrics(rollout, stats, start_time)
            if self.reply_verifier is not None:
                metrics["objective/verifier_accuracy"] = self.verifier_accuracy(update, rollout)
            self.state.global_step = update
            self.state.epoch = self.state.episode / len(self.train_dataset)
            self.log(metrics)
            self.lr_scheduler.step()
            self.control = self.callback_handler.on_step_end(args, self.state, self.control)
            if self.control.should_save:
                self._save_checkpoint(self.model, trial=None)
                self.control = self.callback_handler.on_save(args, self.state, self.control)
            if args.num_sample_generations > 0 and (update - 1) % self._sample_every == 0:
                self.generate_completions(update)
            if self.control.should_training_stop:
                break
        self.control = self.callback_handler.on_train_end(args, self.state, self.control)
        return TrainOutput(self.state.global_step, float("nan"), {"train_runtime": time.time() - start_time})

    def _prepare(self, checkpoint: str | None) -> None:
        """Optimizer, scheduler, Accelerate, gradient checkpointing, state; restored from a checkpoint."""
        args = self.args
        if args.gradient_checkpointing:  # transformers ≥ 5.23 names it activation checkpointing
            kwargs = args.gradient_checkpointing_kwargs or {"use_reentrant": False}
            for module in (self.policy_model, self.value_model):
                if hasattr(module, "activation_checkpointing_enable"):
                    module.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
                else:
                    module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if checkpoint is not None:
            load_weights(self.policy_model, Path(checkpoint))
            load_weights(self.value_model, Path(checkpoint) / VALUE_MODEL_DIR)
        self.create_optimizer()
        # Mini-batches are accumulated here (ppo_epochs), not by Accelerate's step counter.
        self.accelerator.gradient_accumulation_steps = 1
        self.model_wrapped, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        self.create_scheduler(num_training_steps=args.num_total_batches, optimizer=self.optimizer)
        self.state = OnlineTrainerState(
            stateful_callbacks=[c for c in self.callback_handler.callbacks + [self.control]
                                if isinstance(c, ExportableState)],
        )
        if checkpoint is not None:
            self._load_optimizer_and_scheduler(checkpoint)
            self._load_rng_state(checkpoint)
            self.state = OnlineTrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
        epochs = args.total_episodes / len(self.train_dataset)
        self.state.init_training_references(self, args.num_total_batches, epochs, None)
        self.state.compute_steps(args, args.num_total_batches)
        self.state.train_batch_size = args.batch_size
        for name in ("model", "optimizer", "lr_scheduler"):
            setattr(self.callback_handler, name, getattr(self, name))
        self._sample_every = max(1, args.num_total_batches // max(args.num_sample_generations, 1))

    # -------------------------------------------------------------------------- samples, saving

    @torch.no_grad()
    def generate_completions(self, update: int) -> None:
        """Replies to the first eval prompts at near-zero temperature, scored (TRL's samples)."""
        if self.eval_dataset is None or not len(self.eval_dataset):
            return
        pad = self.processing_class.pad_token_id
        n = min(self.args.per_device_eval_batch_size, len(self.eval_dataset))
        queries = left_pad(self.eval_dataset[:n]["input_ids"], pad).to(self.accelerator.device)
        config = GenerationConfig(max_new_tokens=self.args.response_length, use_cache=True,
                                  eos_token_id=self.stop_token_id, pad_token_id=pad)
        policy = self.accelerator.unwrap_model(self.model_wrapped).policy
        with self.accelerator.autocast():
            responses = self._generate(policy, queries, config, 0.01 + 1e-7)
            if self.stop_token_id is not None:
                responses = pm.truncate_at_stop(responses, self.stop_token_id, pad)
            last = pm.last_token_indices(responses, pad)
            scores = self.score(queries, responses, last)
        decode = self.processing_class.batch_decode
        prompts, replies = decode(queries, skip_special_tokens=True), decode(responses, skip_special_tokens=True)
        for prompt, reply, score in zip(prompts, replies, scores.tolist()):
            self.completions.append({"update": update, "prompt": prompt, "completion": reply, "score": score})

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The policy (its adapter with peft) and tokenizer in `output_dir`, the value model in
        `output_dir/value_model`, as safetensors."""
        output_dir = Path(output_dir or self.args.output_dir)
        if self.args.should_save:
            self.policy_model.save_pretrained(output_dir, safe_serialization=True)
            self.value_model.save_pretrained(output_dir / VALUE_MODEL_DIR, safe_serialization=True)
            self.processing_class.save_pretrained(output_dir)
        self.accelerator.wait_for_everyone()


def load_weights(model: nn.Module, directory: Path) -> None:
    """Load what `save_pretrained` wrote in `directory` into `model` in place: a PEFT model's
    adapter, or a model's (possibly sharded) safetensors, every weight accounted for."""
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, load_file(str(directory / "adapter_model.safetensors")))
        if result.unexpected_keys:
            raise ValueError(f"{directory}: adapter weights the model does not have: {result.unexpected_keys[:5]}")
        return
    index = directory / "model.safetensors.index.json"
    files = set(json.loads(index.read_text())["weight_map"].values()) if index.exists() else {"model.safetensors"}
    state: dict[str, torch.Tensor] = {}
    for name in sorted(files):
        state.update(load_file(str(directory / name)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    current = model.state_dict()
    loaded = {current[k].data_ptr() for k in state if k in current}
    untied = [k for k in missing if current[k].data_ptr() not in loaded]  # a tied weight comes with its twin
    if unexpected or untied:
        raise ValueError(f"{directory}: weights do not match the model (missing {untied[:5]}, unexpected "
                         f"{unexpected[:5]})")


def _frozen_copy(model: PreTrainedModel) -> PreTrainedModel:
    """A copy of the policy as the reference, without gradients."""
    import copy

    ref = copy.deepcopy(model)
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref.eval()


# -------------------------------------------------------------------------------------- stage

@dataclass
class PPOScriptArguments(ScriptArguments):
    """The prompts: TRL's `ScriptArguments` (what TRL's ppo.py parsed), and hfllm's checks.

    `dataset_name` has a `prompt` (text or messages), `messages` or `input_ids` column."""

    dataset_test_split: str | None = field(
        default=None,
        metadata={"help": "Split whose first prompts get sample replies during training (none if unset)."},
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={"help": "Longest prompt allowed, in tokens (a longer one is an error naming its row). Unset: what "
                  "the policy's context leaves after response_length."},
    )
    value_model_path: str | None = field(
        default=None, metadata={"help": "Value model to start from; unset: the reward model, as TRL's script did."}
    )
    dataset_prompt_column: str | None = field(
        default=None,
        metadata={"help": "Column holding the prompts. Unset: `prompt`, `messages` or `input_ids`, the first present "
                  "(UltraFeedback has a plain-text `prompt` and the conversation in `messages`: name `messages` to "
                  "prompt a chat model through its template)."},
    )


def _load_scorer(path: str, field_name: str, tokenizer: PreTrainedTokenizerBase,
                 policy: PreTrainedModel, **load_kwargs) -> PreTrainedModel:
    """A reward or value model: a one-output sequence classifier over the policy's tokenizer."""
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        reason = str(err).splitlines()[0]
        raise ConfigError(f"cannot load a model from {path!r} ({reason})", field=field_name) from None
    architectures = config.architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures) or config.num_labels != 1:
        raise ConfigError(f"{path} is not a reward model: needs a sequence classifier with one output "
                          f"(architectures {architectures}, num_labels {config.num_labels})", field=field_name)
    try:
        own_tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception:  # noqa: BLE001 — no (loadable) tokenizer there: compare vocabulary sizes instead
        own_tokenizer = None
    if own_tokenizer is not None and own_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ConfigError(f"the tokenizer of {path} ({len(own_tokenizer)} tokens) differs from the policy's "
                          f"({len(tokenizer)} tokens): score with a model trained on the policy's tokenizer",
                          field=field_name)
    if own_tokenizer is None and config.vocab_size != policy.config.vocab_size:
        raise ConfigError(f"{path} has vocab_size {config.vocab_size}, the policy {policy.config.vocab_size}, and no "
                          "tokenizer to compare: it cannot score the policy's tokens", field=field_name)
    model = load_sequence_classifier(path, field=field_name, num_labels=1, **load_kwargs)
    if model.config.vocab_size < len(tokenizer):
        raise ConfigError(f"{path} has vocab_size {model.config.vocab_size}, fewer than the tokenizer's "
                          f"{len(tokenizer)} tokens", field=field_name)
    return model


def task_verifier(prompts: datasets.Dataset) -> Callable[[int, str], bool | None] | None:
    """For prompts with a `task` column that hfllm's verifiable tasks know (the synthetic stage's
    prompts): row, reply → whether the reply's answer is right. None for other datasets."""
    from hfllm.alignment.tasks import TASKS

    if "task" not in prompts.column_names or "prompt" not in prompts.column_names:
        return None
    tasks = prompts["task"]
    texts = [p if isinstance(p, str) else next((m["content"] for m in reversed(p) if m.get("role") == "user"), "")
             for p in prompts["prompt"]]

    def verify(row: int, reply: str) -> bool | None:
        task = TASKS.get(tasks[row])
        return task.verify(texts[row], reply) if task is not None else None

    return verify


def only_prompt_column(prompts: datasets.Dataset, column: str | None, where: str) -> datasets.Dataset:
    """The prompts of `column` alone (renamed `prompt` when it has another name), so that
    `prompt_column` finds them and not another column; unchanged when `column` is unset."""
    if column is None:
        return prompts
    if column not in prompts.column_names:
        raise DataError(f"no column {column!r} (columns: {', '.join(prompts.column_names)})", where=where,
                        field="dataset_prompt_column")
    prompts = prompts.select_columns([column])
    return prompts if column in PROMPT_COLUMNS else prompts.rename_column(column, "prompt")


def _load_prompt_split(name: str, split: str, config: str | None, column: str | None = None) -> datasets.Dataset:
    """The split, checked for its prompt column: `column`, else one of PROMPT_COLUMNS."""
    if column is not None:
        return load_text_dataset(name, split, text_field=column, config=config)
    for column in PROMPT_COLUMNS:  # load_text_dataset checks one column: try each accepted one
        try:
            return load_text_dataset(name, split, text_field=column, config=config)
        except DataError as err:
            if err.field != column:
                raise
            missing = err
    raise DataError(f"a prompt dataset needs a 'prompt', 'messages' or 'input_ids' column ({missing.message})",
                    where=name, field="prompt")


def _curves(log_history: list[dict[str, Any]]):
    """Reward, KL, reply length and (where the prompts are verifiable) the replies' verifier accuracy
    against the update: the report's PPO plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in log_history if "objective/scores" in r]
    steps = [r["step"] for r in rows]
    panels = [("reward", [("objective/scores", "reward-model score"), ("objective/rlhf_reward", "score - β·KL")]),
              ("KL to the reference (nats/reply)", [("objective/kl", "KL")]),
              ("reply length (tokens)", [("completions/mean_length", "mean length")])]
    if rows and "objective/verifier_accuracy" in rows[0]:  # the reward model against the ground truth
        panels.append(("replies right (verifier)", [("objective/verifier_accuracy", "verifier accuracy")]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (ylabel, keys) in zip(axes, panels):
        for key, label in keys:
            ax.plot(steps, [r[key] for r in rows], "o-" if len(rows) < 30 else "-", label=label, markersize=3)
        ax.set_xlabel("PPO update")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _generation_config(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, stop_token_id: int | None):
    """The saved model stops at the end of its turn (the stop token) and at the end of text."""
    config = policy.generation_config
    stops = [t for t in (stop_token_id, tokenizer.eos_token_id) if t is not None]
    config.eos_token_id = list(dict.fromkeys(stops)) or None
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = tokenizer.bos_token_id
    return config


def run_ppo_stage(
    script_args: PPOScriptArguments,
    ppo_config: PPOConfig,
    model_args: ModelConfig,
    *,
    context: StageContext,
    callbacks: list[TrainerCallback] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """PPO from the SFT policy (`sft_model_path`; tokenizer from `model_name_or_path`, else the
    policy's dir) against `reward_model_path`, the value model starting from the reward model, as
    TRL's ppo.py script did. Resumes from the newest complete checkpoint in `output_dir`. Writes a
    standard model dir (LoRA adapters merged), its value model in `value_model/`, sample replies
    in `completions.jsonl`; reports reward, KL and reply-length curves."""
    args = ppo_config
    if not script_args.dataset_name:
        raise ConfigError("set the prompt dataset", field="dataset_name")
    if script_args.dataset_streaming:
        raise ConfigError("PPO samples prompts from the whole dataset: it cannot stream", field="dataset_streaming")
    if model_args.load_in_4bit or model_args.load_in_8bit:
        raise ConfigError("quantized loading is not supported by hfllm's PPO", field="load_in_4bit")
    load_kwargs = attention_kwargs(model_args)
    tokenizer_path = model_args.model_name_or_path or args.sft_model_path
    tokenizer = load_tokenizer(tokenizer_path, field="model_name_or_path" if model_args.model_name_or_path
                               else "sft_model_path")
    if tokenizer.pad_token_id is None:
        raise ConfigError(f"the tokenizer of {tokenizer_path} has no pad token", field="model_name_or_path")
    policy = load_causal_lm(args.sft_model_path, field="sft_model_path", **load_kwargs)
    check_vocab(policy, tokenizer, args.sft_model_path, field="sft_model_path")
    reward_model = _load_scorer(args.reward_model_path, "reward_model_path", tokenizer, policy, **load_kwargs)
    value_field = "value_model_path" if script_args.value_model_path else "reward_model_path"
    value_model = _load_scorer(script_args.value_model_path or args.reward_model_path, value_field, tokenizer,
                               policy, **load_kwargs)

    context_length = getattr(policy.config, "max_position_embeddings", None)
    limit = script_args.max_prompt_length
    if context_length is not None:
        room = context_length - args.response_length
        if room <= 0 or (limit is not None and limit > room):
            raise ConfigError(f"prompts of {limit or 1} tokens plus response_length {args.response_length} exceed "
                              f"the policy's context of {context_length} tokens", field="response_length")
        limit = limit if limit is not None else room
    raw_train = _load_prompt_split(script_args.dataset_name, script_args.dataset_train_split,
                                   script_args.dataset_config, script_args.dataset_prompt_column)
    train_prompts = tokenize_prompts(
        only_prompt_column(raw_train, script_args.dataset_prompt_column, script_args.dataset_name), tokenizer,
        max_prompt_length=limit, num_proc=args.dataset_num_proc, where=script_args.dataset_name)
    if len(train_prompts) < args.per_device_train_batch_size * args.gradient_accumulation_steps:
        raise DataError(f"{len(train_prompts)} prompts, fewer than one update's batch "
                        f"(per_device_train_batch_size × gradient_accumulation_steps)",
                        where=script_args.dataset_name, field=script_args.dataset_train_split)
    eval_prompts = None
    if script_args.dataset_test_split:
        raw_eval = _load_prompt_split(script_args.dataset_name, script_args.dataset_test_split,
                                      script_args.dataset_config, script_args.dataset_prompt_column)
        eval_prompts = tokenize_prompts(
            only_prompt_column(raw_eval, script_args.dataset_prompt_column, script_args.dataset_name), tokenizer,
            max_prompt_length=limit, num_proc=args.dataset_num_proc, where=script_args.dataset_name)

    peft_config = None
    if model_args.use_peft:
        peft_config = get_peft_config(model_args)
    ref_model = None if peft_config is not None else load_causal_lm(
        args.sft_model_path, field="sft_model_path", **load_kwargs)
    output_dir = Path(args.output_dir)
    resume = resume_checkpoint(output_dir, args.resume_from_checkpoint)  # the newest complete, undamaged one
    memory_kept = keep_freed_memory_on_cpu(args)
    trainer = PPOTrainer(args, tokenizer, policy, ref_model, reward_model, train_prompts, value_model,
                         eval_dataset=eval_prompts, callbacks=[*(callbacks or []), *fault_tolerance_callbacks()],
                         peft_config=peft_config, reply_verifier=task_verifier(raw_train))
    if script_args.ignore_bias_buffers:  # TRL scripts' DDP workaround: boolean buffers are not synchronised
        trainer.model._ddp_params_and_buffers_to_ignore = [
            name for name, buffer in trainer.model.named_buffers() if buffer.dtype == torch.bool]
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if not trainer.completions or trainer.completions[-1]["update"] != trainer.state.global_step:
        trainer.generate_completions(trainer.state.global_step)  # the report shows the final policy's replies

    final = trainer.policy_model.merge_and_unload() if trainer.is_peft_model else trainer.policy_model
    final.generation_config = _generation_config(final, tokenizer, trainer.stop_token_id)
    if args.should_save:
        final.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
        trainer.value_model.save_pretrained(output_dir / VALUE_MODEL_DIR)
        tokenizer.save_pretrained(output_dir / VALUE_MODEL_DIR)
        with (output_dir / "completions.jsonl").open("w") as f:
            f.writelines(json.dumps(row) + "\n" for row in trainer.completions)

    history = [r for r in trainer.state.log_history if "objective/scores" in r]
    last = history[-1] if history else {}
    metrics: dict[str, Any] = {
        "updates": trainer.state.global_step,
        "episodes": trainer.state.episode,
        "train_prompts": len(train_prompts),
        "parameters": sum(p.numel() for p in final.parameters()),
        "peft": peft_config is not None,
        "stop_token": None if trainer.stop_token_id is None else tokenizer.decode([trainer.stop_token_id]),
        "first_scores": history[0]["objective/scores"] if history else None,
        "first_verifier_accuracy": history[0].get("objective/verifier_accuracy") if history else None,
        "verifier_accuracy": last.get("objective/verifier_accuracy"),
        **{k: last[k] for k in ("objective/scores", "objective/rlhf_reward", "objective/kl", "objective/entropy",
                                "policy/clipfrac_avg", "policy/approxkl_avg", "loss/value_avg",
                                "completions/mean_length", "completions/clipped_ratio") if k in last},
        "train_runtime": result.metrics.get("train_runtime"),
        "keep_freed_memory": memory_kept,
        "resumed_from": f"checkpoint-{checkpoint_step(resume)}" if resume else None,
    }
    section = context.section
    section.text(
        f"PPO from `{args.sft_model_path}` against the reward model `{args.reward_model_path}`"
        f"{' (LoRA adapters, merged)' if peft_config is not None else ''}: {metrics['updates']} updates of "
        f"{args.batch_size} replies (at most {args.response_length} tokens, stopping at "
        f"`{metrics['stop_token']}`), KL coefficient {args.kl_coef} ({args.kl_estimator}), "
        f"{args.num_ppo_epochs} PPO epochs × {args.num_mini_batches} mini-batches per update."
    )
    section.plot(_curves(trainer.state.log_history), "curves", "reward, KL and reply length per PPO update")
    samples = [c for c in trainer.completions if c["update"] == trainer.completions[-1]["update"]][:4] \
        if trainer.completions else []
    if samples:
        section.text(f"Replies to held-out prompts after update {samples[0]['update']} (near-greedy):")
        section.table(["prompt", "reply", "score"],
                      [[_cell(s["prompt"]), _cell(s["completion"]), s["score"]] for s in samples])
    return metrics


def _cell(text: str, limit: int = 120) -> str:
    """Text for one markdown table cell: one line, pipes escaped, cut to `limit` characters."""
    one_line = " ".join(text.split()).replace("|", "\\|")
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"
