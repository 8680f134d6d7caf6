"""Answer extraction: the normal cases, the adversarial ones, and its bounds."""

import pytest

from r1jax.rewards.answers import (
    MAX_SCAN_CHARS,
    extract_answer,
    extract_boxed,
    extract_choice,
    extract_last_number,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>x</think><answer> 42 </answer>", "42"),
        ("<answer>1</answer> then <answer>2</answer>", "2"),  # the last one
        ("<answer><answer>5</answer></answer>", "5"),  # innermost pair
        ("<answer>5</answer> and an unclosed <answer>6", "5"),
        ("<answer></answer>", ""),
        ("<answer>\\boxed{7}</answer>", "\\boxed{7}"),  # tag wins; math parsing reads the box
        ("so the answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{a{b}c}", "a{b}c"),  # balanced braces
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not count
        ("\\boxed{3} and a truncated \\boxed{\\frac{1}{", "3"),  # unbalanced last box: fall back
        ("\\boxed 7 apples", "7"),
        ("\\fbox{9}", "9"),
        ("no answer here", None),
        ("", None),
        ("<answer>", None),
        ("</answer><answer>", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_can_ignore_boxes():
    assert extract_answer("\\boxed{3}", allow_boxed=False) is None


def test_extract_answer_on_invalid_utf8_replaced_upstream():
    text = b"\xff\xfe garbage \xc3<answer>5</answer>\x80".decode("utf-8", errors="replace")
    assert extract_answer(text) == "5"


@pytest.mark.parametrize(
    "text",
    [
        "x" * 1_000_000 + "<answer>42</answer>",
        "<answer>" * 200_000 + "42</answer>",
        "</answer>" * 200_000 + "<answer>42</answer>",
        "\\boxed{" * 200_000 + "42}",
        "{" * 500_000 + "<answer>42</answer>",
    ],
    ids=["megabyte", "many_opens", "many_closes", "many_boxes", "many_braces"],
)
def test_extract_answer_adversarial_inputs_still_answer(text):
    assert extract_answer(text) == "42"


def test_extract_answer_only_scans_the_tail():
    # An answer further than MAX_SCAN_CHARS from the end is not seen: the scan is bounded by design.
    assert extract_answer("<answer>1</answer>" + " " * (MAX_SCAN_CHARS + 10)) is None


def test_unbalanced_boxes_are_bounded():
    assert extract_boxed("\\boxed{" * 100_000) is None
    assert extract_boxed("\\boxed{" + "{" * 1_000_000) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("We get 12 apples, then 1,234.5 pears.", "1234.5"),
        ("The change is -3 dollars", "-3"),
        ("1,2,3", "3"),  # not a thousands separator
        ("#### 72", "72"),
        ("no digits", None),
        pytest.param("9" * 100_000, "9" * MAX_SCAN_CHARS, id="long_number"),
    ],
)
def test_extract_last_number(text, expected):
    assert extract_last_number(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>C</answer>", "C"),
        ("<answer>(B)</answer>", "B"),
        ("<answer>\\text{D}</answer>", "D"),
        ("<answer>**A**. Nitrogen</answer>", "A"),
        ("so \\boxed{C}", "C"),
        ("Therefore, the answer is (C).", "C"),
        ("Answer: **B**", "B"),
        ("The final answer is $\\boxed{D}$", "D"),
        ("the answer is a number, so I pick (D)", "D"),  # lowercase 'a' is not a choice
        ("Option (A) is wrong; (C) fits.", "C"),
        ("I think it is B", "B"),
        ("<answer>Carbon</answer> so B", "B"),  # a word in the tag is not a letter; fall back
        ("nothing to choose", None),
        ("the answer is E", None),  # outside ABCD
    ],
)
def test_extract_choice(text, expected):
    assert extract_choice(text) == expected


def test_extract_choice_other_letter_sets():
    assert extract_choice("the answer is E", letters="ABCDE") == "E"


@pytest.mark.parametrize(
    "text,want",
    [
        ("answer" + " " * 1_000_000, None),    # a cue with nothing after it
        ("answer is " * 100_000, None),        # cues chained, never a letter
        ("(A) " * 250_000, "A"),               # one letter, repeated: still that letter
        ("A" * 1_000_000, None),               # not a standalone letter
        ("\\boxed{" * 100_000, None),          # unclosed boxes
    ],
    ids=["whitespace", "phrases", "parenthesised", "letters", "boxes"],
)
def test_extract_choice_adversarial_inputs_terminate(text, want):
    assert extract_choice(text) == want  # returns (bounded work: no catastrophic backtracking) with the right reading
