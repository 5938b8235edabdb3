"""Judges: one interface for whatever ranks model replies — a verifier, a reward model, or an LLM.

Why one interface: synthetic feedback (which of k sampled replies is chosen), evaluation
(win-rates) and the checks of one judge against another all ask the same two questions:

- `score(prompts, replies)` → a number per reply (higher is better);
- `compare(prompts, replies_a, replies_b)` → per pair, how much `a` is preferred: 1, 0 or 0.5.

A scoring judge compares by its scores. An LLM judge asked "which is better, A or B?" is asked
twice, with the replies in both orders, and only a preference that survives the swap counts
(a judge that always says "A" gives 0.5 everywhere): position bias cancels.

Judges here: `VerifierJudge` (ground truth from `hfllm.alignment.tasks`), `RewardModelJudge` (a
sequence-classification model from the reward stage), and `LLMJudge` over a chat backend:
`TransformersChat` (a local model) or `OpenAIChat` (any OpenAI-compatible chat-completions
endpoint: vLLM, TGI, …). `ChatCompletionsServer` serves a local model in that schema (tests, and
a judge model shared between processes). `agreement` measures a judge against ground truth.
"""

from __future__ import annotations

import json
import os
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch

from hfllm.errors import ConfigError


class Judge:
    """Base: subclasses define `score` (scoring judges) or `_prefers_first` (pairwise judges)."""

    name = "judge"

    def score(self, prompts: Sequence[str], replies: Sequence[str]) -> list[float]:
        raise ConfigError(f"{self.name} is a pairwise judge: it compares two replies and scores none "
                          "(an LLM judge scores with mode 'score': llm:<model>:score)", field="judge")

    def _prefers_first(self, prompts: Sequence[str], first: Sequence[str],
                       second: Sequence[str]) -> list[float | None]:
        """One order: 1.0 (first better), 0.0 (second better), None (no verdict)."""
        scores_a, scores_b = self.score(prompts, first), self.score(prompts, second)
        return [1.0 if a > b else 0.0 if b > a else 0.5 for a, b in zip(scores_a, scores_b)]

    def compare(self, prompts: Sequence[str], replies_a: Sequence[str], replies_b: Sequence[str]) -> list[float]:
        """Preference for `a` over `b` per pair, from both orders: 1.0, 0.0, or 0.5 (tie, or the
        verdict flipped with the order)."""
        forward = self._prefers_first(prompts, replies_a, replies_b)
        backward = self._prefers_first(prompts, replies_b, replies_a)
        out = []
        for f, b in zip(forward, backward):
            f = 0.5 if f is None else f
            b = 0.5 if b is None else b
            out.append((f + (1.0 - b)) / 2)
        return out


class VerifierJudge(Judge):
    """Ground truth: 1.0 for a reply the task's verifier accepts, else 0.0. With `steps`
    (`verifier:steps`), a worked reply must also get every step right: on the demo's additions,
    pairs whose chosen reply reached the right answer by a wrong step were the reward model's
    held-out errors (38–47 % right on them), 76.9 → 89.9 % held-out accuracy with steps checked."""

    def __init__(self, tasks: Sequence[str] | None = None, *, steps: bool = False):
        from hfllm.alignment.tasks import get_task

        self.tasks = list(tasks) if tasks else None
        for name in self.tasks or []:
            get_task(name, field="judge")
        self.steps = steps
        self.name = "verifier:steps" if steps else "verifier"

    def score(self, prompts, replies):
        from hfllm.alignment.tasks import verify

        return [float(verify(p, r, self.tasks, steps=self.steps)) for p, r in zip(prompts, replies)]


def check_same_vocabulary(policy_tokenizer, reward_tokenizer, reward_name: str, *,
                          field: str = "reward_model_path") -> None:
    """A reward model scores the policy's token ids only if both tokenizers map text to the same ids."""
    if policy_tokenizer.get_vocab() != reward_tokenizer.get_vocab():
        raise ConfigError(
            f"the reward model {reward_name} has a vocabulary of {len(reward_tokenizer)} tokens that differs from the "
            f"policy's ({len(policy_tokenizer)}): train both from the same tokenizer", field=field,
        )


