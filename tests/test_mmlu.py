"""The MMLU-format task: generated items, task files, the three scorings through lm-eval, and the
trust checks (lm-eval's log-likelihoods equal hfllm's own scorer's; truncation counted; a model
fine-tuned on the answers scores ≥ 90 %)."""

import ast
import json
import random
import re
import subprocess
import sys
import sysconfig
from collections import Counter
from pathlib import Path

import pytest
import yaml
from tiny_lm import single_thread, tiny_llama, tokenizer_for, train_on_answers  # noqa: F401 (autouse fixture)

from hfllm.errors import ConfigError, DataError
from hfllm.evaluation.contamination import ngram_overlap
from hfllm.evaluation.harness import run_lm_eval
from hfllm.evaluation.loglikelihood import continuation_loglikelihood
from hfllm.evaluation.mmlu import (
    SCORINGS,
    load_mmlu_task,
    read_items,
    score_mmlu_three_ways,
    summarize,
    task_texts,
    write_mmlu_task,
)
from hfllm.evaluation.python_questions import (
    FACT_KINDS,
    SUBJECTS,
    _documents,
    lookup_facts,
    multiple_choice_items,
)

CORPUS_SOURCES = ("pydoc_topics", "stdlib_docstrings")


@pytest.fixture(scope="module")
def items():
    return multiple_choice_items(0)


@pytest.fixture(scope="module")
def corpus_text():
    """The corpus the items come from, whitespace-normalised, for plain substring checks."""
    return " ".join(" ".join(t.split()) for s in CORPUS_SOURCES for t in _documents(s))


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tasks")
    write_mmlu_task(directory, n_dev=5, n_test=30)
    return directory


@pytest.fixture(scope="module")
def tokenizer(task_dir):
    texts = [row["question"] + " " + " ".join(row["choices"])
             for s in SUBJECTS for split in ("dev", "test")
             for row in read_items(task_dir / "hfllm_mmlu" / "data" / f"{s}_{split}.jsonl")]
    return tokenizer_for(texts)


def test_items_are_seeded_well_formed_and_balanced(items):
    assert {s: len(v) >= n for (s, v), n in zip(items.items(), (80, 200, 1000))} == dict.fromkeys(SUBJECTS, True)
    again = multiple_choice_items(0, ["python_builtins"])["python_builtins"]
    assert again == items["python_builtins"]
    assert multiple_choice_items(1, ["python_builtins"])["python_builtins"] != again
    for subject, subject_items in items.items():
        for item in subject_items:
            assert item.subject == subject and len(item.choices) == 4 and 0 <= item.answer < 4
            assert len({c.lower() for c in item.choices}) == 4, item
        letters = Counter(item.answer for item in subject_items)
        assert all(0.15 < letters[k] / len(subject_items) < 0.35 for k in range(4)), (subject, letters)


def test_continuation_items_are_true_and_unambiguous_in_the_corpus(items, corpus_text):
    rng = random.Random(0)
    for subject in ("python_language_reference", "python_stdlib_docs"):
        for item in rng.sample(items[subject], 40):
            prefix = re.search(r'"(.*) …"', item.question).group(1)
            right = item.choices[item.answer]
            assert f"{prefix} {right}" in corpus_text, item
            for wrong in item.choices:
                if wrong != right:
                    assert f"{prefix} {wrong}" not in corpus_text, item
    # Builtins: the entry's signature is followed by its description in the reference.
    checked = 0
    for item in items["python_builtins"]:
        name = re.search(r"`(.*)\(\)`", item.question)
        if name:
            method = name.group(1).rsplit(".", 1)[-1]
            description = item.choices[item.answer].removesuffix(" …")
            assert re.search(re.escape(method) + r"\([^)]{0,80}\) " + re.escape(description), corpus_text), item
            checked += 1
    assert checked > 30


def test_no_item_shares_a_13_gram_with_the_corpus(items):
    """No 13-gram of any item is in the corpus (the data stage's decontamination keeps the documents
    the items test), yet most continuation items share an 8-gram with it (they ask about its text)."""
    corpus = {"corpus": [t for s in CORPUS_SOURCES for t in _documents(s)]}
    # Each item as task_texts gives it to decontamination, and as lm-eval's two prompts with the answer.
    rendered = {s: [f"{i.question} {i.choices[i.answer]}\n\nQuestion: {i.question}\nAnswer: {i.choices[i.answer]}\n\n"
                    + i.question + "".join(f"\n{'ABCD'[k]}. {c}" for k, c in enumerate(i.choices))
                    + f"\nAnswer: {'ABCD'[i.answer]}" for i in v] for s, v in items.items()}
    facts = lookup_facts(["builtin_name", "next_word"])
    rendered["lookup"] = [f"{f.question} {f.answer}" for f in facts]
    thirteen = {o.eval: o for o in ngram_overlap(corpus, rendered, n=13)}
    assert {name: o.contaminated_items for name, o in thirteen.items()} == dict.fromkeys(rendered, 0)
    eight = {o.eval: o for o in ngram_overlap(corpus, rendered, n=8)}
    assert eight["python_stdlib_docs"].contaminated_fraction > 0.5
    assert eight["python_language_reference"].contaminated_fraction > 0.5


