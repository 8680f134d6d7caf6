"""Synthetic pretraining corpora (countdown, word problems): the 'base model' that R1-Zero starts from on a laptop.

A real base model has read the web; ours reads countdown traces in which it tries left-to-right chains such as
`3*7=21, 21+5=26.` and answers with the last one. The corpus is deliberately *mediocre*: an attempt is a correct
chain only with probability `p_correct`, and after a wrong attempt the trace notices ("26 is not 27, wait.") and
tries again only with probability `p_retry` (at most `max_attempts`). So the base model knows the format, the
arithmetic and the habit of re-checking, but uses the habit rarely and answers correctly seldom. Reinforcement
learning with the countdown reward can then raise accuracy by making the model check and retry more often and by
sharpening its first guesses: the response-length growth and the "wait" that R1-Zero reports, in miniature.

Chains are left-associative over the given numbers in some order, with non-negative integer intermediates
(subtraction only when it stays >= 0, division only when exact), so every step is integer arithmetic.

Word problems (`word_problem_trace`) follow the same habit over their worked chain: an attempt is right with
probability `p_correct`, else holds one arithmetic slip, and after a wrong attempt the trace re-checks the slipped
step and tries again with probability `p_retry`. `task_trace` picks the right one by task.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

OPS = "+-*/"


def apply_op(a: int, op: str, b: int) -> int | None:
    """a op b when it is a non-negative integer, else None."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b if a >= b else None
    if op == "*":
        return a * b
    if op == "/":
        return a // b if b and a % b == 0 else None
    raise ValueError(op)


def chain_steps(order: Sequence[int], ops: Sequence[str]) -> list[tuple[int, str, int, int]] | None:
    """[(a, op, b, result)] of the left-to-right chain, or None if a step leaves the non-negative integers."""
    acc, steps = order[0], []
    for op, b in zip(ops, order[1:]):
        r = apply_op(acc, op, b)
        if r is None:
            return None
        steps.append((acc, op, b, r))
        acc = r
    return steps


def chain_expression(order: Sequence[int], ops: Sequence[str]) -> str:
    """The chain as one expression with the parentheses that precedence needs: ((3+4)*5) -> (3+4)*5."""
    expr, low = str(order[0]), False  # low: the expression's top-level operator is + or -
    for op, b in zip(ops, order[1:]):
        if op in "*/" and low:
            expr = f"({expr})"
        expr = f"{expr}{op}{b}"
        low = op in "+-"
    return expr


def solutions(numbers: Sequence[int], target: int) -> list[tuple[tuple[int, ...], tuple[str, ...]]]:
    """Every (order, ops) chain that reaches `target`."""
    found = []
    for order in sorted(set(itertools.permutations(numbers))):
        for ops in itertools.product(OPS, repeat=len(numbers) - 1):
            steps = chain_steps(order, ops)
            if steps and steps[-1][3] == target:
                found.append((order, ops))
    return found


def random_chain(numbers: Sequence[int], rng: np.random.Generator, tries: int = 50):
    """A random valid chain over `numbers` (uniform over orders and ops, rejecting invalid ones)."""
    for _ in range(tries):
        order = tuple(int(x) for x in rng.permutation(numbers))
        ops = tuple(rng.choice(list(OPS), size=len(numbers) - 1))
        if chain_steps(order, ops) is not None:
            return order, ops
    order = tuple(sorted(numbers, reverse=True))
    return order, ("+",) * (len(numbers) - 1)


def attempt_text(steps) -> str:
    return ", ".join(f"{a}{op}{b}={r}" for a, op, b, r in steps) + "."