class RewardModelJudge(Judge):
    """Scores from a sequence-classification reward model (the reward stage's output), on each
    prompt and reply rendered with the reward model's chat template."""

    def __init__(self, model_name_or_path: str, *, policy_tokenizer=None, batch_size: int = 64, field: str = "judge"):
        from transformers import AutoTokenizer

        from hfllm.modeling import load_sequence_classifier

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot load a reward model from {model_name_or_path!r} ({str(err).splitlines()[0]})",
                              field=field) from None
        self.model = load_sequence_classifier(model_name_or_path, field=field)
        if policy_tokenizer is not None:
            check_same_vocabulary(policy_tokenizer, self.tokenizer, model_name_or_path, field=field)
        self.model.eval()
        self.batch_size = batch_size
        self.name = f"reward_model:{os.path.basename(os.path.normpath(model_name_or_path))}"

    @torch.no_grad()
    def score(self, prompts, replies):
        texts = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False)
            for p, r in zip(prompts, replies)
        ]
        pad = self.tokenizer.pad_token_id
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start:start + self.batch_size]
            ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in batch]
            width = max(len(x) for x in ids)
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
            scores += self.model(input_ids=input_ids, attention_mask=mask).logits[:, 0].tolist()
        return scores


# --- LLM judges ---------------------------------------------------------------------------------

class TransformersChat:
    """A chat backend over a local causal LM (greedy)."""

    def __init__(self, model_name_or_path: str, max_new_tokens: int = 8, field: str = "judge_model"):
        from hfllm.alignment.generation import require_chat_template
        from hfllm.modeling import load_causal_lm, load_tokenizer

        self.tokenizer = load_tokenizer(model_name_or_path, field=field)
        require_chat_template(self.tokenizer, None, field=field)
        self.model = load_causal_lm(model_name_or_path, field=field)
        self.max_new_tokens = max_new_tokens
        self.name = os.path.basename(os.path.normpath(model_name_or_path))

    def chat(self, conversations: Sequence[list[dict]]) -> list[str]:
        from hfllm.alignment.generation import generate_replies

        return [r[0] for r in generate_replies(self.model, self.tokenizer, list(conversations),
                                                max_new_tokens=self.max_new_tokens)]


