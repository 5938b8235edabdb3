"""Judges: verifier, reward model and LLM judges behind one interface; both orders; the
OpenAI-compatible endpoint against a real tiny model served on 127.0.0.1."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hfllm.errors import ConfigError
from hfllm.judge import (
    ChatCompletionsServer,
    LLMJudge,
    OpenAIChat,
    RewardModelJudge,
    TransformersChat,
    VerifierJudge,
    agreement,
    build_judge,
)
from hfllm.modeling import llama_config
from hfllm.tokenizer import train_bpe


@pytest.fixture(scope="session")
def tiny_dir(tiny_run) -> Path:
    return tiny_run


PROMPTS = ["What is 47+38?", "What is 12+30?", "Reverse: a b c"]
RIGHT = ["7+8=15, 1+4+3=8, answer 85", "42", "c b a"]
WRONG = ["7+8=15, 4+3=7, answer 75", "41", "a b c"]


def test_verifier_judge_scores_and_compares_in_both_orders():
    judge = VerifierJudge()
    assert judge.score(PROMPTS, RIGHT) == [1.0, 1.0, 1.0]
    assert judge.score(PROMPTS, WRONG) == [0.0, 0.0, 0.0]
    assert judge.compare(PROMPTS, RIGHT, WRONG) == [1.0, 1.0, 1.0]
    assert judge.compare(PROMPTS, WRONG, RIGHT) == [0.0, 0.0, 0.0]
    assert judge.compare(PROMPTS, RIGHT, RIGHT) == [0.5, 0.5, 0.5]
    assert agreement(judge, PROMPTS, RIGHT, WRONG) == {"agreement": 1.0, "strictly_right": 1.0, "pairs": 3}
    assert agreement(judge, PROMPTS, WRONG, RIGHT)["agreement"] == 0.0


def test_verifier_judge_with_steps_wants_every_step_right():
    judge = build_judge("verifier:steps")
    assert isinstance(judge, VerifierJudge) and judge.name == "verifier:steps"
    # 47+38 with the carry folded into a miscopied digit: the answer right, the tens step wrong.
    sloppy = ["7+8=15, 5+3=8, answer 85", "42", "c b a"]
    assert VerifierJudge().score(PROMPTS, sloppy) == [1.0, 1.0, 1.0]
    assert judge.score(PROMPTS, sloppy) == [0.0, 0.0, 1.0]  # "42" has no steps: the worked task wants them
    assert judge.score(PROMPTS, WRONG) == [0.0, 0.0, 0.0]
    plain = build_judge("verifier:steps", tasks=["addition_plain", "reverse"])
    assert plain.score(PROMPTS[1:], sloppy[1:]) == [1.0, 1.0]  # tasks without steps: the answer alone


class AlwaysFirst(LLMJudge):
    """A judge with total position bias: it prefers whichever reply it is shown first."""

    def __init__(self):
        self.name = "always-first"

    def _prefers_first(self, prompts, first, second):
        return [1.0] * len(prompts)


def test_both_orders_cancel_position_bias():
    assert AlwaysFirst().compare(PROMPTS, RIGHT, WRONG) == [0.5, 0.5, 0.5]
    assert AlwaysFirst().compare(PROMPTS, WRONG, RIGHT) == [0.5, 0.5, 0.5]


def test_a_pairwise_judge_asked_for_scores_is_a_config_error():
    judge = AlwaysFirst()
    judge.mode = "pairwise"
    with pytest.raises(ConfigError, match="always-first is a pairwise judge") as err:
        judge.score(PROMPTS, RIGHT)
    assert err.value.field == "judge"


def test_llm_judge_over_the_loopback_endpoint_matches_transformers(tiny_dir):
    model_dir = str(tiny_dir / "pretrain")
    local = LLMJudge(TransformersChat(model_dir, max_new_tokens=6))
    with ChatCompletionsServer(model_dir, max_new_tokens=6) as url:
        assert url.startswith("http://127.0.0.1:")
        remote_chat = OpenAIChat(url, "tiny", api_key_env=None, max_tokens=6)
        conversation = [{"role": "user", "content": "Which answer is better, A or B?"}]
        assert remote_chat.chat([conversation]) == local.backend.chat([conversation])  # greedy: the same reply
        remote = LLMJudge(remote_chat)
        forward = remote.compare(PROMPTS, RIGHT, WRONG)
        assert forward == local.compare(PROMPTS, RIGHT, WRONG)
        # Both orders: swapping the replies mirrors every verdict.
        assert [1 - p for p in remote.compare(PROMPTS, WRONG, RIGHT)] == forward
        scored = LLMJudge(remote_chat, mode="score").score(PROMPTS, RIGHT)
        assert all(s in (0.0, 0.5, 1.0) for s in scored)
    with pytest.raises(ConfigError, match="chat endpoint"):
        OpenAIChat(url, "tiny", api_key_env=None).chat([conversation])  # the server is gone


def _reward_model(directory: Path, tokenizer) -> str:
    config = llama_config(1, 32, 2, 64, len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    config.num_labels = 1
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def test_reward_model_judge_and_vocabulary_check(tiny_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / "tokenizer")
    path = _reward_model(tmp_path / "rm", tokenizer)
    judge = build_judge(f"reward_model:{path}", policy_tokenizer=tokenizer)
    assert isinstance(judge, RewardModelJudge) and judge.name == "reward_model:rm"
    scores = judge.score(PROMPTS, RIGHT)
    assert len(scores) == 3 and len(set(scores)) == 3  # a real model: different replies, different scores
    assert judge.compare(PROMPTS, RIGHT, WRONG) == [1.0 if a > b else 0.0 for a, b in
                                                    zip(scores, judge.score(PROMPTS, WRONG))]
    other = train_bpe(iter(["a different corpus, a different vocabulary"] * 50), vocab_size=300)
    with pytest.raises(ConfigError, match="differs from the policy"):
        RewardModelJudge(path, policy_tokenizer=other)


def test_build_judge_errors():
    with pytest.raises(ConfigError, match="unknown judge"):
        build_judge("oracle")
    with pytest.raises(ConfigError, match="unknown judge"):
        build_judge("verifier:answers")
    with pytest.raises(ConfigError, match="api_base"):
        build_judge("openai:gpt")
    with pytest.raises(ConfigError, match="cannot load a reward model"):
        build_judge("reward_model:/nonexistent/dir")
