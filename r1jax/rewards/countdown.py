"""Countdown reward (TinyZero / verl `countdown.py` convention), with a bounded parser of our own instead of `eval`.

Scores: 1.0 when the last `<answer>` holds an expression that uses each given number exactly once, only integers,
`+ - * / ( )` and whitespace, and evaluates to within 1e-5 of the target; 0.1 (the format score) for any other answer
(wrong value, wrong numbers, other characters, `**`, division by zero, too long or too deep); 0.0 without an answer.

Work is bounded before any arithmetic: at most MAX_EXPRESSION_CHARS characters, MAX_DEPTH nested parentheses/unary
signs, MAX_LITERAL_DIGITS digits per integer, and the literals must match the given numbers as a multiset, so the
exact `Fraction` arithmetic touches at most len(numbers) small integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from r1jax.rewards.answers import extract_answer

MAX_EXPRESSION_CHARS = 200
MAX_DEPTH = 32
MAX_LITERAL_DIGITS = 9
TOLERANCE = Fraction(1, 10**5)
FORMAT_SCORE = 0.1
CORRECT_SCORE = 1.0

_OPERATORS = frozenset("+-*/()")


class InvalidExpression(ValueError):
    """The expression is not a bounded `+ - * / ( )` arithmetic expression over integers."""


def tokenize(expression: str) -> list[int | str]:
    """Integers and single-character operators; raises InvalidExpression on anything else (or on `**`)."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise InvalidExpression(f"longer than {MAX_EXPRESSION_CHARS} characters")
    if "**" in expression:
        raise InvalidExpression("'**' is not allowed")
    tokens: list[int | str] = []
    i, n = 0, len(expression)
    while i < n:
        c = expression[i]
        if c in " \t\n\r":
            i += 1
        elif c in _OPERATORS:
            tokens.append(c)
            i += 1
        elif "0" <= c <= "9":  # ASCII digits only: str.isdigit() accepts '²' and friends
            j = i
            while j < n and "0" <= expression[j] <= "9":
                j += 1
            if j - i > MAX_LITERAL_DIGITS:
                raise InvalidExpression(f"integer literal longer than {MAX_LITERAL_DIGITS} digits")
            tokens.append(int(expression[i:j]))
            i = j
        else:
            raise InvalidExpression(f"character {c!r} is not allowed")
    return tokens


class _Parser:
    """Recursive descent over tokens: expr := term (('+'|'-') term)*; term := factor (('*'|'/') factor)*;
    factor := ('+'|'-') factor | '(' expr ')' | INT. Values are exact Fractions."""

    def __init__(self, tokens: list[int | str]):
        self.tokens, self.pos, self.depth = tokens, 0, 0

    def peek(self) -> int | str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> int | str | None:
        token = self.peek()
        self.pos += 1
        return token

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            value = value + self.term() if self.take() == "+" else value - self.term()
        return value

    def term(self) -> Fraction:
        value = self.factor()
        while self.peek() in ("*", "/"):
            if self.take() == "*":
                value = value * self.factor()
            else:
                divisor = self.factor()
                if divisor == 0:
                    raise InvalidExpression("division by zero")
                value = value / divisor
        return value

    def factor(self) -> Fraction:
        token = self.take()
        if isinstance(token, int):
            return Fraction(token)
        if token in ("+", "-", "("):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise InvalidExpression(f"nested deeper than {MAX_DEPTH}")
            if token == "(":
                value = self.expr()
                if self.take() != ")":
                    raise InvalidExpression("unbalanced parentheses")
            else:
                value = self.factor() if token == "+" else -self.factor()
            self.depth -= 1
            return value
        raise InvalidExpression(f"unexpected token {token!r}")


def evaluate(expression: str) -> Fraction:
    """Exact value of a bounded arithmetic expression; raises InvalidExpression when it is not one."""
    tokens = tokenize(expression)
    parser = _Parser(tokens)
    value = parser.expr()
    if parser.pos != len(tokens):
        raise InvalidExpression(f"unexpected token {parser.peek()!r}")
    return value


def expression_numbers(expression: str) -> list[int]:
    """The integer literals of the expression, in order (raises InvalidExpression like `tokenize`)."""
    return [t for t in tokenize(expression) if isinstance(t, int)]


def check_equation(expression: str, numbers: Sequence[int], target: int | float) -> bool:
    """True iff the expression uses each of `numbers` exactly once and evaluates within 1e-5 of `target`."""
    try:
        tokens = tokenize(expression)
        if sorted(t for t in tokens if isinstance(t, int)) != sorted(int(x) for x in numbers):
            return False
        return abs(evaluate(expression) - Fraction(target)) < TOLERANCE
    except InvalidExpression:
        return False


def countdown_reward(
    completion: str,
    numbers: Sequence[int],
    target: int | float,
    *,
    format_score: float = FORMAT_SCORE,
    correct_score: float = CORRECT_SCORE,
) -> dict[str, float]:
    """Scores the last `<answer>` expression of a completion.

    Returns {'countdown': correct_score | format_score | 0.0, 'accuracy': 1.0 | 0.0}. `\\boxed{}` is not read: the
    TinyZero convention asks for the equation inside `<answer>` tags.
    """
    answer = extract_answer(completion, allow_boxed=False)
    if answer is None:
        return {"countdown": 0.0, "accuracy": 0.0}
    if check_equation(answer, numbers, target):
        return {"countdown": correct_score, "accuracy": 1.0}
    return {"countdown": format_score, "accuracy": 0.0}