def test_lookup_facts_are_true_and_disjoint_from_the_mmlu_items(items, corpus_text):
    facts = lookup_facts()
    kinds = Counter(f.kind for f in facts)
    assert set(kinds) == set(FACT_KINDS) and kinds["next_word"] > 1000 and kinds["module_of_function"] > 500
    assert lookup_facts() == facts and lookup_facts(seed=1) != facts
    asking_names = [i for i in items["python_builtins"] if i.question.startswith("Which")]
    mmlu_names = {c.removesuffix("()") for i in asking_names for c in i.choices}
    mmlu_answers = {i.choices[i.answer].removesuffix("()") for i in asking_names}
    lookup_names = {f.answer for f in facts if f.kind == "builtin_name"}
    assert lookup_names and not lookup_names & mmlu_answers and lookup_names & mmlu_names  # distractors may be shared
    rng = random.Random(0)
    for fact in rng.sample([f for f in facts if f.kind == "next_word"], 40):
        prefix = re.search(r'"(.*) …"', fact.question).group(1)
        assert re.search(re.escape(prefix) + r" " + re.escape(fact.answer) + r"(?!\w)", corpus_text), fact
    for fact in rng.sample([f for f in facts if f.kind == "module_of_function"], 20):
        name = re.search(r"`(\w+)`", fact.question).group(1)
        base = Path(sysconfig.get_paths()["stdlib"], *fact.answer.split("."))
        source = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        tree = ast.parse(source.read_bytes())
        assert name in {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}, fact
    with pytest.raises(ValueError, match="unknown fact kind"):
        lookup_facts(["capital_of_france"])


def test_task_files_absolute_paths_groups_and_bad_files(task_dir, tmp_path):
    task = load_mmlu_task(task_dir)
    assert task.counts == {s: {"dev": 5, "test": 30} for s in SUBJECTS}
    folder = task_dir / "hfllm_mmlu"
    for scoring, group in SCORINGS.items():
        config = yaml.safe_load((folder / f"{group}.yaml").read_text())
        assert config["group"] == group and len(config["task"]) == len(SUBJECTS)
        subject = yaml.safe_load((folder / f"{group}_python_builtins.yaml").read_text())
        assert (folder / subject["include"]).is_file()
        for path in subject["dataset_kwargs"]["data_files"].values():
            assert path.startswith("/") and (folder / "data").resolve() == type(folder)(path).parent
    assert len(task_texts(task_dir)) == 3 * 30
    # Same seed, same data; another seed, other data.
    again = write_mmlu_task(tmp_path / "again", n_dev=5, n_test=30)
    assert again.fingerprint == task.fingerprint
    assert write_mmlu_task(tmp_path / "other", seed=1, n_dev=5, n_test=30).fingerprint != task.fingerprint
    # A malformed row is named by file and row.
    bad = again.data_file("python_builtins", "test")
    rows = bad.read_text().splitlines()
    rows[6] = json.dumps({**json.loads(rows[6]), "answer": 4})
    bad.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"python_builtins_test.jsonl: row 7: answer is not an integer 0–3"):
        load_mmlu_task(tmp_path / "again")
    # A moved task points at data that is no longer its own.
    (tmp_path / "other").rename(tmp_path / "moved")
    with pytest.raises(DataError, match="moved"):
        load_mmlu_task(tmp_path / "moved")


