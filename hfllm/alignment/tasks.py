"""Verifiable tasks: problems whose answers a program can check, for the offline post-training demo.

Why: SFT, DPO and PPO need a measure that is not the model optimised against (a reward model can
be gamed); a verifier that recomputes the answer from the prompt is ground truth. Each task

- samples problems from a space large enough that held-out problems never appear in training:
  every problem belongs to one side of a split fixed by the hash of its canonical key (the same
  rule as the data stage's `is_held_out`), so training prompts of every stage come from the
  `train` side and `task_eval`'s prompts from the `test` side, whatever the phrasing;
- phrases a problem with one of several templates (instruction-style variety);
- solves any prompt it phrased (`solve` parses the prompt back: a verifier needs only prompt and
  reply, so it works on prompts an LLM proposed too);
- verifies a reply: the last number (or the quoted word) in it must equal the answer;
- makes the mistakes a weak teacher makes (`teacher_answer`): the synthetic-data generator's
  noise, so that SFT on its demonstrations plateaus below what preference optimisation reaches;
- writes near misses of the right reply (`near_misses`): wrong replies one slip away from it, the
  hard negatives that teach a reward model what the policy's own samples rarely show.
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

from hfllm.data.split import is_held_out
from hfllm.errors import ConfigError

# Share of each task's problem space that only evaluation sees.
HELD_OUT_FRACTION = 0.1

_LAST_INTEGER = re.compile(r"-?\d+")
_STEP = re.compile(r"(\d+(?:\+\d+)+)=(\d+)")  # a worked reply's step, "1+4+3=8"


def _steps(reply: str) -> list[tuple[list[int], int]]:
    """A worked reply's steps in order, each as its terms (in any order) and its result."""
    return [(sorted(map(int, terms.split("+"))), int(result)) for terms, result in _STEP.findall(reply)]


@dataclass(frozen=True)
class Problem:
    task: str
    key: str  # canonical form: decides the split, independent of the phrasing
    prompt: str
    answer: str  # what the verifier compares a reply's answer with
    solution: str  # the reply a correct teacher writes (the answer, or a worked solution ending in it)


class Task(ABC):
    """A family of verifiable problems. Subclasses define `_draw`, `solve`, `extract`, `_mistake` and `key_of`."""

    name: str
    templates: tuple[str, ...]

    @abstractmethod
    def _draw(self, rng: random.Random) -> tuple[str, dict]:
        """A problem's canonical key and the fields its templates use."""

    @abstractmethod
    def solve(self, prompt: str) -> str | None:
        """The answer to a prompt of this task, or None if the prompt is not one."""

    @abstractmethod
    def extract(self, reply: str) -> str | None:
        """The answer a reply gives, or None if it gives none."""

    @abstractmethod
    def _mistake(self, prompt: str) -> str | None:
        """A wrong answer a weak teacher would give, or None where it would not go wrong."""

    def near_misses(self, prompt: str) -> list[str]:
        """Wrong replies one slip away from the right one (default: the teacher's mistake, where the
        problem admits it). Each is wrong by the verifier."""
        wrong = self.write_solution(prompt, mistake=True)
        return [] if wrong is None or self.verify(prompt, wrong) else [wrong]

    def split_of(self, key: str) -> str:
        return "test" if is_held_out(f"{self.name}:{key}", HELD_OUT_FRACTION) else "train"

    def sample(self, rng: random.Random, split: str = "train") -> Problem:
        """A problem from one side of the split, phrased with a random template."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        while True:
            key, fields = self._draw(rng)
            if self.split_of(key) == split:
                prompt = rng.choice(self.templates).format(**fields)
                return Problem(self.name, key, prompt, self.solve(prompt), self.write_solution(prompt))

    def write_solution(self, prompt: str, *, mistake: bool = False) -> str | None:
        """The reply a teacher writes: correct, or (`mistake`) with its typical error — None where
        the problem admits none. Default: the bare answer."""
        return self.solve(prompt) if not mistake else self._mistake(prompt)

    def verify(self, prompt: str, reply: str) -> bool:
        """True when the reply's answer equals the answer recomputed from the prompt."""
        answer = self.solve(prompt)
        return answer is not None and self.extract(reply) == answer

    def verify_steps(self, prompt: str, reply: str) -> bool:
        """True when the answer is right and so is every step the reply writes on the way (default:
        a task whose replies show no steps, the answer alone)."""
        return self.verify(prompt, reply)

    @abstractmethod
    def key_of(self, prompt: str) -> str | None:
        """The canonical key of the problem a prompt states (None if not this task's)."""

    def teacher_answer(self, prompt: str, rng: random.Random, error_rate: float) -> str:
        """A noisy teacher's reply: with probability `error_rate` its typical mistake, where the
        problem admits one; otherwise the right solution."""
        if error_rate > 0 and rng.random() < error_rate:
            wrong = self.write_solution(prompt, mistake=True)
            if wrong is not None:
                return wrong
        return self.write_solution(prompt)


