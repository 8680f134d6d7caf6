"""Arithmetic, the JSONL math formats, GPQA and code tasks: loading, failing loudly, scoring."""

import json

import pytest

from r1jax.data.tasks import TASKS, Task, get_task
from r1jax.data.tasks.arithmetic import ArithmeticTask, parse_integer
from r1jax.data.tasks.math_jsonl import gpqa_order, gpqa_record


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_follows_the_protocol(name):
    kwargs = {"num_train": 20, "num_test": 4} if name in ("countdown", "arithmetic", "word_problems") else {}
    task = get_task(name, **kwargs)
    assert isinstance(task, Task) and task.name == name
    for ex in list(task.train_examples()) + list(task.test_examples()):
        assert isinstance(ex["prompt"], str) and ex["prompt"]
        assert "Assistant:" not in ex["prompt"]  # not templated
    scores = task.reward("garbage", task.test_examples()[0])
    assert scores["accuracy"] == 0.0 and scores["format"] == 0.0


def test_arithmetic_examples_and_reward():
    task = ArithmeticTask(num_train=300, num_test=30, min_digits=2, max_digits=4, seed=5)
    train, test = task.train_examples(), task.test_examples()
    for ex in train + test:
        a, b = ex["operands"]
        assert ex["answer"] == str(a + b if ex["op"] == "add" else a * b)
        assert 10 <= a < 10_000 and 10 <= b < 10_000
    pairs = lambda exs: {(ex["op"], *sorted(ex["operands"])) for ex in exs}  # noqa: E731
    assert not pairs(train) & pairs(test)
    ex = train[0]
    answer = f"{int(ex['answer']):,}"
    assert task.reward(f"<think>carry</think> <answer>{answer}</answer>", ex)["accuracy"] == 1.0
    assert task.reward(f"<think>carry</think> <answer>{int(ex['answer']) + 1}</answer>", ex)["accuracy"] == 0.0
    assert task.reward(f"\\boxed{{{ex['answer']}}}", ex) == {"accuracy": 1.0, "format": 0.0, "language": 1.0}


@pytest.mark.parametrize(
    "text, value",
    [("1,234", 1234), (" 579. ", 579), ("-7", -7), ("$12$", 12), ("1.5", None), ("x", None), (None, None)],
)
def test_parse_integer(text, value):
    assert parse_integer(text) == value


def test_arithmetic_rejects_unknown_ops():
    with pytest.raises(ValueError, match="known: add, mul"):
        ArithmeticTask(ops=("div",))


def test_gsm8k_math_aime_samples_and_rewards():
    gsm8k = get_task("gsm8k").train_examples()
    assert [ex["answer"] for ex in gsm8k] == ["27", "13", "16", "18", "1260"]
    assert "####" not in gsm8k[0]["solution"]
    math = get_task("math").train_examples()
    assert [ex["answer"] for ex in math] == ["\\frac{5}{6}", "6", "720", "5\\sqrt{2}", "9"]
    aime = get_task("aime").train_examples()
    assert [ex["answer"] for ex in aime] == ["24", "19", "101", "46"]
    task = get_task("math")
    ex = task.train_examples()[0]
    good = "<think>common denominator</think> <answer>\\frac{10}{12}</answer>"
    assert task.reward(good, ex) == {"accuracy": 1.0, "gold_invalid": 0.0, "format": 1.0, "language": 1.0}
    r1_style = get_task("math", format_style="think")
    assert r1_style.reward("<think>common denominator</think>\nSo it is \\boxed{5/6}.", ex)["format"] == 1.0
    bad_gold = {"answer": "\\frac{", "prompt": "?"}
    assert task.reward(good, bad_gold)["gold_invalid"] == 1.0


def test_user_files(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"question": "1+1?", "answer": "2 #### 2"}])
    test = write_jsonl(tmp_path / "test.jsonl", [{"question": "2+2?", "answer": "#### 4"}, ""])
    task = get_task("gsm8k", train_path=train, test_path=test)
    assert task.train_examples()[0]["answer"] == "2" and task.test_examples()[0]["answer"] == "4"
    math500 = write_jsonl(tmp_path / "m.jsonl", [{"problem": "p", "answer": "\\frac{1}{2}", "subject": "Algebra"}])
    assert get_task("math", train_path=math500).train_examples()[0]["subject"] == "Algebra"


