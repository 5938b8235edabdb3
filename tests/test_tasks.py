"""Verifiable tasks: verifiers against hand-made answers, the teachers' mistakes, the held-out split."""

import random

import pytest

from hfllm.alignment.tasks import TASKS, distinct_problems, sample_problems, task_for_prompt, verify
from hfllm.errors import ConfigError


@pytest.mark.parametrize("reply, ok", [
    ("85", True), ("85.", True), ("The answer is 85", True), ("7+8=15, 1+4+3=8, answer 85", True),
    ("84", False), ("", False), ("8 5", False), ("850", False), ("answer 85, no wait 75", False),
    ("eighty-five", False),
])
def test_addition_verifier_on_hand_made_replies(reply, ok):
    assert TASKS["addition"].verify("What is 47+38?", reply) is ok


@pytest.mark.parametrize("prompt, answer", [
    ("What is 47+38?", "85"), ("Compute 99 + 99.", "198"), ("Add 10 and 10.", "20"), ("55+45=?", "100"),
    ("What is the sum of 12 and 30?", "42"), ("What is 147+38?", None), ("What is 47-38?", None), ("hello", None),
])
def test_addition_solves_its_own_phrasings_only(prompt, answer):
    assert TASKS["addition"].solve(prompt) == answer


def test_worked_solutions_and_the_forgotten_carry():
    add = TASKS["addition"]
    assert add.write_solution("What is 47+38?") == "7+8=15, 1+4+3=8, answer 85"
    assert add.write_solution("What is 47+38?", mistake=True) == "7+8=15, 4+3=7, answer 75"
    assert add.write_solution("What is 95+68?") == "5+8=13, 1+9+6=16, answer 163"
    assert add.write_solution("What is 41+38?", mistake=True) is None  # no carry to forget
    assert TASKS["addition3"].write_solution("What is 957+968?") == "7+8=15, 1+5+6=12, 1+9+9=19, answer 1925"
    assert TASKS["addition_plain"].write_solution("What is 74+27?", mistake=True) == "91"
    rng = random.Random(0)
    replies = [add.teacher_answer("What is 47+38?", rng, 0.6) for _ in range(2000)]
    wrong = sum(not add.verify("What is 47+38?", r) for r in replies) / len(replies)
    assert 0.55 < wrong < 0.65
    assert all(add.verify("What is 41+38?", add.teacher_answer("What is 41+38?", rng, 1.0)) for _ in range(20))


@pytest.mark.parametrize("task, prompt, reply, ok", [
    ("larger", "Which is larger, 347 or 381?", "381", True),
    ("larger", "Which is larger, 347 or 381?", "347", False),
    ("larger", "max(512, 498) = ?", "512", True),
    ("reverse", "Reverse: a b c d", "d c b a", True),
    ("reverse", "Reverse: a b c d", "The reversed letters: d c b a", True),
    ("reverse", "Reverse: a b c d", "d c a b", False),
    ("reverse", "Reverse: a b c d", "dcba", False),
])
def test_other_verifiers_on_hand_made_replies(task, prompt, reply, ok):
    assert TASKS[task].verify(prompt, reply) is ok
    assert verify(prompt, reply) is ok  # the task is found from the prompt alone


def test_teacher_mistakes_are_wrong_answers():
    assert TASKS["larger"].write_solution("Which is larger, 341 or 387?", mistake=True) is None  # units agree
    assert TASKS["larger"].write_solution("Which is larger, 349 or 381?", mistake=True) == "349"
    assert TASKS["reverse"].write_solution("Reverse: a b c d e", mistake=True) == "e c d b a"
    for name in TASKS:
        for p in sample_problems([name], 200, seed=1):
            wrong = TASKS[name].write_solution(p.prompt, mistake=True)
            assert TASKS[name].verify(p.prompt, p.solution)
            assert wrong is None or not TASKS[name].verify(p.prompt, wrong)


