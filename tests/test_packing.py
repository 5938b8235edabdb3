"""Packing a streamed dataset, and resuming it from a saved position."""

import json

import datasets
import pytest

from hfllm import corpus
from hfllm.errors import ConfigError, DataError
from hfllm.packing import PackedStream, collate_blocks


@pytest.fixture(scope="module")
def doc_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "docs.jsonl"
    texts = [r["text"] for r in corpus.iter_documents(["pydoc_topics"])][:40]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path, texts


def stream_of(path):
    return datasets.load_dataset("json", data_files={"train": str(path)}, split="train", streaming=True)


def test_stream_packs_like_one_long_token_stream(doc_file, tiny_tokenizer):
    path, texts = doc_file
    tok = tiny_tokenizer
    flat = []
    for t in texts:
        flat += [tok.bos_token_id] + tok(t)["input_ids"] + [tok.eos_token_id]
    blocks = [b["input_ids"] for b in PackedStream(stream_of(path), tok, "text", 64)]
    assert blocks == [flat[i * 64:(i + 1) * 64] for i in range(len(flat) // 64)]


def test_resume_from_saved_position(doc_file, tiny_tokenizer):
    path, _ = doc_file
    full = [b["input_ids"] for b in PackedStream(stream_of(path), tiny_tokenizer, "text", 64)]
    first = PackedStream(stream_of(path), tiny_tokenizer, "text", 64)
    it = iter(first)
    for _ in range(37):  # the loader reads ahead of training: position is asked for block 30
        next(it)
    position = json.loads(json.dumps(first.position_after(30)))  # it goes through trainer_state.json
    assert position["blocks"] == 30
    resumed = PackedStream(stream_of(path), tiny_tokenizer, "text", 64, position=position)
    rest = list(resumed)
    assert [b["input_ids"] for b in rest] == full[30:]
    assert rest[0]["block_index"] == 31
    # A second pass (another epoch) starts from the beginning.
    assert [b["input_ids"] for b in resumed][:3] == full[:3]


def test_collate_blocks_keeps_block_index():
    batch = collate_blocks([{"input_ids": [1, 2], "block_index": 4}, {"input_ids": [3, 4], "block_index": 5}])
    assert batch["input_ids"].tolist() == [[1, 2], [3, 4]] and batch["block_index"].tolist() == [4, 5]
    assert batch["labels"] is batch["input_ids"]


def test_tokenizer_without_eos_is_refused(doc_file, tiny_tokenizer):
    path, _ = doc_file
    tok = tiny_tokenizer.__class__.from_pretrained(tiny_tokenizer.name_or_path)
    tok.eos_token = None
    with pytest.raises(ConfigError, match="eos"):
        PackedStream(stream_of(path), tok, "text", 64)


def test_shuffled_stream_is_a_permutation_within_windows(doc_file, tiny_tokenizer):
    path, _ = doc_file
    ordered = [b["input_ids"] for b in PackedStream(stream_of(path), tiny_tokenizer, "text", 64)]
    def shuffled_blocks(seed):
        return [b["input_ids"] for b in PackedStream(stream_of(path), tiny_tokenizer, "text", 64, shuffle_blocks=8,
                                                     seed=seed)]

    shuffled = shuffled_blocks(3)
    assert shuffled != ordered
    for w in range(0, len(ordered), 8):  # each window holds the same blocks, in another order
        assert sorted(shuffled[w:w + 8]) == sorted(ordered[w:w + 8])
    again, other = shuffled_blocks(3), shuffled_blocks(4)
    assert again == shuffled and other != shuffled


@pytest.mark.parametrize("trained", [5, 8, 16, 29])  # mid-window, window ends, last (partial) window
def test_shuffled_stream_resumes_exactly(doc_file, tiny_tokenizer, trained):
    path, _ = doc_file
    make = lambda position=None: PackedStream(stream_of(path), tiny_tokenizer, "text", 64, position=position,
                                              shuffle_blocks=8, seed=3)
    full = list(make())
    assert len(full) > 29 and len(full) % 8  # the last window is a partial one
    first = make()
    it = iter(first)
    for _ in range(min(trained + 6, len(full))):
        next(it)
    position = json.loads(json.dumps(first.position_after(trained)))
    rest = list(make(position))
    assert [b["input_ids"] for b in rest] == [b["input_ids"] for b in full[trained:]]
    assert [b["block_index"] for b in rest] == list(range(trained + 1, len(full) + 1))


def test_shuffle_window_must_be_positive(doc_file, tiny_tokenizer):
    path, _ = doc_file
    with pytest.raises(ConfigError, match="shuffle"):
        PackedStream(stream_of(path), tiny_tokenizer, "text", 64, shuffle_blocks=0)


def test_bad_stream_row_is_named(tmp_path, tiny_tokenizer):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["a document", "another", None]))
    with pytest.raises(DataError, match="row 2 .*text is NoneType") as err:
        list(PackedStream(stream_of(path), tiny_tokenizer, "text", 4, where=str(path)))
    assert str(path) in str(err.value)
