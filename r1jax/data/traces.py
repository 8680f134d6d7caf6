"""A synthetic pretraining corpus for countdown: the 'base model' that R1-Zero starts from on a laptop.

A real base model has read the web; ours reads countdown traces in which it tries left-to-right chains such as
`3*7=21, 21+5=26.` and answers with the last one. The corpus is deliberately *mediocre*: an attempt is a correct
chain only with probability `p_correct`, and after a wrong attempt the trace notices ("26 is not 27, wait.") and
tries again only with probability `p_retry` (at most `max_attempts`). So the base model knows the format, the
arithmetic and the habit of re-checking, but uses the habit rarely and answers correctly seldom. Reinforcement
learning with the countdown reward can then raise accuracy by making the model check and retry more often and by
sharpening its first guesses: the response-length growth and the "wait" that R1-Zero reports, in miniature.

Chains are left-associative over the given numbers in some order, with non-negative integer intermediates
(subtraction only when it stays >= 0, division only when exact), so every step is integer arithmetic.
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
