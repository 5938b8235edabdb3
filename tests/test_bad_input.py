"""Bad input, as a new user feeds it, to every recipe and stage: malformed YAML, an unknown key, a wrong
type, a missing or mis-shaped dataset, an empty file, a JSONL file broken at one row, a text file with
bytes that are not UTF-8, truncated, zero-byte or pickled weights, a tokenizer that does not match the
model or yields no tokens. Each is one `hfllm: error:` line naming the file, field or row, exit status
2, and nothing an earlier run wrote is changed (the run directory is hashed before and after) — except
rows the data stage quarantines by design, which it counts.

Cases are (stage, what is wrong, config change, what the line must say); a stage joins with its entry
in `STAGES` and the cases it accepts."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REPO

# ------------------------------------------------------------------------------------ the inputs


def write_inputs(folder: Path, tiny_run: Path) -> dict[str, Path]:
    """Bad files and model directories, from the tiny run's real text and model."""
    import datasets
    from tokenizers import Regex, Tokenizer, models, normalizers
    from transformers import PreTrainedTokenizerFast

    texts = datasets.load_from_disk(str(tiny_run / "data"))["train"]["text"][:40]
    f: dict[str, Path] = {}
    f["empty"] = folder / "empty.jsonl"
    f["empty"].write_text("")
    rows = [json.dumps({"text": t, "prompt": t[:60]}) for t in texts]
    f["broken_jsonl"] = folder / "broken.jsonl"
    f["broken_jsonl"].write_text("\n".join(rows[:3] + ['{"text": "cut in the midd'] + rows[3:]) + "\n")
    f["wrong_column"] = folder / "wrong_column.jsonl"
    f["wrong_column"].write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    lines = [" ".join(t.split())[:200] for t in texts]
    f["not_utf8"] = folder / "latin1.txt"
    f["not_utf8"].write_bytes(("\n".join(lines[:5]) + "\n").encode() + "café au lait\n".encode("latin-1")
                              + ("\n".join(lines[5:]) + "\n").encode())
    # The chat stages read JSON rows, not text files: the same Latin-1 bytes inside line 6 of a JSONL file.
    f["not_utf8_jsonl"] = folder / "latin1.jsonl"
    f["not_utf8_jsonl"].write_bytes("".join(r + "\n" for r in rows[:5]).encode()
                                    + '{"text": "café au lait"}\n'.encode("latin-1")
                                    + "".join(r + "\n" for r in rows[5:]).encode())
    f["missing"] = folder / "nowhere" / "data.jsonl"
    f["mixed_folder"] = folder / "mixed"  # good JSONL rows beside the text file that is not UTF-8
    f["mixed_folder"].mkdir()
    (f["mixed_folder"] / "good.jsonl").write_text("\n".join(rows) + "\n")
    shutil.copy(f["not_utf8"], f["mixed_folder"] / "latin1.txt")

    model = tiny_run / "pretrain"
    weights = [p.name for p in model.iterdir() if p.is_file()]
    for name, harm in (("zero_byte_weights", lambda p: p.write_bytes(b"")),
                       ("truncated_weights", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]))):
        f[name] = folder / name
        f[name].mkdir()
        for w in weights:
            shutil.copy(model / w, f[name] / w)
        harm(f[name] / "model.safetensors")
    f["pickle_weights"] = folder / "pickle_weights"
    shutil.copytree(model, f["pickle_weights"], ignore=shutil.ignore_patterns("checkpoint-*", "*.safetensors"))
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(str(model / "model.safetensors")), f["pickle_weights"] / "pytorch_model.bin")

    from transformers import AutoTokenizer

    f["bigger_tokenizer"] = folder / "bigger_tokenizer"  # the tiny tokenizer and 3,000 more tokens
    bigger = AutoTokenizer.from_pretrained(tiny_run / "tokenizer")
    bigger.add_tokens([f"extra_token_{i}" for i in range(3000)])
    bigger.save_pretrained(f["bigger_tokenizer"])
    # A tokenizer whose normalizer removes every character: every document becomes no tokens at all.
    words = Tokenizer(models.WordLevel({"<|begin_of_text|>": 0, "<|end_of_text|>": 1, "<|pad|>": 2, "<unk>": 3},
                                       unk_token="<unk>"))
    words.normalizer = normalizers.Replace(Regex(r"[\s\S]"), "")
    f["no_tokens_tokenizer"] = folder / "no_tokens_tokenizer"
    PreTrainedTokenizerFast(tokenizer_object=words, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                            pad_token="<|pad|>").save_pretrained(f["no_tokens_tokenizer"])
    return f


