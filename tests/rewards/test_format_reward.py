"""Format rewards: the R1-Zero shape, tag counting, and R1's readable `thinking</think>summary` split."""

import pytest

from r1jax.rewards.format import (format_reward, parse_reasoning, reasoning_format_reward, summary_prose,
                                  tag_count_reward)


@pytest.mark.parametrize(
    "completion",
    [
        "<think>reasoning</think><answer>42</answer>",
        "<think> reasoning </think> <answer> 42 </answer>",
        "\n  <think>\nline 1\nline 2\n</think>\n\n<answer>\n42\n</answer>\n",
        "<think></think><answer></answer>",  # contents are the accuracy reward's business
        "<think>3 < 4 and 5 > 2</think><answer>x</answer>",
    ],
)
def test_format_reward_accepts_r1_zero_shape(completion):
    assert format_reward(completion) == 1.0


@pytest.mark.parametrize(
    "completion",
    [
        "",
        "42",
        "<think>reasoning</think>",
        "<answer>42</answer>",
        "<think>reasoning</think> so <answer>42</answer>",  # text between the blocks
        "Sure! <think>r</think><answer>42</answer>",  # text before
        "<think>r</think><answer>42</answer> done",  # text after
        "<answer>42</answer><think>r</think>",  # wrong order
        "<think><think>nested</think></think><answer>42</answer>",  # nested think
        "<think>r</think><answer><answer>42</answer></answer>",  # nested answer
        "<think>r</think><answer>1</answer><answer>2</answer>",  # two answers
        "<think>r</answer></think><answer>42</answer>",  # stray closing tag inside
        "<think>r</think><answer>42",  # unclosed
        "<THINK>r</THINK><ANSWER>42</ANSWER>",  # tags are case-sensitive
    ],
)
def test_format_reward_rejects_everything_else(completion):
    assert format_reward(completion) == 0.0


def test_format_reward_with_prefilled_think():
    assert format_reward("reasoning</think> <answer>42</answer>", think_prefilled=True) == 1.0
    assert format_reward("<think>reasoning</think> <answer>42</answer>", think_prefilled=True) == 0.0


def test_format_reward_on_a_megabyte():
    body = "x" * 1_000_000
    assert format_reward(f"<think>{body}</think><answer>1</answer>") == 1.0
    assert format_reward("<think>" * 200_000) == 0.0


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think>r</think><answer>42</answer>", 1.0),
        ("<think>r</think>", 0.5),
        ("<think><think>r</think><answer>42</answer>", 0.75),
        ("no tags", 0.0),
        ("<answer></answer><answer></answer>", 0.0),
    ],
)
def test_tag_count_reward(completion, expected):
    assert tag_count_reward(completion) == expected


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think> let me see </think> The answer is 4.", ("let me see", "The answer is 4.")),
        ("plan</think>summary", ("plan", "summary")),
        ("<think>a</think>b</think>c", ("a", "b</think>c")),  # split at the first </think>
        ("<think>still thinking", ("still thinking", "")),  # truncated: all thinking
        ("Just an answer.", ("", "Just an answer.")),  # as R1's chat template: all summary
        ("", ("", "")),
    ],
)
def test_parse_reasoning(completion, expected):
    assert parse_reasoning(completion) == expected


def test_parse_reasoning_with_prefilled_think():
    assert parse_reasoning("still thinking", think_prefilled=True) == ("still thinking", "")


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think>reasoning</think>\nThe answer is \\boxed{4}.", 1.0),
        ("reasoning</think>The answer is 4.", 1.0),
        ("<think>reasoning</think>   ", 0.0),  # no summary
        ("<think>reasoning", 0.0),
        ("<think>a</think>b</think>c", 0.0),
        ("x<think>a</think>b", 0.0),
        ("<think><think>a</think>b", 0.0),
        ("<think>reasoning</think> The answer is <answer>4</answer>.", 1.0),
        ("<think>reasoning</think> 答案是 <answer>4</answer>", 1.0),  # prose in any script
        ("<think>reasoning</think> <answer>4</answer>", 0.0),  # R1-Zero's shape: an answer, no summary
        ("<think>reasoning</think> <answer>the answer is 4</answer>", 0.0),  # words only inside the answer
        ("<think>reasoning</think> \\boxed{4}", 0.0),  # a bare boxed answer
        ("<think>reasoning</think> 4 = 2+2.", 0.0),  # no word
        ("<think>reasoning</think> <answer>4", 0.0),  # an unclosed answer runs to the end
    ],
)
def test_reasoning_format_reward(completion, expected):
    assert reasoning_format_reward(completion) == expected


def test_summary_prose_drops_answer_blocks_and_latex_commands():
    assert summary_prose("So <answer>x</answer> and <answer>y</answer> done").split() == ["So", "and", "done"]
    assert summary_prose("Hence \\boxed{4}.").split() == ["Hence", "{4}."]
    assert summary_prose("<answer>" * 100_000) == ""  # linear: one find per block


def test_reasoning_format_reward_on_a_megabyte():
    assert reasoning_format_reward("<think>" + "x" * 1_000_000 + "</think> Done.") == 1.0
    assert reasoning_format_reward("<think>r</think> " + "<answer>1</answer>" * 50_000) == 0.0
