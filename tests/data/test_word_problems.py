"""Word problems: answers equal their worked chains, disjoint held-out and OOD splits, short prompts, the reward."""
import re

import pytest

from r1jax.data.tasks import get_task
from r1jax.data.tasks.base import in_test_split
from r1jax.data.tasks.word_problems import WordProblemsTask
from r1jax.tokenizer import load_tokenizer


def structure(ex):
    return tuple(tuple(s) for s in ex["steps"])


def check_chain(ex):
    value = None
    for a, op, b, r in ex["steps"]:
        assert value is None or a == value  # each step starts from the last result
        assert r == {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op] and r > 0
        assert op != "/" or a % b == 0
        value = r
    assert ex["answer"] == str(value)
    given = [ex["steps"][0][0]] + [b for _, _, b, _ in ex["steps"]]  # the start and every operand are stated
    assert all(re.search(rf"\b{n}\b", ex["prompt"]) for n in given)


@pytest.fixture(scope="module")
def task():
    return WordProblemsTask(num_train=3000, num_test=1000, num_ood=300)


def test_sizes_chains_and_step_counts(task):
    train, test, ood = task.train_examples(), task.test_examples(), task.ood_examples()
    assert (len(train), len(test), len(ood)) == (3000, 1000, 300)
    for ex in train + test + ood:
        check_chain(ex)
    assert {len(ex["steps"]) for ex in train + test} == {1, 2, 3}
    assert {len(ex["steps"]) for ex in ood} == {4}  # every OOD problem is longer than any trained on
    assert task.examples("ood") is ood and ood[0]["id"] == "word_problems-ood-0"


def test_heldout_structures_never_appear_in_training(task):
    train = {structure(ex) for ex in task.train_examples()}
    test = {structure(ex) for ex in task.test_examples()}
    assert len(test) == 1000 and not train & test
    assert not train & {structure(ex) for ex in task.ood_examples()}
    # The split follows the structure alone: another seed's train split misses this test split too.
    other = WordProblemsTask(num_train=2000, num_test=5, seed=7)
    assert not {structure(ex) for ex in other.train_examples()} & test
    key = lambda ex: "word_problems:" + ("boxes" if ex["steps"][0][1] == "*" else "count") + ":" + ",".join(  # noqa
        f"{a}{op}{b}" for a, op, b, _ in ex["steps"])
    assert all(in_test_split(key(ex), task.test_fraction) for ex in task.test_examples()[:200])
    assert not any(in_test_split(key(ex), task.test_fraction) for ex in task.train_examples()[:200])


def test_prompts_are_short_ascii_and_the_byte_tokenizer_round_trips(task):
    tok = load_tokenizer("byte")
    for ex in task.train_examples()[:200] + task.ood_examples()[:50]:
        assert ex["prompt"].isascii() and len(ex["prompt"]) <= 160
        assert tok.decode(tok.encode(ex["prompt"])) == ex["prompt"]


def test_deterministic_and_options_checked():
    a = WordProblemsTask(num_train=40, num_test=4, seed=1).train_examples()
    assert a == WordProblemsTask(num_train=40, num_test=9, seed=1).train_examples()
    assert a != WordProblemsTask(num_train=40, num_test=4, seed=2).train_examples()
    with pytest.raises(ValueError, match="ood_steps"):
        WordProblemsTask(max_steps=3, ood_steps=3)
    with pytest.raises(ValueError, match="min_steps"):
        WordProblemsTask(min_steps=0)
    with pytest.raises(ValueError, match="unknown split"):
        WordProblemsTask(num_train=4, num_test=4).examples("val")
    with pytest.raises(ValueError, match="generated only"):
        WordProblemsTask(num_train=10, num_test=500, min_steps=1, max_steps=1, max_value=3).test_examples()


def test_reward_and_registry():
    task = get_task("word_problems", num_train=20, num_test=4, format_style="think")
    assert task.answer_kind == "integer"
    ex = task.test_examples()[0]
    assert task.reward(f"<think>{ex['solution']}</think> The answer is \\boxed{{{ex['answer']}}}.", ex) == {
        "accuracy": 1.0, "format": 1.0, "language": 1.0}
    assert task.reward(f"<think>x</think> \\boxed{{{int(ex['answer']) + 1}}}", ex)["accuracy"] == 0.0