# ------------------------------------------------------------------------------------ the stages


def base_configs(run: Path, ppo: dict[str, Path], pairs: Path) -> dict[str, dict]:
    small_chat = dict(model_name_or_path=str(run / "pretrain"), max_steps=1, per_device_train_batch_size=2,
                      max_length=64, save_steps=100, bf16=False, use_cpu=True, report_to="none")
    small_pretrain = dict(num_layers=1, hidden_size=32, num_heads=2, max_length=32, per_device_train_batch_size=2,
                          max_steps=2, save_steps=100, precision="fp32", report_to="none")
    return {
        "data": dict(dataset_name=str(run / "data"), output_dir=str(run / "data"), num_proc=1),
        "tokenizer": dict(dataset_name=str(run / "data"), vocab_size=300, output_dir=str(run / "tokenizer")),
        "pretrain": dict(dataset_name=str(run / "data"), tokenizer_name=str(run / "tokenizer"),
                         output_dir=str(run / "pretrain"), **small_pretrain),
        "eval": dict(model_name_or_path=str(run / "pretrain"), dataset_name=str(run / "data"), max_eval_docs=2,
                     bigram_baseline=False, lm_eval_check=False, output_dir=str(run / "eval")),
        "ppo": dict(dataset_name=str(ppo["prompts"]), sft_model_path=str(ppo["policy"]),
                    model_name_or_path=str(ppo["policy"]), reward_model_path=str(ppo["reward"]),
                    output_dir=str(run / "ppo"), per_device_train_batch_size=2, num_mini_batches=1,
                    total_episodes=2, response_length=4, bf16=False, use_cpu=True, report_to="none"),
        "sft": dict(dataset_name=str(ppo["prompts"]), output_dir=str(run / "sft"), **small_chat),
        "reward": dict(dataset_name=str(pairs), output_dir=str(run / "reward"), **small_chat),
        "dpo": dict(dataset_name=str(pairs), output_dir=str(run / "dpo"), **small_chat),
        "grpo": dict(dataset_name=str(ppo["prompts"]), model_name_or_path=str(ppo["policy"]),
                     reward_model_path=str(ppo["reward"]), output_dir=str(run / "grpo"), max_steps=1,
                     per_device_train_batch_size=2, num_generations=2, max_completion_length=4, bf16=False,
                     use_cpu=True, report_to="none"),
    }


STAGES = {  # stage: recipe
    "data": "data.py", "tokenizer": "tokenizer.py", "pretrain": "pretrain.py", "eval": "evaluation.py",
    "ppo": "ppo.py", "sft": "sft.py", "reward": "reward.py", "dpo": "dpo.py", "grpo": "grpo.py",
}
WRONG_TYPE = {"data": ("test_fraction", "lots"), "tokenizer": ("vocab_size", "big"), "pretrain": ("max_steps", [3]),
              "eval": ("max_eval_docs", "all"), "ppo": ("learning_rate", "fast"), "sft": ("max_steps", "many"),
              "reward": ("learning_rate", "fast"), "dpo": ("beta", "strong"), "grpo": ("num_generations", "two")}
DATASET_FIELD = dict.fromkeys(STAGES, "dataset_name")
MODEL_FIELD = {"pretrain": "model_name_or_path", "eval": "model_name_or_path", "ppo": "sft_model_path",
               "sft": "model_name_or_path", "reward": "model_name_or_path", "dpo": "model_name_or_path",
               "grpo": "model_name_or_path"}
# The column a stage names when a dataset has none of its columns.
COLUMN = {"ppo": "prompt", "sft": "messages", "reward": "chosen", "dpo": "chosen", "grpo": "prompt"}
CHAT_STAGES = ("sft", "reward", "dpo", "grpo")  # they read JSON rows: no text files

# What a stage reads from a single file: which of its fields' splits to point at the file's one split.
ONE_FILE = {"tokenizer": {"dataset_test_split": "train"}, "eval": {"dataset_test_split": "train"}}


