"""Language consistency (R1 eq. 7) and length shaping (DAPO overlong, cosine scaling)."""

import pytest

from r1jax.rewards.language import language_consistency
from r1jax.rewards.length import cosine_scaled_reward, overlong_penalty


@pytest.mark.parametrize(
    "text, target, expected",
    [
        ("Let me think about this problem.", "en", 1.0),
        ("hello 世界", "en", 1 / 3),  # each CJK character is a word
        ("hello 世界", "zh", 2 / 3),
        ("我们来计算一下", "zh", 1.0),
        ("我们 compute", "zh", 2 / 3),
        ("Сначала посчитаем, then add", "en", 2 / 4),  # Cyrillic words are not English
        ("café au lait", "en", 2 / 3),  # 'en' means ASCII Latin letters only
        ("x^2 + 3 = 12, so x = 3", "en", 1.0),  # single letters count as (English) words
        ("", "en", 1.0),  # no words: nothing inconsistent
        ("1 + 2 = 3 \\frac{1}{2} $$", "en", 1.0),  # 'frac' is a word
        ("123 456 !!!", "zh", 1.0),
    ],
)
def test_language_consistency(text, target, expected):
    assert language_consistency(text, target) == pytest.approx(expected)


def test_language_consistency_bounds_and_errors():
    assert 0.0 <= language_consistency("a 字 " * 100_000) <= 1.0
    with pytest.raises(ValueError, match="known: en, zh"):
        language_consistency("text", "fr")


@pytest.mark.parametrize(
    "length, expected",
    [(0, 0.0), (700, 0.0), (800, 0.0), (850, -0.25), (900, -0.5), (1000, -1.0), (5000, -1.0)],
)
def test_overlong_penalty(length, expected):
    assert overlong_penalty(length, max_length=1000, buffer=200) == pytest.approx(expected)


@pytest.mark.parametrize("max_length, buffer", [(100, 0), (100, 101), (100, -5)])
def test_overlong_penalty_rejects_bad_buffers(max_length, buffer):
    with pytest.raises(ValueError):
        overlong_penalty(10, max_length, buffer)


def test_cosine_scaled_reward_endpoints_and_order():
    assert cosine_scaled_reward(True, 0, 1000) == pytest.approx(1.0)
    assert cosine_scaled_reward(True, 1000, 1000) == pytest.approx(0.5)
    assert cosine_scaled_reward(False, 0, 1000) == pytest.approx(-1.0)
    assert cosine_scaled_reward(False, 1000, 1000) == pytest.approx(-0.5)
    assert cosine_scaled_reward(True, 5000, 1000) == pytest.approx(0.5)  # clipped
    correct = [cosine_scaled_reward(True, n, 1000) for n in range(0, 1001, 100)]
    wrong = [cosine_scaled_reward(False, n, 1000) for n in range(0, 1001, 100)]
    assert correct == sorted(correct, reverse=True)  # shorter correct answers earn more
    assert wrong == sorted(wrong)  # longer wrong answers are punished less
    assert min(correct) > max(wrong)


def test_language_reads_a_capped_length():
    import time

    from r1jax.rewards.language import MAX_CHARS

    text = "word " * 2_000_000  # 10 MB
    start = time.perf_counter()
    assert language_consistency(text + "中" * 10) == 1.0  # the tail past the cap is not read
    assert time.perf_counter() - start < 0.5
    assert language_consistency("中" * 10, max_chars=MAX_CHARS) == 0.0