class OpenAIChat:
    """A chat backend over an OpenAI-compatible `/v1/chat/completions` endpoint (greedy). The API
    key is read from the environment variable named by `api_key_env` and never logged."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY", max_tokens: int = 8,
                 timeout_s: float = 60.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.max_tokens, self.timeout_s = model, max_tokens, timeout_s
        self._key = os.environ.get(api_key_env) if api_key_env else None
        self.name = model

    def _one(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0.0,
                           "max_tokens": self.max_tokens}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        if self._key:
            request.add_header("Authorization", f"Bearer {self._key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise ConfigError(f"chat endpoint {self.url} failed: {err}", field="api_base") from None
        return payload["choices"][0]["message"]["content"] or ""

    def chat(self, conversations: Sequence[list[dict]]) -> list[str]:
        return [self._one(list(c)) for c in conversations]


PAIRWISE_PROMPT = (
    "Question: {prompt}\nAnswer A: {a}\nAnswer B: {b}\n"
    "Which answer is correct and better, A or B? Reply with one letter."
)
SCORE_PROMPT = "Question: {prompt}\nAnswer: {reply}\nIs the answer correct? Reply yes or no."


class LLMJudge(Judge):
    """An LLM asked to pick the better of two replies (`mode="pairwise"`, both orders) or whether a
    reply is correct (`mode="score"`: yes → 1, no → 0, anything else → 0.5)."""

    def __init__(self, backend, mode: str = "pairwise"):
        if mode not in ("pairwise", "score"):
            raise ConfigError(f"judge mode must be 'pairwise' or 'score', got {mode!r}", field="judge_mode")
        self.backend, self.mode = backend, mode
        self.name = f"llm:{backend.name}:{mode}"

    def score(self, prompts, replies):
        if self.mode != "score":
            return super().score(prompts, replies)
        answers = self.backend.chat([[{"role": "user", "content": SCORE_PROMPT.format(prompt=p, reply=r)}]
                                     for p, r in zip(prompts, replies)])
        out = []
        for text in answers:
            word = re.match(r"\W*(\w+)", text.lower())
            out.append(1.0 if word and word.group(1) == "yes" else 0.0 if word and word.group(1) == "no" else 0.5)
        return out

    def _prefers_first(self, prompts, first, second):
        if self.mode == "score":
            return super()._prefers_first(prompts, first, second)
        answers = self.backend.chat([[{"role": "user", "content": PAIRWISE_PROMPT.format(prompt=p, a=a, b=b)}]
                                     for p, a, b in zip(prompts, first, second)])
        out: list[float | None] = []
        for text in answers:
            letter = re.search(r"\b([AB])\b", text.strip().upper())
            out.append(None if letter is None else 1.0 if letter.group(1) == "A" else 0.0)
        return out


def build_judge(spec: str, *, tasks: Sequence[str] | None = None, policy_tokenizer=None, api_base: str | None = None,
                api_key_env: str | None = "OPENAI_API_KEY", field: str = "judge") -> Judge:
    """A judge from its config string: `verifier` (or `verifier:steps`), `reward_model:<dir>`, `llm:<model dir>`
    (transformers), `openai:<model name>` (with `api_base`); `llm:` and `openai:` take
    `:score` at the end for the scoring form."""
    kind, _, rest = spec.partition(":")
    if kind == "verifier" and rest in ("", "steps"):
        return VerifierJudge(tasks, steps=rest == "steps")
    if kind == "reward_model" and rest:
        return RewardModelJudge(rest, policy_tokenizer=policy_tokenizer, field=field)
    if kind in ("llm", "openai") and rest:
        mode = "pairwise"
        if rest.endswith(":score"):
            rest, mode = rest[: -len(":score")], "score"
        if kind == "llm":
            return LLMJudge(TransformersChat(rest, field=field), mode)
        if not api_base:
            raise ConfigError("an openai: judge needs api_base (the endpoint's URL, e.g. http://host:8000/v1)",
                              field="api_base")
        return LLMJudge(OpenAIChat(api_base, rest, api_key_env), mode)
    raise ConfigError(f"unknown judge {spec!r} (verifier[:steps], reward_model:<dir>, llm:<model dir>[:score], "
                      "openai:<model>[:score])", field=field)


def agreement(judge: Judge, prompts: Sequence[str], better: Sequence[str], worse: Sequence[str]) -> dict[str, float]:
    """How often `judge` prefers the reply ground truth calls better: the mean preference (ties
    count half) and the share of pairs it got strictly right."""
    prefs = judge.compare(prompts, better, worse)
    n = len(prefs)
    return {"agreement": sum(prefs) / n if n else float("nan"),
            "strictly_right": sum(p == 1.0 for p in prefs) / n if n else float("nan"), "pairs": n}


class ChatCompletionsServer:
    """A minimal OpenAI-compatible chat-completions server over a local model (greedy replies), on
    127.0.0.1 in a background thread. `with ChatCompletionsServer(dir) as url: …` → base URL."""

    def __init__(self, model_name_or_path: str, port: int = 0, max_new_tokens: int = 16):
        self.chat = TransformersChat(model_name_or_path, max_new_tokens=max_new_tokens)
        self.model_name = os.path.basename(os.path.normpath(model_name_or_path))
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self.send_error(404)
                    return
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                max_tokens = int(request.get("max_tokens") or server.chat.max_new_tokens)
                with server._lock:
                    server.chat.max_new_tokens = max_tokens
                    text = server.chat.chat([request["messages"]])[0]
                body = json.dumps({
                    "id": "chatcmpl-hfllm", "object": "chat.completion", "model": server.model_name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