class Addition(Task):
    """Add two `digits`-digit numbers. With `worked` solutions the teacher writes the column sums
    before the answer (47 + 38 → "7+8=15, 1+4+3=8, answer 85"): each step is a one-digit sum a
    small model learns quickly. The teacher's mistake: it forgets the carry out of the units
    column ("7+8=15, 4+3=7, answer 75"), so it is wrong only on problems with that carry (≈ 45 %)."""

    templates = (
        "What is {a}+{b}?",
        "Compute {a} + {b}.",
        "Add {a} and {b}.",
        "{a}+{b}=?",
        "What is the sum of {a} and {b}?",
    )
    _parse = re.compile(r"^(?:What is |Compute |Add |What is the sum of )?(\d+)\s*(?:\+|and)\s*(\d+)\s*(?:\?|\.|=\?)$")

    def __init__(self, name: str = "addition", digits: int = 2, worked: bool = True):
        self.name, self.digits, self.worked = name, digits, worked
        self.low, self.high = 10 ** (digits - 1), 10**digits - 1

    def _draw(self, rng):
        a, b = rng.randint(self.low, self.high), rng.randint(self.low, self.high)
        return f"{a}+{b}", {"a": a, "b": b}

    def operands(self, prompt: str) -> tuple[int, int] | None:
        m = self._parse.match(prompt.strip())
        if not m:
            return None
        a, b = int(m.group(1)), int(m.group(2))
        return (a, b) if self.low <= a <= self.high and self.low <= b <= self.high else None

    def solve(self, prompt):
        ops = self.operands(prompt)
        return None if ops is None else str(ops[0] + ops[1])

    def key_of(self, prompt):
        ops = self.operands(prompt)
        return None if ops is None else f"{ops[0]}+{ops[1]}"

    def extract(self, reply):
        numbers = _LAST_INTEGER.findall(reply)
        return numbers[-1] if numbers else None

    def write_solution(self, prompt, *, mistake=False):
        ops = self.operands(prompt)
        if ops is None:
            return None
        a, b = ops
        if mistake and a % 10 + b % 10 < 10:
            return None  # no carry out of the units to forget
        steps, digits, carry = [], [], 0
        for x, y in zip(reversed(str(a)), reversed(str(b))):
            column = carry + int(x) + int(y)
            steps.append(f"{carry}+{x}+{y}={column}" if carry else f"{x}+{y}={column}")
            digits.append(str(column % 10))
            carry = 0 if mistake and len(steps) == 1 else column // 10
        total = (str(carry) if carry else "") + "".join(reversed(digits))
        return ", ".join(steps) + f", answer {total}" if self.worked else total

    def _mistake(self, prompt):
        return self.write_solution(prompt, mistake=True)

    def verify_steps(self, prompt, reply):
        """The right answer through the right column sums: a worked reply that reaches the answer
        by a wrong step (the carry folded into a miscopied digit, "55+28: 5+8=13, 5+3=8") is not
        one to prefer, though its answer is right."""
        if not self.verify(prompt, reply):
            return False
        return not self.worked or _steps(reply) == _steps(self.write_solution(prompt))

    def near_misses(self, prompt):
        """Worked solutions with one slip, the answer following the slipped steps: the carry out of
        the units toggled (forgotten, or written where there is none), or one column's sum one off.
        Without them the demo's reward model learned only that a forgotten carry is wrong (the
        policy's samples show little else), and PPO against it wrote carries where none belong."""
        ops = self.operands(prompt)
        if ops is None or not self.worked or self.digits != 2:
            return super().near_misses(prompt)  # the teacher's mistake, or none for a prompt not this task's
        a, b = ops
        units = a % 10 + b % 10
        carried = units >= 10
        variants = [(not carried, 0, 0)] + [(carried, du, 0) for du in (-1, 1)] + [(carried, 0, dt) for dt in (-1, 1)]
        misses = []
        for carry, du, dt in variants:
            column1 = units + du
            column2 = int(carry) + a // 10 + b // 10 + dt
            if column1 < 0 or column2 < 0:
                continue
            tens = f"1+{a // 10}+{b // 10}" if carry else f"{a // 10}+{b // 10}"
            reply = f"{a % 10}+{b % 10}={column1}, {tens}={column2}, answer {column2 * 10 + column1 % 10}"
            if not self.verify(prompt, reply):
                misses.append(reply)
        return misses


