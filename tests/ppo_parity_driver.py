"""TRL 1.12.0's side of tests/test_ppo_parity.py, run in its own process with TRL 1.12.0 first on
PYTHONPATH (it is never an hfllm dependency):

    PYTHONPATH=<trl-1.12.0 dir> python ppo_parity_driver.py spec.json out_dir

For each scenario in spec.json it runs TRL's `PPOTrainer.train()` for one update on the saved
tiny models, with `batch_generation` patched to return the spec's fixed reply for each prompt
(and the policy's logits for it, which is what `generate` returns as scores), and writes:
the update's logged metrics, the prompts of the update in TRL's order, the mini-batch
permutations TRL drew, and the policy and value weights after the update. It also writes TRL's
`PPOConfig` fields and their defaults.
"""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
import trl
from datasets import Dataset
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from trl.experimental.ppo import PPOConfig, PPOTrainer
from trl.experimental.ppo import ppo_trainer as trl_ppo

assert trl.__version__ == "1.12.0", trl.__version__


def config_defaults() -> dict:
    out = {}
    for f in dataclasses.fields(PPOConfig):
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out[f.name] = json.loads(json.dumps(value, default=repr))
    return out


def state_dict(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def run_scenario(spec: dict, scenario: dict, out: Path) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(spec["policy"], padding_side="left")
    tokenizer.eos_token = spec["eos_token"]
    prompts = spec["prompts"]
    fixed = {tuple(p): r for p, r in zip(prompts, spec["responses"])}
    pad = tokenizer.pad_token_id
    record = {"prompts": [], "permutations": []}

    def fixed_generation(model, queries, local_rollout_forward_batch_size, pad_token_id, generation_config):
        rows = [[t for t in q.tolist() if t != pad] for q in queries]  # prompts never contain pad
        record["prompts"].extend(prompts.index(r) for r in rows)
        responses = torch.tensor([fixed[tuple(r)] for r in rows], device=queries.device)
        query_responses = torch.cat([queries, responses], 1)
        logits = trl_ppo.forward(model, query_responses, pad_token_id).logits[:, queries.shape[1] - 1 : -1]
        return query_responses, logits / generation_config.temperature

    trl_ppo.batch_generation = fixed_generation
    permutation = np.random.permutation

    def recorded_permutation(n):
        order = permutation(n)
        record["permutations"].append(order.tolist())
        return order

    np.random.permutation = recorded_permutation
    try:
        args = PPOConfig(output_dir=str(out), report_to="none", save_strategy="no", num_sample_generations=0,
                         disable_tqdm=True, **scenario["config"])
        policy = AutoModelForCausalLM.from_pretrained(spec["policy"], dtype=torch.float32)
        ref = AutoModelForCausalLM.from_pretrained(spec["reference"], dtype=torch.float32)
        reward = AutoModelForSequenceClassification.from_pretrained(spec["reward"], num_labels=1, dtype=torch.float32)
        value = AutoModelForSequenceClassification.from_pretrained(spec["value"], num_labels=1, dtype=torch.float32)
        dataset = Dataset.from_dict({"input_ids": prompts})
        trainer = PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref, reward_model=reward,
                             train_dataset=dataset, value_model=value, eval_dataset=dataset)
        trainer.train()
    finally:
        np.random.permutation = permutation
    out.mkdir(parents=True, exist_ok=True)
    save_file(state_dict(policy), str(out / "policy.safetensors"))
    save_file(state_dict(value), str(out / "value.safetensors"))
    logs = [row for row in trainer.state.log_history if "objective/scores" in row]
    return {"metrics": logs, **record}


def main(spec_path: str, out_dir: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(out_dir)
    result = {"config_defaults": config_defaults(), "scenarios": {}}
    for scenario in spec["scenarios"]:
        result["scenarios"][scenario["name"]] = run_scenario(spec, scenario, out / scenario["name"])
    (out / "trl.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
