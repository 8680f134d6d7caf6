"""Countdown task: reachable targets, disjoint splits, determinism, and its reward."""

import pytest

from r1jax.data.tasks import get_task
from r1jax.data.tasks.countdown import CountdownTask, numbers_key
from r1jax.data.tasks.base import in_test_split
from r1jax.rewards.countdown import check_equation, evaluate


@pytest.fixture(scope="module")
def task():
    return CountdownTask(num_train=2000, num_test=200, seed=3)


def test_sizes_ranges_and_fields(task):
    train, test = task.train_examples(), task.test_examples()
    assert len(train) == 2000 and len(test) == 200
    for ex in train + test:
        assert 3 <= len(ex["numbers"]) <= 4
        assert all(1 <= n <= 99 for n in ex["numbers"])
        assert 1 <= ex["target"] <= 100 and isinstance(ex["target"], int)
        assert ex["prompt"] == (
            f"Using the numbers {ex['numbers']}, create an equation that equals {ex['target']}. You can use basic "
            "arithmetic operations (+, -, *, /) and each number must be used exactly once."
        )


def test_every_target_is_reachable_by_its_solution(task):
    for ex in task.train_examples() + task.test_examples():
        assert evaluate(ex["solution"]) == ex["target"]
        assert check_equation(ex["solution"], ex["numbers"], ex["target"])


def test_train_and_test_are_disjoint_by_number_multiset(task):
    train = {tuple(sorted(ex["numbers"])) for ex in task.train_examples()}
    test = {tuple(sorted(ex["numbers"])) for ex in task.test_examples()}
    assert not train & test
    assert all(in_test_split(numbers_key(n), task.test_fraction) for n in test)
    # The split depends on the numbers alone, so it also holds across seeds.
    other = CountdownTask(num_train=500, num_test=10, seed=99)
    assert not {tuple(sorted(ex["numbers"])) for ex in other.train_examples()} & test


def test_no_duplicate_problems(task):
    keys = [(tuple(sorted(ex["numbers"])), ex["target"]) for ex in task.train_examples()]
    assert len(keys) == len(set(keys))


def test_deterministic_from_seed():
    a = CountdownTask(num_train=50, num_test=5, seed=1).train_examples()
    b = CountdownTask(num_train=50, num_test=5, seed=1).train_examples()
    c = CountdownTask(num_train=50, num_test=5, seed=2).train_examples()
    assert a == b and a != c
    # The train split does not depend on the test size.
    assert CountdownTask(num_train=50, num_test=7, seed=1).train_examples() == a


def test_configurable_ranges():
    task = CountdownTask(num_train=100, num_test=5, min_numbers=4, max_numbers=4, max_value=20, max_target=50)
    for ex in task.train_examples():
        assert len(ex["numbers"]) == 4 and max(ex["numbers"]) <= 20 and ex["target"] <= 50


def test_impossible_request_fails_loudly():
    with pytest.raises(ValueError, match="generated only"):
        task = CountdownTask(num_train=20, num_test=5, min_numbers=2, max_numbers=2, max_value=2, max_target=3)
        task.train_examples()
    with pytest.raises(ValueError, match="min_numbers"):
        CountdownTask(min_numbers=5, max_numbers=4)


def test_reward(task):
    ex = task.train_examples()[0]
    good = f"<think>try</think> <answer>{ex['solution']}</answer>"
    assert task.reward(good, ex) == {"accuracy": 1.0, "countdown": 1.0, "format": 1.0, "language": 1.0}
    wrong = task.reward("<think>try</think> <answer>1 + 1</answer>", ex)
    assert wrong["accuracy"] == 0.0 and wrong["countdown"] == 0.1 and wrong["format"] == 1.0
    assert task.reward("no idea", ex)["countdown"] == 0.0


