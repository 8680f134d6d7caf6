import json
import pickle
import sys

import pytest

from r1jax.data import tfds_benchmarks as tb


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def dirs(tmp_path):
    return tmp_path / "manual", tmp_path / "data"


def test_gsm8k_prepares_and_reads_back_in_file_order(dirs):
    manual, data = dirs
    rows = [{"question": f"Q{i}: Tom has {i} apples. ü", "answer": f"He has {i}.\n#### {i}"} for i in range(11)]
    rows[3]["answer"] = "72"  # no '####': the whole field is the answer
    _write_jsonl(manual / "gsm8k" / "test.jsonl", rows)
    with open(manual / "gsm8k" / "test.jsonl", "a", encoding="utf-8") as f:
        f.write("\n")  # a trailing blank line is skipped
    src = tb.load_benchmark("gsm8k", manual, data)
    assert len(src) == 11
    got = list(src)
    assert [r["question"] for r in got] == [r["question"] for r in rows]
    assert got[0] == {"id": "test-1", "question": "Q0: Tom has 0 apples. ü", "answer": "0", "solution": "He has 0."}
    assert got[3]["answer"] == "72" and got[3]["solution"] == ""
    assert all(isinstance(v, str) for r in got for v in r.values())
    assert "tensorflow" not in sys.modules


def test_grain_reads_the_source(dirs):
    import grain

    manual, data = dirs
    _write_jsonl(manual / "aime" / "aime24.jsonl",
                 [{"id": 7, "problem": "Find n.", "answer": 204}, {"Problem": "Find m.", "Answer": "033",
                                                                   "Solution": "m = 33"}])
    _write_jsonl(manual / "aime" / "aime25.jsonl", [{"question": "Find k.", "answer": "5"}])
    with pytest.raises(ValueError, match="pass split="):
        tb.load_benchmark("aime", manual, data)
    src = tb.load_benchmark("aime", manual, data, split="aime24")
    ds = grain.MapDataset.source(src).map(lambda r: r["answer"])
    assert list(ds) == ["204", "033"]
    assert src[0]["id"] == "7" and src[1] == {"id": "aime24-2", "question": "Find m.", "answer": "033",
                                              "solution": "m = 33"}
    assert tb.load_benchmark("aime", manual, data, split="aime25")[0]["question"] == "Find k."
    assert pickle.loads(pickle.dumps(src))[1]["answer"] == "033"  # grain workers pickle their source
    with pytest.raises(ValueError, match="no split 'aime26'"):
        tb.load_benchmark("aime", manual, data, split="aime26")


def test_math500_answer_or_solution(dirs):
    manual, data = dirs
    _write_jsonl(manual / "math500" / "test.jsonl", [
        {"problem": "What is $\\frac12+\\frac12$?", "answer": "1", "solution": "... $\\boxed{1}$", "unique_id": "a/1"},
        {"problem": "Compute $2^3$.", "solution": "We get $\\boxed{8}$."},
    ])
    with pytest.raises(ValueError, match="gold_from_solution"):
        tb.load_benchmark("math500", manual, data)
    src = tb.load_benchmark("math500", manual, data, gold_from_solution=lambda s: "8" if "boxed{8}" in s else None)
    assert src[0] == {"id": "a/1", "question": "What is $\\frac12+\\frac12$?", "answer": "1",
                      "solution": "... $\\boxed{1}$"}
    assert src[1]["answer"] == "8" and src[1]["solution"] == "We get $\\boxed{8}$."


def test_gpqa_both_formats(dirs):
    manual, data = dirs
    original = {"Question": "Which is a noble gas?", "Correct Answer": " Neon ", "Incorrect Answer 1": "Iron",
                "Incorrect Answer 2": "Sodium", "Incorrect Answer 3": "Carbon", "Explanation": "Group 18.",
                "Record ID": "rec1"}
    _write_jsonl(manual / "gpqa" / "diamond.jsonl", [
        original,
        {"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": "b"},
        {"question": "1+1?", "choices": ["2", "3", "4", "5"], "answer": 0},
        {"question": "3+3?", "choices": ["5", "7", "6", "8"], "answer": "6"},
    ])
    src = tb.load_benchmark("gpqa", manual, data)
    r = src[0]
    order = tb.gpqa_order("Which is a noble gas?")
    assert sorted(order) == [0, 1, 2, 3]
    assert r["choices"][order.index(0)] == "Neon" and r["answer"] == "ABCD"[order.index(0)]
    assert sorted(r["choices"]) == ["Carbon", "Iron", "Neon", "Sodium"]
    assert r["id"] == "rec1" and r["solution"] == "Group 18."
    assert [src[i]["answer"] for i in (1, 2, 3)] == ["B", "A", "C"]
    assert src[1]["choices"] == ["3", "4", "5", "6"]
    # the shuffle is seeded: same question, same order; different seeds give different orders for some question
    assert tb.gpqa_order("Which is a noble gas?") == order
    assert any(tb.gpqa_order(f"q{i}") != tb.gpqa_order(f"q{i}", seed=1) for i in range(5))
    assert len({tuple(tb.gpqa_order(f"q{i}")) for i in range(40)}) > 5


def test_reprepares_when_sources_change(dirs):
    manual, data = dirs
    path = manual / "aime" / "test.jsonl"
    _write_jsonl(path, [{"problem": "old", "answer": "1"}])
    assert tb.load_benchmark("aime", manual, data)[0]["question"] == "old"
    assert tb.load_benchmark("aime", manual, data)[0]["question"] == "old"  # reuses
    _write_jsonl(path, [{"problem": "new", "answer": "2"}, {"problem": "newer", "answer": "3"}])
    src = tb.load_benchmark("aime", manual, data)
    assert len(src) == 2 and src[0]["question"] == "new"


@pytest.mark.parametrize("config,row,match", [
    ("gsm8k", {"question": "q", "answer": "x ####  "}, "empty answer"),
    ("gsm8k", {"question": "q"}, "none of the fields"),
    ("math500", {"problem": "p"}, "needs 'answer' or 'solution'"),
    ("aime", {"problem": "p", "answer": ["1"]}, "text or a number"),
    ("gpqa", {"question": "q", "choices": ["a", "b"], "answer": "A"}, "4 strings"),
    ("gpqa", {"question": "q", "choices": ["a", "b", "c", "d"], "answer": "E"}, "letter A-D"),
    ("gpqa", {"Question": "q", "Correct Answer": "a", "Incorrect Answer 1": "b"}, "Incorrect Answer 2"),
])
def test_bad_rows_name_file_and_line(dirs, config, row, match):
    manual, data = dirs
    _write_jsonl(manual / config / "test.jsonl", [row])
    with pytest.raises(ValueError, match=match) as e:
        tb.load_benchmark(config, manual, data)
    assert "test.jsonl:1" in str(e.value)


def test_missing_files_and_unknown_names(dirs):
    manual, data = dirs
    with pytest.raises(FileNotFoundError, match="gsm8k"):
        tb.load_benchmark("gsm8k", manual, data)
    with pytest.raises(ValueError, match="known"):
        tb.load_benchmark("mmlu", manual, data)
    (manual / "aime").mkdir(parents=True)
    (manual / "aime" / "t.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="t.jsonl:1: not valid JSON"):
        tb.load_benchmark("aime", manual, data)