@pytest.mark.parametrize(
    "name, row, message",
    [
        ("gsm8k", {"question": "q", "answer": "42"}, "must end with '#### <number>'"),
        ("gsm8k", {"answer": "#### 1"}, "needs one of \\['question'\\]"),
        ("math", {"problem": "p", "solution": "no box"}, "no \\\\boxed"),
        ("aime", {"problem": "p"}, "needs one of \\['answer', 'Answer'\\]"),
        ("gpqa", {"question": "q", "choices": ["a", "b"], "answer": "C"}, "'answer' must be a letter"),
        ("gpqa", {"Question": "q", "Correct Answer": "a"}, "Incorrect Answer 1"),
        ("code", {"prompt": "p", "tests": [{"input": 1, "output": "2"}]}, "test 0 must be"),
        ("gsm8k", "{not json", "invalid JSON"),
        ("gsm8k", "[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, name, row, message):
    good = {
        "gsm8k": {"question": "q", "answer": "#### 1"}, "math": {"problem": "p", "answer": "1"},
        "aime": {"problem": "p", "answer": "1"}, "gpqa": {"question": "q", "choices": ["a", "b"], "answer": 0},
        "code": {"prompt": "p", "tests": [{"input": "", "output": "1"}]},
    }[name]  # fmt: skip
    path = write_jsonl(tmp_path / "bad.jsonl", [good, "", row])
    with pytest.raises(ValueError, match=f"bad.jsonl:3: .*{message}"):
        get_task(name, train_path=path).train_examples()


def test_gpqa_shuffle_is_seeded_and_keeps_the_right_answer():
    record = {"Question": "Which is a noble gas?", "Correct Answer": "Neon", "Incorrect Answer 1": "Iron",
              "Incorrect Answer 2": "Sodium", "Incorrect Answer 3": "Carbon"}  # fmt: skip
    ex = gpqa_record(record, seed=0)
    assert ex["choices"][ex["letters"].index(ex["answer"])] == "Neon"
    assert sorted(ex["choices"]) == ["Carbon", "Iron", "Neon", "Sodium"]
    assert f"{ex['answer']}) Neon" in ex["prompt"]
    assert gpqa_record(record, seed=0) == ex
    assert len({gpqa_record(record, seed=s)["answer"] for s in range(20)}) > 1  # the correct option moves


def test_gpqa_letters_match_the_evaluation_loader():
    tfds_benchmarks = pytest.importorskip("r1jax.data.tfds_benchmarks")
    for question in ["Which is a noble gas?", "  padded question \n", "量子"]:
        for seed in (0, 3):
            assert gpqa_order(question, seed) == tfds_benchmarks.gpqa_order(question, seed)


def test_gpqa_choices_form_keeps_its_order():
    for key in (2, "C", "c", "y"):
        ex = gpqa_record({"question": "q", "choices": ["w", "x", "y", "z"], "answer": key}, seed=1)
        assert ex["choices"] == ["w", "x", "y", "z"] and ex["answer"] == "C"
    assert gpqa_record({"question": "q", "choices": ["yes", "no"], "answer": 1})["letters"] == "AB"


def test_gpqa_reward():
    task = get_task("gpqa")
    ex = task.train_examples()[0]
    right = f"<think>air is mostly nitrogen</think> <answer>{ex['answer']}</answer>"
    wrong_letter = next(l for l in "ABCD" if l != ex["answer"])
    assert task.reward(right, ex)["accuracy"] == 1.0
    assert task.reward(f"The answer is ({wrong_letter})", ex)["accuracy"] == 0.0


def test_code_task_reward():
    task = get_task("code", timeout_s=1.0)
    ex = task.train_examples()[0]  # a + b
    solution = "<think>read and add</think>\n```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    scores = task.reward(solution, ex)
    assert scores["accuracy"] == 1.0 and scores["code_pass"] == 1.0 and scores["code_compiled"] == 1.0
    assert scores["format"] == 0.0  # R1-Zero shape wants <answer> tags
    partial = task.reward("<think>x</think><answer>print(3)</answer>", ex)
    assert partial["accuracy"] == 0.0 and partial["code_pass"] == pytest.approx(1 / 3) and partial["format"] == 1.0