def cases():
    """(stage, case, how to break the config, what the one line must contain)."""
    out = []
    for stage in STAGES:
        field_name, bad = WRONG_TYPE[stage]
        out += [
            (stage, "malformed_yaml", "YAML", ["invalid YAML", f"{stage}_malformed_yaml.yaml:3"]),
            (stage, "unknown_key", {"learning_rat": 0.1}, ["field 'learning_rat': unknown key"]),
            (stage, "wrong_type", {field_name: bad}, [f"field '{field_name}'", "expected"]),
            (stage, "missing_dataset", {DATASET_FIELD[stage]: "@missing"}, ["nowhere/data.jsonl", "not found"]),
        ]
        if stage != "data":  # the data stage quarantines bad rows: see the tests below
            one_file = ONE_FILE.get(stage, {})
            not_utf8 = (({DATASET_FIELD[stage]: "@not_utf8_jsonl"}, "latin1.jsonl") if stage in CHAT_STAGES else
                        ({DATASET_FIELD[stage]: "@not_utf8", **({"dataset_text_field": "text"} if stage != "ppo"
                                                                else {})}, "latin1.txt"))
            out += [
                (stage, "mis_shaped_dataset", {DATASET_FIELD[stage]: "@wrong_column", **one_file},
                 ["wrong_column.jsonl", COLUMN.get(stage, "text")]),
                (stage, "empty_file", {DATASET_FIELD[stage]: "@empty", **one_file}, ["empty.jsonl"]),
                (stage, "broken_jsonl_row", {DATASET_FIELD[stage]: "@broken_jsonl", **one_file},
                 ["broken.jsonl", "line 4"]),
                (stage, "not_utf8_row", {**not_utf8[0], **one_file}, [not_utf8[1], "line 6", "UTF-8"]),
            ]
        else:
            out += [(stage, "mis_shaped_dataset", {"dataset_name": "@wrong_column"}, ["wrong_column.jsonl", "text"]),
                    (stage, "empty_file", {"dataset_name": "@empty"}, ["empty.jsonl", "no usable documents"])]
        if stage in MODEL_FIELD:
            model_field = MODEL_FIELD[stage]
            out += [
                (stage, "zero_byte_weights", {model_field: "@zero_byte_weights"},
                 [f"field '{model_field}'", "zero_byte_weights", "model.safetensors"]),
                (stage, "truncated_weights", {model_field: "@truncated_weights"},
                 [f"field '{model_field}'", "truncated_weights", "model.safetensors"]),
                (stage, "pickle_weights", {model_field: "@pickle_weights"},
                 [f"field '{model_field}'", "pytorch_model.bin", "safetensors"]),
            ]
    out += [
        # continuing from the run's model into a new directory (its own output_dir would be set aside first)
        ("pretrain", "tokenizer_bigger_than_model", {"model_name_or_path": "@run/pretrain",
                                                     "tokenizer_name": "@bigger_tokenizer",
                                                     "output_dir": "@run/pretrain_more"},
         ["field 'tokenizer_name'", "5048 tokens", "vocab_size 2048"]),
        ("pretrain", "tokenizer_yields_no_tokens", {"tokenizer_name": "@no_tokens_tokenizer"},
         ["field 'tokenizer_name'", "no tokens"]),
        ("ppo", "reward_model_of_another_tokenizer", {"reward_model_path": "@run/pretrain"},
         ["field 'reward_model_path'", "not a reward model"]),
        ("eval", "tokenizer_yields_no_tokens", {"model_name_or_path": "@no_tokens_model"},
         ["field 'model_name_or_path'", "no tokens"]),
        *[(stage, "tokenizer_bigger_than_model", {"tokenizer_name": "@bigger_tokenizer"},
           ["field 'tokenizer_name'", "5048", "2048"]) for stage in ("sft", "reward", "dpo")],
        ("grpo", "reward_model_of_another_tokenizer", {"reward_model_path": "@run/pretrain"},
         ["field 'reward_model_path'"]),
    ]
    return out


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name[:-3]}", REPO / "recipes" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tiny_run, tmp_path_factory):
    """A copy of the tiny run (what an earlier run wrote), the bad inputs, and PPO's models."""
    import datasets
    import ppo_models

    root = tmp_path_factory.mktemp("bad_input")
    run = root / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoint-*"))
    shutil.copytree(run, root / "pristine")  # put back after a case that damaged it, so one failure stays one
    files = write_inputs(root, tiny_run)
    ppo = ppo_models.save_models(root / "ppo_models", ppo_models.tokenizer())
    ppo["prompts"] = ppo_models.prompt_dataset(root / "prompts")
    pairs = root / "pairs"  # preference pairs for the reward model and DPO: real sentences, two replies each
    questions = ppo_models.sentences(12)
    datasets.Dataset.from_dict({
        "prompt": [[{"role": "user", "content": q}] for q in questions],
        "chosen": [[{"role": "assistant", "content": a}] for a in questions[1:] + questions[:1]],
        "rejected": [[{"role": "assistant", "content": "I do not know."}] for _ in questions],
    }).save_to_disk(str(pairs))
    files["no_tokens_model"] = root / "no_tokens_model"  # the tiny model beside the no-tokens tokenizer
    shutil.copytree(tiny_run / "pretrain", files["no_tokens_model"],
                    ignore=shutil.ignore_patterns("checkpoint-*", "tokenizer*", "chat_template*"))
    for p in files["no_tokens_tokenizer"].iterdir():
        shutil.copy(p, files["no_tokens_model"] / p.name)
    return root, run, files, base_configs(run, ppo, pairs)