class Larger(Task):
    """Say which of two numbers is larger. The teacher's mistake: it compares the last digits
    (47 vs 38 → 38), wrong wherever the units order differs from the numbers' order (≈ 45 %)."""

    templates = (
        "Which is larger, {a} or {b}?",
        "Which number is bigger: {a} or {b}?",
        "What is the larger of {a} and {b}?",
        "max({a}, {b}) = ?",
    )
    _parse = re.compile(r"^(?:Which is larger, |Which number is bigger: |What is the larger of |max\()"
                        r"(\d+)(?: or |, | and )(\d+)(?:\?|\) = \?)$")

    def __init__(self, name: str = "larger", digits: int = 3):
        self.name, self.digits = name, digits
        self.low, self.high = 10 ** (digits - 1), 10**digits - 1

    def _draw(self, rng):
        a, b = rng.sample(range(self.low, self.high + 1), 2)
        return f"{a},{b}", {"a": a, "b": b}

    def operands(self, prompt):
        m = self._parse.match(prompt.strip())
        if not m:
            return None
        a, b = int(m.group(1)), int(m.group(2))
        return (a, b) if a != b and self.low <= a <= self.high and self.low <= b <= self.high else None

    def solve(self, prompt):
        ops = self.operands(prompt)
        return None if ops is None else str(max(ops))

    def key_of(self, prompt):
        ops = self.operands(prompt)
        return None if ops is None else f"{ops[0]},{ops[1]}"

    def extract(self, reply):
        numbers = _LAST_INTEGER.findall(reply)
        return numbers[-1] if numbers else None

    def _mistake(self, prompt):
        a, b = self.operands(prompt)
        by_units = a if a % 10 > b % 10 else b if b % 10 > a % 10 else None
        return None if by_units in (None, max(a, b)) else str(by_units)


class ReverseLetters(Task):
    """Write a word's letters (space-separated, one token each) in reverse order. The teacher's
    mistake: on words of 5 letters or more it leaves the middle letter pair unswapped."""

    templates = (
        "Reverse the letters: {w}",
        "Write these letters backwards: {w}",
        "Reverse: {w}",
    )
    _parse = re.compile(r"^(?:Reverse the letters|Write these letters backwards|Reverse): ((?:[a-z] )*[a-z])$")
    _reply = re.compile(r"(?:[a-z] )*[a-z]")

    def __init__(self, name: str = "reverse", min_letters: int = 3, max_letters: int = 6):
        self.name, self.min_letters, self.max_letters = name, min_letters, max_letters

    def _draw(self, rng):
        length = rng.randint(self.min_letters, self.max_letters)
        word = " ".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(length))
        return word, {"w": word}

    def key_of(self, prompt):
        m = self._parse.match(prompt.strip())
        if not m or not self.min_letters <= len(m.group(1).split()) <= self.max_letters:
            return None
        return m.group(1)

    def solve(self, prompt):
        key = self.key_of(prompt)
        return None if key is None else " ".join(reversed(key.split()))

    def extract(self, reply):
        found = self._reply.findall(reply.strip())
        return found[-1] if found else None

    def _mistake(self, prompt):
        letters = self.solve(prompt).split()
        if len(letters) < 5:
            return None
        i = len(letters) // 2 - 1
        letters[i], letters[i + 1] = letters[i + 1], letters[i]
        wrong = " ".join(letters)
        return wrong if wrong != self.solve(prompt) else None


TASKS: dict[str, Task] = {
    t.name: t
    for t in (Addition(), Addition("addition_plain", worked=False), Addition("addition3", digits=3), Larger(),
              ReverseLetters())
}


def get_task(name: str, *, field: str = "tasks") -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r} (known: {', '.join(TASKS)})", field=field)
    return TASKS[name]


def task_for_prompt(prompt: str, names: list[str] | None = None) -> Task | None:
    """The task whose templates phrase `prompt` (None if none does)."""
    for name in names or list(TASKS):
        if TASKS[name].solve(prompt) is not None:
            return TASKS[name]
    return None


def verify(prompt: str, reply: str, names: list[str] | None = None, *, steps: bool = False) -> bool:
    """Ground truth for any task prompt: False for a prompt no task recognises. With `steps`, the
    steps a worked reply writes must be right too (`Task.verify_steps`)."""
    task = task_for_prompt(prompt, names)
    if task is None:
        return False
    return task.verify_steps(prompt, reply) if steps else task.verify(prompt, reply)


def sample_problems(names: list[str], n: int, seed: int, split: str = "train") -> list[Problem]:
    """`n` problems, tasks in turn, from one side of the split; the same seed gives the same list."""
    tasks = [get_task(name) for name in names]
    rng = random.Random(f"{seed}:{split}:{','.join(names)}")
    return [tasks[i % len(tasks)].sample(rng, split) for i in range(n)]


def distinct_problems(names: list[str], n: int, seed: int, split: str = "test") -> list[Problem]:
    """`n` problems with distinct keys (held-out evaluation sets: no problem counted twice)."""
    tasks = [get_task(name) for name in names]
    rng = random.Random(f"{seed}:{split}:{','.join(names)}:distinct")
    seen: set[tuple[str, str]] = set()
    out: list[Problem] = []
    for attempt in range(200 * n):
        problem = tasks[len(out) % len(tasks)].sample(rng, split)
        if (problem.task, problem.key) not in seen:
            seen.add((problem.task, problem.key))
            out.append(problem)
            if len(out) == n:
                return out
    raise ConfigError(f"the tasks' {split} split has fewer than {n} distinct problems ({len(out)} found)")