def countdown_trace(numbers: Sequence[int], target: int, rng: np.random.Generator, *, p_correct: float = 0.25,
                    p_retry: float = 0.3, max_attempts: int = 3) -> str:
    """One completion (the text after a prompt that ends in `<think>`): attempts, then `</think> <answer>`."""
    good = solutions(numbers, target)
    parts = []
    for attempt in range(max_attempts):
        if good and rng.random() < p_correct:
            order, ops = good[rng.integers(len(good))]
        else:
            order, ops = random_chain(numbers, rng)
        steps = chain_steps(order, ops)
        parts.append(attempt_text(steps))
        value = steps[-1][3]
        if value == target or attempt == max_attempts - 1 or rng.random() >= p_retry:
            break
        parts.append(f"{value} is not {target}, wait.")
    return " " + " ".join(parts) + f" </think> <answer>{chain_expression(order, ops)}</answer>"


# ----------------------------------------------------------------------------------------------------------------
# Word problems (r1jax/data/tasks/word_problems.py): the same mediocre habit over a worked chain
# ----------------------------------------------------------------------------------------------------------------
def slipped_steps(steps: Sequence[Sequence], rng: np.random.Generator) -> list[tuple[int, str, int, int]]:
    """The chain with one arithmetic slip: a step's result off by 1-3, later steps computed from the wrong value.
    The slip lands on a random step whose consequences stay in the positive integers (else on the last step)."""
    steps = [tuple(int(x) if i != 1 else x for i, x in enumerate(s)) for s in steps]
    for k in list(rng.permutation(len(steps))) + [len(steps) - 1]:
        delta = int(rng.choice([-3, -2, -1, 1, 2, 3]))
        a, op, b, r = steps[k]
        if r + delta <= 0:
            continue
        out, acc = list(steps[:k]) + [(a, op, b, r + delta)], r + delta
        for _, op2, b2, _ in steps[k + 1:]:
            nxt = apply_op(acc, op2, b2)
            if nxt is None or nxt <= 0:
                break
            out.append((acc, op2, b2, nxt))
            acc = nxt
        if len(out) == len(steps) and acc > 0:
            return out
    a, op, b, r = steps[-1]
    return list(steps[:-1]) + [(a, op, b, r + 1)]


def word_problem_trace(steps: Sequence[Sequence], rng: np.random.Generator, *, p_correct: float = 0.25,
                       p_retry: float = 0.3, max_attempts: int = 3) -> str:
    """One completion for a word problem worked as `steps` [(a, op, b, result)]: attempts at the chain, each right
    with probability `p_correct` (else one slip); after a wrong one the trace re-checks the slipped step ("36-5 is
    not 30, wait.") and tries again with probability `p_retry`; the answer is the last attempt's result."""
    right = [tuple(s) for s in steps]
    parts = []
    for attempt in range(max_attempts):
        chain = right if rng.random() < p_correct else slipped_steps(right, rng)
        parts.append(attempt_text(chain))
        wrong = next((c for c, g in zip(chain, right) if c[3] != g[3]), None)
        if wrong is None or attempt == max_attempts - 1 or rng.random() >= p_retry:
            break
        a, op, b, r = wrong
        parts.append(f"{a}{op}{b} is not {r}, wait.")
    return " " + " ".join(parts) + f" </think> <answer>{chain[-1][3]}</answer>"


def task_trace(task, example, rng: np.random.Generator, *, p_correct: float, p_retry: float,
               max_attempts: int) -> str:
    """The synthetic trace of `example` for the tasks that have one (countdown, word_problems), by task name.
    p_correct=1, p_retry=0, max_attempts=1 gives a correct worked solution (the cold-start 'traces' source)."""
    kw = dict(p_correct=p_correct, p_retry=p_retry, max_attempts=max_attempts)
    name = getattr(task, "name", task)
    if name == "countdown":
        return countdown_trace(example["numbers"], example["target"], rng, **kw)
    if name == "word_problems":
        return word_problem_trace(example["steps"], rng, **kw)
    raise ValueError(f"no synthetic traces for task {name!r}; traces exist for: {', '.join(TRACE_TASKS)}")


TRACE_TASKS = ("countdown", "word_problems")
