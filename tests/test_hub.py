"""Publishing through the real `huggingface_hub` client against a small Hub on 127.0.0.1
(tests/hub_server.py): model, tokenizer and dataset pushes with generated cards, read back with
`from_pretrained`, `load_dataset` and lm-eval; Trainer's own push_to_hub; a planted token that
must appear nowhere; bad input.

The Hub client reads HF_ENDPOINT, HF_HUB_DISABLE_XET and HF_HUB_OFFLINE when it is imported, and
the suite runs offline, so everything that talks to the server runs in a subprocess with those set
(as a user's shell would have them); the server and the checks run here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hub_server import HubServer  # tests/ is on sys.path under pytest

from hfllm.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
TOKEN = "hf_plantedTestToken" + hashlib.sha256(b"hfllm hub test").hexdigest()[:20]
USER = "hfllm-tester"
OUTPUTS: list[str] = []  # every subprocess's stdout and stderr, for the token check


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory) -> Path:
    """A real run, small: data (Python's help pages), tokenizer, a few pretraining steps, evaluation."""
    from hfllm.pipeline import run_pipeline

    base = tmp_path_factory.mktemp("mini")
    configs = {
        "data.yaml": {"corpus_sources": ["pydoc_topics"], "corpus_max_bytes_per_source": 200_000,
                      "test_fraction": 0.25},
        "tokenizer.yaml": {"vocab_size": 512},
        "pretrain.yaml": {"num_layers": 1, "hidden_size": 64, "num_heads": 2, "attn_implementation": "eager",
                          "max_length": 128, "per_device_train_batch_size": 8, "max_steps": 4, "learning_rate": 3e-3,
                          "eval_strategy": "no", "save_strategy": "no", "logging_steps": 1, "seed": 0},
        # lm-eval's own bits per byte is computed below, through the Hub, and compared with the stage's.
        "evaluation.yaml": {"max_eval_docs": 1, "per_device_eval_batch_size": 8, "bigram_baseline": False,
                            "lm_eval_check": False},
        "pipeline.yaml": {"name": "mini", "stages": [{"stage": s, "config": f"{c}.yaml"} for s, c in
                          (("data", "data"), ("tokenizer", "tokenizer"), ("pretrain", "pretrain"),
                           ("eval", "evaluation"))]},
    }
    for name, content in configs.items():
        (base / name).write_text(yaml.safe_dump(content))
    run_dir = base / "runs" / "mini"
    status = run_pipeline(base / "pipeline.yaml", run_dir=run_dir, log=lambda m: None)
    assert set(status.values()) == {"ran"}
    # What the evaluation (issue 13) and task-evaluation (issue 12) entries write, in their formats:
    # {model entry: {task: {metric: value, "stderr": …}}} and {model entry: {"accuracy", "ci_low", "ci_high", "n"}}.
    (run_dir / "eval" / "stages.json").write_text(json.dumps(
        {"pretrain": {"hfllm_mmlu": {"accuracy": 0.3125, "stderr": 0.041, "n": 150, "truncated_items": 22},
                      "hellaswag": {"acc": 0.29, "acc_stderr": 0.012, "acc_norm": 0.31, "stderr": 0.012}}}))
    (run_dir / "task_eval").mkdir()
    (run_dir / "task_eval" / "scores.json").write_text(json.dumps(
        {"pretrain": {"accuracy": 0.04, "ci_low": 0.02, "ci_high": 0.065, "n": 300}}))
    return run_dir


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubServer(tmp_path_factory.mktemp("hub_store"), tokens={TOKEN: USER}) as server:
        yield server


@pytest.fixture(scope="module")
def hub_env(hub, tmp_path_factory) -> dict[str, str]:
    """A shell pointed at the local Hub: its endpoint, no Xet, online, the token in HF_TOKEN, and
    a cache of its own so every download really goes through the server."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN",
                        "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_TOKEN=TOKEN,
               HF_HOME=str(tmp_path_factory.mktemp("hf_home")), PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false",
               HF_HUB_DISABLE_TELEMETRY="1")
    return env


def run(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, env=env, cwd=cwd or REPO, capture_output=True, text=True, timeout=900)
    OUTPUTS.extend([proc.stdout, proc.stderr])
    assert proc.returncode == 0, f"{args[:4]} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run([sys.executable, "-c", textwrap.dedent(code)], env)


# --- the card, without the network ----------------------------------------------------------------------

def test_model_card_from_the_manifest_and_the_runs_evaluations(mini_run):
    from huggingface_hub import ModelCard

    from hfllm.hub import build_card

    card, _, _ = build_card(mini_run / "pretrain", f"{USER}/mini", revision="pretrain")
    card = ModelCard(str(card))  # what the Hub will parse back
    results = json.loads((mini_run / "eval" / "results.json").read_text())
    got = {(r.dataset_type, r.metric_type): r for r in card.data.eval_results}
    heldout = next(r for (_, metric), r in got.items() if metric == "bits_per_byte")
    assert heldout.metric_value == pytest.approx(results["bits_per_byte"]) and heldout.dataset_split == "test"
    perplexity = next(r for (_, metric), r in got.items() if metric == "perplexity")
    assert perplexity.metric_value == pytest.approx(results["perplexity"])
    assert got[("hfllm_mmlu", "accuracy")].metric_value == 0.3125
    assert (got[("hellaswag", "acc")].metric_value, got[("hellaswag", "acc_norm")].metric_value) == (0.29, 0.31)
    assert not {m for _, m in got} & {"n", "truncated_items", "stderr", "ci_low", "ci_high"}  # counts, not metrics
    assert got[("hfllm-tasks", "accuracy")].metric_value == 0.04
    meta = card.data.to_dict()
    assert meta["model-index"][0]["name"] == "mini"
    assert meta["license"] == "other" and meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-generation" and "base_model" not in meta  # trained from scratch
    text = card.text
    assert "± 0.041 (stderr)" in text and "[0.02, 0.065] (95 % bootstrap)" in text
    pretrain = json.loads((mini_run / "pretrain" / "manifest.json").read_text())
    data = json.loads((mini_run / "data" / "manifest.json").read_text())
    assert f"max_steps: {pretrain['config']['max_steps']}" in text
    assert data["fingerprint"] in text and pretrain["fingerprint"] in text
    assert text.index("**data**") < text.index("**tokenizer**") < text.index("**pretrain** (this repository)")
    assert "## Intended use" in text and "## Limitations" in text
    for key, n in data["metrics"]["removed"].items():  # the loader's own cleaning counts
        assert f"| {key} | {n:,} |" in text


def test_cleaning_report_of_the_data_stage_goes_into_the_card(mini_run, tmp_path):
    """The data-curation stage writes report.json (per block: in, kept, removed by reason, modified)."""
    from hfllm.hub import build_card

    run_dir = tmp_path / "mini"
    shutil.copytree(mini_run, run_dir)  # a copied run: its manifests name the old paths
    (run_dir / "data" / "report.json").write_text(json.dumps({"blocks": [
        {"block": "language", "in": 120, "kept": 101, "removed": {"not_english": 19}, "modified": 0},
        {"block": "pii", "in": 101, "kept": 101, "removed": {}, "modified": 7},
    ]}))
    _, _, text = build_card(run_dir / "pretrain", f"{USER}/mini")
    assert "| language | 120 | 101 | not_english: 19 | 0 |" in text
    assert "| pii | 101 | 101 |  | 7 |" in text
    assert "**data**" in text  # the lineage was found beside the copied stage


# --- pushes through the local Hub -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pushed_model(mini_run, hub, hub_env) -> dict:
    """`python -m hfllm.hub push` (the `hfllm push` command) of the pretrained model to a branch."""
    proc = run([sys.executable, "-m", "hfllm.hub", "push", str(mini_run / "pretrain"), "--repo_id",
                f"{USER}/mini-lm", "--revision", "pretrain"], hub_env)
    assert "pushed model" in proc.stdout and "(private)" in proc.stdout
    return json.loads((mini_run / "pretrain" / "pushed.json").read_text())[-1]


def test_push_then_from_pretrained_gives_the_same_files_and_logits(mini_run, hub, hub_env, pushed_model, tmp_path):
    stage = mini_run / "pretrain"
    repo = hub.repos[("model", f"{USER}/mini-lm")]
    assert repo.private and set(repo.branches) == {"main", "pretrain"}
    assert "config.json" not in repo.resolve("main").files  # the stage went to its branch only
    pushed = repo.resolve("pretrain").files
    assert pushed_model["commit"] == repo.branches["pretrain"]
    assert {"model.safetensors", "config.json", "tokenizer.json", "manifest.json", "README.md"} <= set(pushed)
    assert not any(p.startswith("checkpoint-") or p in ("training_args.bin", ".stage_fingerprint") for p in pushed)
    assert pushed["model.safetensors"].lfs and not pushed["config.json"].lfs

    out = tmp_path / "loaded.json"
    run_python(f"""
        import hashlib, json, torch
        from pathlib import Path
        from huggingface_hub import snapshot_download
        from transformers import AutoModelForCausalLM, AutoTokenizer
        repo = "{USER}/mini-lm"
        hub_model = AutoModelForCausalLM.from_pretrained(repo, revision="pretrain")
        tok = AutoTokenizer.from_pretrained(repo, revision="pretrain")
        local = AutoModelForCausalLM.from_pretrained("{stage}")
        ids = tok("def f(x):\\n    return x + 1  # the same input for both", return_tensors="pt").input_ids
        with torch.no_grad():
            a, b = hub_model(ids).logits, local(ids).logits
        snap = Path(snapshot_download(repo, revision="pretrain"))
        files = {{p.relative_to(snap).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in snap.rglob("*") if p.is_file()}}
        Path("{out}").write_text(json.dumps({{"equal": bool(torch.equal(a, b)), "n": a.numel(), "files": files,
                                             "ids": ids.tolist(), "local_ids": tok("x").input_ids}}))
    """, hub_env)
    loaded = json.loads(out.read_text())
    assert loaded["equal"] and loaded["n"] > 0
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "manifest.json"):
        assert loaded["files"][name] == sha256(stage / name), name
        assert hashlib.sha256(hub.file_bytes("model", f"{USER}/mini-lm", "pretrain", name)).hexdigest() == \
            sha256(stage / name)


def test_a_private_repo_is_invisible_without_the_token(hub, pushed_model):
    import urllib.error
    import urllib.request

    for url in (f"{hub.url}/{USER}/mini-lm/resolve/pretrain/config.json", f"{hub.url}/api/models/{USER}/mini-lm"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url)
        assert err.value.code == 401 and err.value.headers["X-Error-Code"] == "RepoNotFound"


def test_the_pushed_card_round_trips_with_its_eval_results(hub, hub_env, pushed_model, mini_run, tmp_path):
    out = tmp_path / "card.json"
    run_python(f"""
        import json
        from pathlib import Path
        from huggingface_hub import ModelCard, hf_hub_download, model_info
        card = ModelCard.load(hf_hub_download("{USER}/mini-lm", "README.md", revision="pretrain"))
        info = model_info("{USER}/mini-lm", revision="pretrain")
        Path("{out}").write_text(json.dumps({{
            "results": [[r.metric_type, r.metric_value] for r in card.data.eval_results],
            "private": info.private, "sha": info.sha}}))
    """, hub_env)
    got = json.loads(out.read_text())
    results = json.loads((mini_run / "eval" / "results.json").read_text())
    assert ["bits_per_byte", pytest.approx(results["bits_per_byte"])] in got["results"]
    assert got["private"] is True and got["sha"] == pushed_model["commit"]


def test_lm_eval_reads_the_model_from_the_hub(mini_run, hub, hub_env, pushed_model, tmp_path):
    """`lm_eval --model hf --model_args pretrained=<repo>` through the local Hub gives the bits per
    byte that the evaluation stage computed for the local directory on the same text."""
    tasks = mini_run / "tasks"  # the evaluation stage's copy of the task, pointing at its held-out text
    out = tmp_path / "lm_eval_out"
    run([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
         f"pretrained={USER}/mini-lm,revision=pretrain,dtype=float32", "--include_path", str(tasks),
         "--tasks", "hfllm_heldout_bpb", "--batch_size", "8", "--output_path", str(out)], hub_env)
    result_file = next(out.rglob("results_*.json"))
    got = json.loads(result_file.read_text())
    bpb = got["results"]["hfllm_heldout_bpb"]["bits_per_byte,none"]
    expected = json.loads((mini_run / "eval" / "results.json").read_text())["bits_per_byte"]
    assert bpb == pytest.approx(expected, rel=1e-6)
    assert got["config"]["model_sha"] == pushed_model["commit"]  # lm-eval asked the Hub which commit it read


@pytest.fixture(scope="module")
def pushed_tokenizer_and_data(mini_run, hub, hub_env, tmp_path_factory) -> None:
    """The library call (`push_stage`) for the tokenizer and the data stage, with the token taken
    from the login cache (what `hf auth login` leaves in HF_HOME) instead of HF_TOKEN."""
    env = dict(hub_env)
    del env["HF_TOKEN"]
    login_home = tmp_path_factory.mktemp("login_home")
    (login_home / "token").write_text(TOKEN)
    env["HF_HOME"] = str(login_home)
    run_python(f"""
        from hfllm.hub import push_stage
        print(push_stage("{mini_run / 'tokenizer'}", "{USER}/mini-tokenizer"))
        print(push_stage("{mini_run / 'data'}", "{USER}/mini-data", revision="v1"))
    """, env)


def test_tokenizer_and_dataset_push_and_load_back(mini_run, hub, hub_env, pushed_tokenizer_and_data, tmp_path):
    """AutoTokenizer and load_dataset read back, through the Hub, what the stages wrote."""
    assert hub.repos[("model", f"{USER}/mini-tokenizer")].private
    data_repo = hub.repos[("dataset", f"{USER}/mini-data")]
    assert data_repo.private and "manifest.json" in data_repo.resolve("v1").files

    out = tmp_path / "back.json"
    run_python(f"""
        import json
        from pathlib import Path
        from datasets import load_dataset
        from huggingface_hub import DatasetCard, hf_hub_download
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained("{USER}/mini-tokenizer")
        ds = load_dataset("{USER}/mini-data", revision="v1")
        card = DatasetCard.load(hf_hub_download("{USER}/mini-data", "README.md", repo_type="dataset", revision="v1"))
        Path("{out}").write_text(json.dumps({{
            "ids": tok("Return the absolute value of a number.").input_ids,
            "chat_template": tok.chat_template,
            "splits": {{s: list(ds[s]["text"]) for s in ds}},
            "card_license": card.data.license, "card_has_configs": bool(card.data.to_dict().get("configs")),
            "card_text": card.text}}))
    """, hub_env)
    back = json.loads(out.read_text())
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    local_tok = AutoTokenizer.from_pretrained(mini_run / "tokenizer")
    assert back["ids"] == local_tok("Return the absolute value of a number.").input_ids
    assert back["chat_template"] == local_tok.chat_template
    local = load_from_disk(str(mini_run / "data"))
    assert back["splits"] == {s: list(local[s]["text"]) for s in local}
    assert back["card_license"] == "other" and back["card_has_configs"]  # datasets' own metadata kept
    assert "Data lineage" in back["card_text"] and "embedded offline corpus" in back["card_text"]


def test_trainer_push_to_hub_then_hfllm_push_adds_manifest_and_card(mini_run, hub, hub_env, tmp_path):
    """A recipe with TrainingArguments' own --push_to_hub --hub_model_id --hub_strategy
    --hub_private_repo pushes through the same client; the manifest is written after the Trainer's
    last push, so `hfllm push` to the same repo adds it and replaces the Trainer's card."""
    out_dir = tmp_path / "pretrain_pushed"
    run([sys.executable, "recipes/pretrain.py", "--config", str(mini_run.parent.parent / "pretrain.yaml"),
         "--dataset_name", str(mini_run / "data"), "--tokenizer_name", str(mini_run / "tokenizer"),
         "--output_dir", str(out_dir), "--max_steps", "2", "--push_to_hub", "true",
         "--hub_model_id", f"{USER}/trainer-pushed", "--hub_strategy", "end", "--hub_private_repo", "true"], hub_env)
    repo = hub.repos[("model", f"{USER}/trainer-pushed")]
    files = repo.resolve("main").files
    assert repo.private and "model.safetensors" in files and "tokenizer.json" in files
    assert "training_args.bin" in files  # the Trainer pushes its pickled arguments; hfllm push does not
    assert "manifest.json" not in files and (out_dir / "manifest.json").exists()
    assert files["model.safetensors"].sha256 == sha256(out_dir / "model.safetensors")
    trainer_card = hub.file_bytes("model", f"{USER}/trainer-pushed", "main", "README.md").decode()

    run([sys.executable, "-m", "hfllm.hub", "push", str(out_dir), "--repo_id", f"{USER}/trainer-pushed"], hub_env)
    files = repo.resolve("main").files
    assert files["manifest.json"].sha256 == sha256(out_dir / "manifest.json")
    card = hub.file_bytes("model", f"{USER}/trainer-pushed", "main", "README.md").decode()
    assert card != trainer_card and "## Data lineage" in card and "hfllm" in card
    assert files["model.safetensors"].sha256 == sha256(out_dir / "model.safetensors")


def test_cards_name_what_earlier_pushes_put_on_the_hub(mini_run, pushed_model, pushed_tokenizer_and_data, tmp_path):
    """Once the data stage and the model are on the Hub (their pushed.json), the model's card lists the
    dataset and a stage trained from the model names it as base model."""
    from hfllm.hub import build_card

    _, data, _ = build_card(mini_run / "pretrain", f"{USER}/mini-lm")
    assert data.datasets == [f"{USER}/mini-data"] and data.base_model is None
    assert {r.dataset_type for r in data.eval_results if r.metric_type == "bits_per_byte"} == {f"{USER}/mini-data"}
    # A later stage in the runner's manifest format (the SFT stage is another issue's): its model
    # input is this run's pretrain entry.
    sft = mini_run / "sft"
    shutil.copytree(mini_run / "pretrain", sft, ignore=shutil.ignore_patterns("pushed.json", "manifest.json"))
    pretrain = json.loads((mini_run / "pretrain" / "manifest.json").read_text())
    manifest = {**pretrain, "stage": "sft", "fingerprint": "0123456789abcdef",
                "config": {"model_name_or_path": str(mini_run / "pretrain"), "output_dir": str(sft)},
                "inputs": {"model_name_or_path": {"path": str(mini_run / "pretrain"),
                                                  "fingerprint": pretrain["fingerprint"]}}}
    (sft / "manifest.json").write_text(json.dumps(manifest))
    try:
        card, data, text = build_card(sft, f"{USER}/mini-sft")
        assert data.base_model == f"{USER}/mini-lm"
        assert f"fine-tuned from `{USER}/mini-lm`" in text
        assert text.index("**data**") < text.index("**pretrain**") < text.index("**sft** (this repository)")
        assert f"on the Hub as `{USER}/mini-lm`" in text and f"on the Hub as `{USER}/mini-data`" in text
        assert not data.eval_results  # the run's evaluations are of pretrain, not of this stage
    finally:
        shutil.rmtree(sft)


# --- bad input: one ConfigError naming the directory or field ------------------------------------------

def test_stage_dirs_without_weights_or_tokenizer_are_refused(mini_run, tmp_path, monkeypatch):
    from hfllm.hub import push_stage

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    no_weights = tmp_path / "no_weights"
    shutil.copytree(mini_run / "pretrain", no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="without weights") as err:
        push_stage(no_weights, f"{USER}/x")
    assert err.value.where == str(no_weights)

    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(mini_run / "pretrain", no_tokenizer)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (no_tokenizer / name).unlink()
    with pytest.raises(ConfigError, match="without a tokenizer"):
        push_stage(no_tokenizer, f"{USER}/x")
    with pytest.raises(ConfigError, match="not a stage directory with weights, a tokenizer or a dataset"):
        push_stage(mini_run / "eval", f"{USER}/x")
    with pytest.raises(ConfigError, match="no such stage directory"):
        push_stage(tmp_path / "missing", f"{USER}/x")


@pytest.mark.parametrize("repo_id", ["no spaces allowed/x", "a/b/c", "x--y/..z", ""])
def test_invalid_repo_ids_are_refused(mini_run, repo_id, monkeypatch):
    from hfllm.hub import push_stage

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(ConfigError) as err:
        push_stage(mini_run / "tokenizer", repo_id)
    assert err.value.field == "repo_id" and "not a valid Hub repo id" in err.value.message


def test_a_push_without_a_token_is_refused(mini_run, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    from hfllm.hub import hub_token, main

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    cache = tmp_path / "login_cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(cache / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(cache / "stored_tokens"))
    with pytest.raises(SystemExit) as exit_:
        main(["push", str(mini_run / "tokenizer"), "--repo_id", f"{USER}/x"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hfllm: error: {mini_run / 'tokenizer'}: field 'token': no Hugging")
    (cache / "token").write_text(TOKEN)  # a login cache is enough
    assert hub_token("x") == TOKEN


def test_a_push_to_a_namespace_the_token_cannot_write_is_one_error_line(mini_run, hub, hub_env):
    args = [sys.executable, "-m", "hfllm.hub", "push", str(mini_run / "tokenizer"), "--repo_id",
            "someone-else/tokenizer"]
    proc = subprocess.run(args, env=hub_env, cwd=REPO, capture_output=True, text=True, timeout=600)
    OUTPUTS.extend([proc.stdout, proc.stderr])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"hfllm: error: {mini_run / 'tokenizer'}: field 'repo_id': no write access to someone-else/tokenizer (403")
    assert "Traceback" not in proc.stderr and ("model", "someone-else/tokenizer") not in hub.repos


def test_a_push_while_offline_is_one_error(mini_run, monkeypatch):
    """The suite itself runs with HF_HUB_OFFLINE=1 (conftest), as a user might have it set."""
    from huggingface_hub import constants

    from hfllm.hub import push_stage

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError) as err:
        push_stage(mini_run / "tokenizer", f"{USER}/offline")
    assert err.value.field == "HF_HUB_OFFLINE"


def test_a_file_holding_the_token_is_never_uploaded(mini_run, hub, tmp_path, monkeypatch):
    from hfllm.hub import push_stage

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    leaky = tmp_path / "leaky"
    shutil.copytree(mini_run / "tokenizer", leaky)
    (leaky / "notes.txt").write_text(f"pushed with {TOKEN}")
    before = len(hub.requests)
    with pytest.raises(ConfigError, match="notes.txt contains the Hub token; nothing was pushed"):
        push_stage(leaky, f"{USER}/leaky")
    assert len(hub.requests) == before
    (leaky / "notes.txt").unlink()  # the token check must not find the token it just read


# --- last: nothing above leaked the token ----------------------------------------------------------------

def test_the_planted_token_appears_in_no_file_and_no_output(mini_run, hub, tmp_path_factory, capfd):
    """Run last in this module: every file the tests wrote (runs, manifests, cards, reports, caches,
    the Hub's stored blobs) and all captured output. The login cache is the one place it may be."""
    assert OUTPUTS, "the push tests ran no subprocess"
    needle = TOKEN.encode()
    base = tmp_path_factory.getbasetemp()
    checked = 0
    for path in base.rglob("*"):
        if path.is_file() and not path.is_symlink():
            if path.name == "token" and path.parent.name.startswith(("login_home", "login_cache")):
                continue
            assert needle not in path.read_bytes(), f"the token leaked into {path}"
            checked += 1
    assert checked > 50
    assert all(TOKEN not in text for text in OUTPUTS)
    captured = capfd.readouterr()
    assert TOKEN not in captured.out and TOKEN not in captured.err
    assert any(user == USER for _, _, user in hub.requests)  # the token was used, just never written