def test_near_misses_are_one_slip_from_the_right_reply():
    add = TASKS["addition"]
    # 47+38: the carry forgotten, the units' sum one off either way, the tens' sum one off either way.
    assert add.near_misses("What is 47+38?") == [
        "7+8=15, 4+3=7, answer 75", "7+8=14, 1+4+3=8, answer 84", "7+8=16, 1+4+3=8, answer 86",
        "7+8=15, 1+4+3=7, answer 75", "7+8=15, 1+4+3=9, answer 95"]
    # 12+34 has no carry: one is written where none belongs.
    assert add.near_misses("12+34=?")[0] == "2+4=6, 1+1+3=5, answer 56"
    # 10+10: a units' sum of -1 is no slip anyone makes; the rest are there.
    assert add.near_misses("Add 10 and 10.") == [
        "0+0=0, 1+1+1=3, answer 30", "0+0=1, 1+1=2, answer 21", "0+0=0, 1+1=1, answer 10",
        "0+0=0, 1+1=3, answer 30"]
    # Other tasks fall back to the teacher's mistake where the problem admits one.
    assert TASKS["addition_plain"].near_misses("What is 47+38?") == ["75"]
    assert TASKS["larger"].near_misses("Which is larger, 147 or 238?") == []  # units order agrees
    assert TASKS["larger"].near_misses("Which is larger, 149 or 238?") == ["149"]
    assert add.near_misses("What is the capital of France?") == []
    for prompt in ("What is 47+38?", "12+34=?", "Add 99 and 99."):
        assert all(not verify(prompt, miss) for miss in add.near_misses(prompt))


def test_verify_steps_wants_the_right_column_sums_too():
    add = TASKS["addition"]
    right = "5+8=13, 1+5+2=8, answer 83"
    assert add.verify_steps("55+28=?", right) and add.verify_steps("55+28=?", "8+5=13, 2+5+1=8, answer 83")
    # The carry folded into a miscopied digit: the answer right, a step wrong.
    folded = "5+8=13, 5+3=8, answer 83"
    assert add.verify("55+28=?", folded) and not add.verify_steps("55+28=?", folded)
    assert not add.verify_steps("55+28=?", "5+8=13, 5+2=7, answer 73")  # the forgotten carry: wrong anyway
    assert not add.verify_steps("55+28=?", "answer 83")  # no steps where the task's replies write them
    assert not add.verify_steps("55+28=?", "5+8=13, 1+5+2=8, 9+9=18, answer 83")  # a step too many
    # Tasks without steps (and additions asked for the bare answer) check the answer only.
    assert TASKS["addition_plain"].verify_steps("55+28=?", "83")
    assert TASKS["reverse"].verify_steps("Reverse: a b c", "c b a")
    assert verify("55+28=?", right, steps=True) and not verify("55+28=?", folded, steps=True)
    assert not verify("What is the capital of France?", "Paris", steps=True)


def test_held_out_problems_never_on_the_training_side():
    names = ["addition", "larger", "reverse"]
    train = sample_problems(names, 3000, seed=3)
    test = distinct_problems(names, 300, seed=3)
    assert len({(p.task, p.key) for p in test}) == 300
    train_keys = {(p.task, p.key) for p in train}
    assert not train_keys & {(p.task, p.key) for p in test}
    assert all(TASKS[p.task].split_of(p.key) == "test" for p in test)
    assert sample_problems(names, 50, seed=3) == sample_problems(names, 50, seed=3)  # seeded


def test_unknown_task_and_too_few_held_out_problems():
    with pytest.raises(ConfigError, match="unknown task"):
        sample_problems(["nope"], 1, seed=0)
    assert task_for_prompt("Reverse: a b c") is TASKS["reverse"]
    assert task_for_prompt("What is love?") is None
    assert TASKS["addition"].split_of("47+38") in ("train", "test")
    with pytest.raises(ConfigError, match="fewer than"):
        distinct_problems(["addition"], 900, seed=0)  # 8,100 problems, ≈ 10 % held out