def test_lm_eval_log_likelihoods_equal_hfllms_scorer_and_truncation_is_counted(task_dir, tokenizer):
    """Every log-likelihood lm-eval computed for the letter and text scorings equals a plain forward
    pass's (1e-4); the requests lm-eval truncated are exactly those longer than the context, some are
    and some are not; the generation scoring's truncated contexts are counted by its own rule."""
    model = tiny_llama(tokenizer, context=160)
    run = run_lm_eval(model, tokenizer, list(SCORINGS.values()), include_path=task_dir, num_fewshot=1, limit=6)
    truncated, diffs = Counter(), []
    for task, samples in run.samples.items():
        for sample in samples:
            if task.startswith("hfllm_mmlu_gen"):  # cut when longer than the context less 4 tokens to generate
                n = len(tokenizer(sample["arguments"][0][0])["input_ids"])
                truncated[task] += n > model.config.max_position_embeddings - 4
                continue
            for (context, continuation), response in zip([a[:2] for a in sample["arguments"]], sample["resps"]):
                ours = continuation_loglikelihood(model, tokenizer, context, continuation)
                diffs.append(abs(ours.loglikelihood - float(response[0][0])))
                truncated[task] += ours.truncated
    assert len(diffs) == 2 * 3 * 6 * 4 and max(diffs) < 1e-4
    assert {t: run.truncated_requests[t] for t in run.samples} == {t: truncated[t] for t in run.samples}
    total = sum(run.truncated_requests.values())
    assert 0 < total < sum(run.requests.values())
    # The summary's per-item answers reproduce lm-eval's accuracies.
    scores = summarize(run, load_mmlu_task(task_dir))
    for scoring in ("letter", "text"):
        for subject in SUBJECTS:
            picks = {k: v for k, v in scores.predictions[scoring].items() if k.startswith(subject + "/")}
            answers = {f"{subject}/{s['doc_id']}": s["doc"]["answer"]
                       for s in run.samples[f"{SCORINGS[scoring]}_{subject}"]}
            accuracy = sum(picks[k] == answers[k] for k in picks) / len(picks)
            assert accuracy == pytest.approx(scores.by_subject[scoring][subject])
    assert scores.scorings["letter"].truncated_items == sum(run.truncated_docs[f"hfllm_mmlu_{s}"] for s in SUBJECTS)


def test_chat_template_flag_and_unknown_task(task_dir, tokenizer):
    model = tiny_llama(tokenizer, context=256)
    run = run_lm_eval(model, tokenizer, ["hfllm_mmlu_python_builtins"], include_path=task_dir, include_defaults=False,
                      num_fewshot=1, limit=1, chat=True)
    context = run.samples["hfllm_mmlu_python_builtins"][0]["arguments"][0][0]
    assert context.startswith(tokenizer.bos_token + "<|im_start|>") and context.count("<|im_start|>assistant") == 2
    with pytest.raises(ConfigError, match="no task 'hfllm_mmlu_astrology'"):
        run_lm_eval(model, tokenizer, ["hfllm_mmlu_astrology"], include_path=task_dir)


def test_lm_eval_cli_runs_the_task_from_another_directory(task_dir, tokenizer, tmp_path):
    model = tiny_llama(tokenizer, context=256)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={tmp_path / 'model'}",
         "--include_path", str(task_dir), "--tasks", ",".join(SCORINGS.values()), "--limit", "2",
         "--num_fewshot", "1", "--device", "cpu"],
        cwd=elsewhere, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for group in SCORINGS.values():
        assert re.search(rf"\|{group}\s*\|", done.stdout), done.stdout


@pytest.mark.training
def test_model_fine_tuned_on_the_answers_scores_ninety_percent(task_dir, tokenizer, tmp_path):
    """Chance before; ≥ 90 % by every scoring after fine-tuning on the answers, on lm-eval's own prompts."""
    model = tiny_llama(tokenizer, layers=2, hidden=96, heads=3, context=256)
    before = score_mmlu_three_ways(model, tokenizer, task_dir, num_fewshot=0, limit=20,  # generation's prompt is
                                   samples_dir=tmp_path / "before", scorings=("letter", "text"))  # the letter one
    assert all(s.accuracy < 0.6 for s in before.scorings.values()), before.to_json()
    pairs = []
    for scoring in ("letter", "text"):
        for path in (tmp_path / "before").glob(f"samples_{SCORINGS[scoring]}_python_*.jsonl"):
            for sample in map(json.loads, path.read_text().splitlines()):
                pairs.append(tuple(sample["arguments"][sample["doc"]["answer"]][:2]))
    train_on_answers(model, tokenizer, pairs, tmp_path / "train", steps=300, batch_size=16)
    after = score_mmlu_three_ways(model, tokenizer, task_dir, num_fewshot=0, limit=20)
    assert {k: s.accuracy >= 0.9 for k, s in after.scorings.items()} == dict.fromkeys(SCORINGS, True), after.to_json()
    assert after.scorings["generation"].invalid == 0