def resolve(value, run: Path, files: dict[str, Path]):
    if isinstance(value, str) and value.startswith("@run/"):
        return str(run / value[5:])
    if isinstance(value, str) and value.startswith("@"):
        return str(files[value[1:]])
    return value


def run_recipe(stage: str, config: Path, capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        load_recipe(STAGES[stage]).cli(["--config", str(config)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hfllm:")]
    return exit_.value.code, lines


@pytest.mark.parametrize("stage,case,change,expected", cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_bad_input_is_one_line_exit_2_and_damages_nothing(world, stage, case, change, expected, capsys):
    root, run, files, bases = world
    config = root / f"{stage}_{case}.yaml"
    if change == "YAML":
        config.write_text(f"output_dir: {bases[stage]['output_dir']}\ndataset_name: [unclosed\n")
    else:
        settings = {**bases[stage], **{k: resolve(v, run, files) for k, v in change.items()}}
        config.write_text(yaml.safe_dump(settings))
    before = tree_hashes(run)
    try:
        code, lines = run_recipe(stage, config, capsys)
        assert code == 2 and len(lines) == 1, lines
        assert lines[0].startswith("hfllm: error: ")
        for text in expected:
            assert text in lines[0], (text, lines[0])
        after = tree_hashes(run)
        assert {k: after.get(k) for k in before} == before, "an earlier run's file changed"
        # A stage refused before it ran may leave its own new, empty output directory (its start marker).
        out_dir = resolve(change["output_dir"], run, files) if "output_dir" in change else bases[stage]["output_dir"]
        own = Path(out_dir).relative_to(run).parts[0]
        assert [k for k in set(after) - set(before) if Path(k).parts[0] != own] == [], "files left elsewhere"
    finally:
        if tree_hashes(run) != before:
            shutil.rmtree(run)
            shutil.copytree(root / "pristine", run)


@pytest.mark.parametrize("case,reason,row", [("broken_jsonl", "malformed_json", 3), ("mixed_folder", "not_utf8", 0)])
def test_the_data_stage_quarantines_bad_rows_and_counts_them(world, case, reason, row, tmp_path, capsys):
    root, run, files, bases = world
    config = tmp_path / "data.yaml"
    config.write_text(yaml.safe_dump({**bases["data"], "dataset_name": str(files[case]),
                                      "output_dir": str(tmp_path / "data"), "test_fraction": 0.2,
                                      "blocks": ["extract"]}))
    load_recipe("data.py").cli(["--config", str(config)])  # runs to the end
    quarantined = [json.loads(line) for line in (tmp_path / "data" / "quarantine.jsonl").read_text().splitlines()]
    bad_file = files["not_utf8"].name if case == "mixed_folder" else files[case].name
    assert [(Path(q["file"]).name, q["reason"]) for q in quarantined] == [(bad_file, reason)]
    assert quarantined[0]["row"] == row  # the JSONL line; a text file is one document
    report = json.loads((tmp_path / "data" / "report.json").read_text())
    assert reason in json.dumps(report)