def test_registry():
    task = get_task("countdown", num_train=10, num_test=2)
    assert task.name == "countdown" and task.answer_kind == "countdown"
    with pytest.raises(KeyError, match="unknown task 'countdwn'; known: aime, arithmetic, code, countdown"):
        get_task("countdwn")
    with pytest.raises(TypeError):
        get_task("countdown", num_trian=10)


# ---------------------------------------------------------------------------------------------------------------
# Room: a held-out set of >= 1,000 problems, distinct multisets, and the out-of-distribution split
# ---------------------------------------------------------------------------------------------------------------
R1_ZERO = dict(min_numbers=3, max_numbers=3, min_value=1, max_value=15, max_target=100, prompt_style="compact")


def multisets(examples):
    return {tuple(sorted(ex["numbers"])) for ex in examples}


def test_heldout_of_a_thousand_problems_never_shares_numbers_with_training():
    """configs/r1_zero.py's gpu ranges (3 numbers in 1..20) hold 1,668 held-out problems over 157 multisets."""
    task = CountdownTask(**{**R1_ZERO, "max_value": 20}, num_train=3000, num_test=1000)
    test = task.test_examples()
    assert len(test) == 1000 and len({(tuple(sorted(e["numbers"])), e["target"]) for e in test}) == 1000
    assert not multisets(test) & multisets(task.train_examples())
    assert all(in_test_split(numbers_key(m), task.test_fraction) for m in multisets(test))
    for ex in test[::50]:
        assert check_equation(ex["solution"], ex["numbers"], ex["target"])


def test_a_larger_test_split_extends_the_smaller_one():
    """Asking for more held-out problems appends: the default's 128 are the first 128 of a 600-problem split."""
    small = CountdownTask(**R1_ZERO, num_train=10, num_test=128).test_examples()
    assert CountdownTask(**R1_ZERO, num_train=10, num_test=600).test_examples()[:128] == small


def test_distinct_multisets_gives_a_thousand_different_number_sets():
    task = CountdownTask(**{**R1_ZERO, "max_value": 40}, num_train=2000, num_test=1000, distinct_multisets=True)
    test = task.test_examples()
    assert len(multisets(test)) == len(test) == 1000
    train = task.train_examples()
    assert len(multisets(train)) == len(train) and not multisets(train) & multisets(test)


def test_ood_split_has_more_numbers_and_no_trained_multiset():
    task = CountdownTask(**R1_ZERO, num_train=500, num_test=50, num_ood=1000)
    ood = task.ood_examples()
    assert len(ood) == 1000 and task.examples("ood") is ood
    assert {len(ex["numbers"]) for ex in ood} == {4}  # trained on 3
    assert {len(ex["numbers"]) for ex in task.train_examples()} == {3}
    assert all(1 <= n <= 15 for ex in ood for n in ex["numbers"]) and all(1 <= ex["target"] <= 100 for ex in ood)
    assert all(in_test_split(numbers_key(ex["numbers"]), task.test_fraction) for ex in ood)
    # Not in the train split of a task that does train on 4 numbers either (same hash side as the test split).
    wide = CountdownTask(**{**R1_ZERO, "max_numbers": 4}, num_train=2000, num_test=5)
    assert not multisets(wide.train_examples()) & multisets(ood)
    assert {len(ex["numbers"]) for ex in wide.ood_examples()[:20]} == {5}
    for ex in ood[::100]:
        assert check_equation(ex["solution"], ex["numbers"], ex["target"])
    assert ood[0]["id"] == "countdown-ood-0"


def test_ood_and_split_arguments_are_checked():
    with pytest.raises(ValueError, match="inside the trained range"):
        CountdownTask(min_numbers=3, max_numbers=4, ood_numbers=4)
    with pytest.raises(ValueError, match="ood_numbers"):
        CountdownTask(ood_numbers=1)
    with pytest.raises(ValueError, match="unknown split 'dev'; known: train, test, ood"):
        CountdownTask(num_train=5, num_test=5).examples("dev")
