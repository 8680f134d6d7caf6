"""Evaluation: pass@k against the closed form, cons@k voting and tie-breaking, what evaluation adds to answer
extraction, scoring through evaluate_task with a scripted sampler, TFDS == JSONL examples, and the CLI end to end on
a random-weight smoke checkpoint (countdown + a GSM8K JSONL file)."""
import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import evaluate as eval_configs
from experiments import evaluate as eval_main
from r1jax import evaluation
from r1jax.data.tasks import Gsm8kTask, get_task
from r1jax.sampling import Completions
from r1jax.tokenizer import ByteTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GSM8K_ROWS = [
    {"question": "Mia has 3 boxes of 9 pencils. How many pencils?", "answer": "3 * 9 = 27\n#### 27"},
    {"question": "A shop sells 1,000 pens and 234 pencils. How many items?", "answer": "1000 + 234\n#### 1,234"},
    {"question": "Tom has 5 apples and eats 2. How many are left?", "answer": "5 - 2 = 3\n#### 3"},
]


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@dataclasses.dataclass
class FakeTask:
    """Verifier stand-in: accuracy 1 when the sample's answer is the gold; voting by exact text."""
    answer_kind: str = "integer"
    name: str = "fake"


def _record(answers, scores, gold="7"):
    n = len(answers)
    return {"answers": answers, "scores": scores, "gold": gold, "format": [1.0] * n, "lengths": [10] * n}


def _exact(a, b):
    return a == b


# ---------------------------------------------------------------------------------------------------- pass@k


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_pass_at_k_matches_the_closed_form(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            closed = 1.0 - math.comb(n - c, k) / math.comb(n, k)
            record = _record(["1"] * c + ["0"] * (n - c), [1.0] * c + [0.0] * (n - c))
            summary = evaluation.summarize([record], FakeTask(), range(1, n + 1), _exact)
            assert summary["pass@1"] == pytest.approx(c / n)
            if k > 1:
                assert summary[f"pass@{k}"] == pytest.approx(closed, abs=1e-12), (n, c, k)
            assert f"pass@{n + 1}" not in summary  # cannot be estimated from n samples


def test_pass_at_k_averages_over_problems_and_ignores_partial_scores():
    records = [_record(["1", "0", "0", "0"], [1.0, 0.0, 0.0, 0.0]),
               _record(["1", "1", "0", "0"], [1.0, 1.0, 0.1, 0.1])]  # 0.1: countdown-style partial credit
    s = evaluation.summarize(records, FakeTask(), (1, 2, 4), _exact)
    assert s["pass@1"] == pytest.approx((0.25 + 0.55) / 2)
    assert s["pass@2"] == pytest.approx(((1 - 3 / 6) + (1 - 1 / 6)) / 2)
    assert s["pass@4"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------------- cons@k


@pytest.mark.parametrize("answers, scores, cons, majority", [
    (["7", "5", "5", "7"], [1, 0, 0, 1], 1.0, "7"),        # 2-2 tie: the answer seen first wins
    (["5", "7", "7", "5"], [0, 1, 1, 0], 0.0, "5"),        # same votes, other order: the other answer
    (["5", "7", "7", "5", "7"], [0, 1, 1, 0, 1], 1.0, "7"),  # a clear majority beats the first answer
    ([None, None, None, "5"], [0, 0, 0, 0], 0.0, "5"),     # no answer never votes
    ([None, None, "7", "5", "5"], [0, 0, 1, 0, 0], 0.0, "5"),
    ([None, None], [0, 0], 0.0, None),                     # nobody answered: cons 0
])
def test_cons_majority_and_deterministic_tie_break(answers, scores, cons, majority):
    record = _record(answers, [float(s) for s in scores])
    summary = evaluation.summarize([record], FakeTask(), (1,), _exact)
    assert summary[f"cons@{len(answers)}"] == cons
    assert evaluation.vote(record, _exact)["majority"] == majority
    # Deterministic: the same records give the same result however often they are summarized.
    assert evaluation.summarize([record] * 3, FakeTask(), (1,), _exact)[f"cons@{len(answers)}"] == cons


def test_cons_scores_the_winner_through_the_verifier_not_the_gold_string():
    # Countdown-style: two different valid equations; the vote is over the text, the verifier's score decides.
    record = _record(["1+2*3", "2*3+1", "2*3+1"], [1.0, 1.0, 1.0], gold="7")
    assert evaluation.summarize([record], FakeTask("countdown"), (1,), _exact)["cons@3"] == 1.0


def test_cons_clusters_math_answers_by_math_verify():
    task = FakeTask("math")
    equivalent = evaluation.equivalence(task)
    # {1/2, 0.5} and {3, 3.0} tie 2-2; the cluster whose first answer came first wins, scored by its first sample.
    record = _record(["\\frac{1}{2}", "3", "0.5", "3.0"], [1.0, 0.0, 1.0, 0.0], gold="1/2")
    assert evaluation.vote(record, equivalent) == {"majority": "\\frac{1}{2}", "majority_votes": 2, "cons": 1.0}
    record = _record(["3", "\\frac{1}{2}", "0.5", "3.0", "1/2"], [0.0, 1.0, 1.0, 0.0, 1.0], gold="1/2")
    assert evaluation.vote(record, equivalent)["majority_votes"] == 3
    assert evaluation.summarize([record], task, (1,), equivalent)["cons@5"] == 1.0


def test_summarize_reuses_the_vote_evaluate_task_stored_and_fails_loudly():
    record = _record(["5", "5"], [0.0, 0.0])
    assert evaluation.summarize([{**record, "cons": 1.0}], FakeTask(), (1,), _exact)["cons@2"] == 1.0
    with pytest.raises(ValueError, match="no records"):
        evaluation.summarize([], FakeTask(), (1,), _exact)


# ---------------------------------------------------------------------------------------------------- ladder, CIs


def test_summary_reports_the_k_ladder_and_cons_from_the_first_k_samples():
    # 16 samples; the first 4 vote "7" (right) 3 to 1, the rest mostly "5" (wrong): cons@2/4 right, cons@8/16 wrong.
    answers = ["7", "7", "7", "5", "5", "5", "5", "5", "5", "5", "5", "7", "5", "5", "5", "5"]
    record = _record(answers, [float(a == "7") for a in answers])
    s = evaluation.summarize([record], FakeTask(), (1,), _exact)
    assert [k for k in s if k.startswith(("pass@", "cons@"))] == [
        "pass@1", "pass@2", "pass@4", "pass@8", "pass@16", "cons@2", "cons@4", "cons@8", "cons@16"]
    assert (s["cons@2"], s["cons@4"], s["cons@8"], s["cons@16"]) == (1.0, 1.0, 0.0, 0.0)
    assert s["pass@16"] == 1.0 and s["pass@8"] == pytest.approx(1 - math.comb(12, 8) / math.comb(16, 8))
    few = evaluation.summarize([_record(["7"] * 3, [1.0] * 3)], FakeTask(), (3,), _exact)
    assert [k for k in few if k.startswith(("pass@", "cons@"))] == ["pass@1", "pass@2", "pass@3", "cons@2", "cons@3"]


def test_summary_intervals_are_bootstraps_over_problems():
    from r1jax import metrics_eval
    records = [_record(["7", "7"], [1.0, 1.0]) for _ in range(5)] + [_record(["5", "7"], [0.0, 1.0])] * 5
    s = evaluation.summarize(records, FakeTask(), (1, 2), _exact)
    assert set(s["ci"]) == {"pass@1", "pass@2", "cons@2"}
    assert s["ci"]["pass@1"] == list(metrics_eval.bootstrap_ci([1.0] * 5 + [0.5] * 5)[1:])
    assert s["ci"]["pass@2"] == [1.0, 1.0]  # every problem solved within 2: zero width
    lo, hi = s["ci"]["cons@2"]
    assert lo < s["cons@2"] < hi
    assert "ci" not in evaluation.summarize(records, FakeTask(), (1,), _exact, ci_resamples=0)
    table = evaluation.markdown_table([{"model": "after", **s}])
    assert "| model | num_problems |" in table and "| ci |" not in table and "{" not in table
    assert f"| {s['pass@1']:.3f} [{s['ci']['pass@1'][0]:.3f}, {s['ci']['pass@1'][1]:.3f}] |" in table
    assert "| 1.000 [1.000, 1.000] |" in table


# ---------------------------------------------------------------------------------------------------- answers


def test_answer_of_follows_each_verifier():
    countdown, integer, math_task, choice = (get_task("countdown", num_train=1, num_test=1), get_task("arithmetic"),
                                             FakeTask("math"), get_task("gpqa"))
    # countdown reads only <answer> (as its reward does); whitespace does not split the vote
    assert evaluation.answer_of(countdown, "<think>x</think> \\boxed{1+2}") is None
    assert evaluation.answer_of(countdown, "<answer> (1 + 2) * 3 </answer>") == "(1+2)*3"
    # integers in canonical form, so "1,234." and "1234" vote together; non-integers keep their text
    assert evaluation.answer_of(integer, "<answer> 1,234. </answer>") == "1234"
    assert evaluation.answer_of(integer, "<answer>0042</answer>") == "42"
    assert evaluation.answer_of(integer, "<answer>forty two</answer>") == "forty two"
    # math: <answer> first, then the last balanced \boxed{}; whitespace runs collapsed
    assert evaluation.answer_of(math_task, "so \\boxed{\\frac{1}{2}\n  + x}") == "\\frac{1}{2} + x"
    assert evaluation.answer_of(math_task, "\\boxed{9} <answer>\n4\n</answer>") == "4"
    # multiple choice over the example's own letters
    assert evaluation.answer_of(choice, "The answer is (E).", {"letters": "ABCDE"}) == "E"
    assert evaluation.answer_of(choice, "The answer is (E).", {"letters": "ABCD"}) is None
    assert evaluation.answer_of(choice, "<answer>\\text{C}</answer>") == "C"


@pytest.mark.parametrize("text, expected", [
    ("<think>maybe <answer>1</answer>?</think> <answer>2</answer>", "2"),  # the last answer, not one in the thinking
    ("<answer>3</answer> then <answer>4", "3"),                            # a trailing unclosed tag is not an answer
    ("<answer><answer>5</answer></answer>", "5"),
    ("<answer></answer>", ""),                                              # an empty answer is an answer ("")
    ("<answer>" * 200_000 + "6", None),                                      # 1.6 MB of opening tags, no answer
    ("x" * 1_000_000 + "<answer>7</answer>", "7"),                           # long outputs: the tail is read
    ("\\boxed{" * 5000 + "8", None),                                         # unbalanced boxes
], ids=["thinking", "unclosed", "nested", "empty", "many_opens", "long", "unbalanced_boxes"])
def test_answer_of_adversarial(text, expected):
    assert evaluation.answer_of(FakeTask("math"), text) == expected


def test_completion_text_cuts_at_the_stop_token_and_keeps_the_prefix():
    tok = ByteTokenizer()
    ids = tok.encode("x</think> <answer>5</answer>") + [tok.eos_id] + tok.encode("<answer>6</answer>")
    text = evaluation.completion_text(tok, ids, ids.index(tok.eos_id) + 1, "<think>")
    assert text == "<think>x</think> <answer>5</answer>"
    assert evaluation.answer_of(FakeTask(), text) == "5"
    # An id past the tokenizer's vocabulary (a padded embedding table) reads as U+FFFD and is counted.
    ids = tok.encode("<answer>") + [tok.vocab_size + 3] + tok.encode("5</answer>")
    assert evaluation.completion_text(tok, ids, len(ids), "") == "<answer>\ufffd5</answer>"
    tokens = np.array([ids, ids], np.int32)
    assert evaluation._oov_samples(tok, tokens, np.array([len(ids), 1])).tolist() == [True, False]
    records = [{**_record(["5", "5"], [0.0, 0.0]), "oov": [True, False]}, _record(["5", "5"], [0.0, 0.0])]
    assert evaluation.summarize(records, FakeTask(), (1,), _exact)["oov_rate"] == 0.25
    assert "oov_rate" not in evaluation.summarize(records[1:], FakeTask(), (1,), _exact)


# ---------------------------------------------------------------------------------------------------- evaluate_task


def _scripted_sampler(tok, script, max_new):
    """A stand-in for `sampling.sample` that 'generates' the given texts (row-major), ending each with eos unless it
    is longer than max_new (then cut: truncated)."""
    def fake_sample(params, cfg, ids, sampling, rng, mesh=None, vocab_limit=None):
        rows = [tok.encode(t) + [tok.eos_id] for t in script[: len(ids) * sampling.n]]
        assert len(rows) == len(ids) * sampling.n
        tokens = np.full((len(rows), max_new), tok.pad_id, np.int32)
        lengths, finished = [], []
        for r, row in enumerate(rows):
            row = row[:max_new]
            tokens[r, :len(row)] = row
            lengths.append(len(row))
            finished.append(row[-1] == tok.eos_id)
        del script[: len(rows)]
        return Completions(tokens, np.zeros(tokens.shape, np.float32), np.array(lengths), np.array(finished))
    return fake_sample


def test_evaluate_task_scores_every_sample(tmp_path, monkeypatch, capsys):
    tok = ByteTokenizer()
    task = Gsm8kTask(test_path=_write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS[:2]))
    examples = task.test_examples()
    assert [e["answer"] for e in examples] == ["27", "1234"]
    script = [
        " 3*9 </think> <answer>27</answer>", "<answer>27.0</answer>", "<answer>26</answer>", "no idea",
        "<answer>5</answer>", "</think> <answer>1234</answer>", "<answer>5</answer>",
        "<answer>" + "1" * 64 + "</answer>",  # cut at max_new_tokens: no closing tag, no answer
    ]
    monkeypatch.setattr(evaluation, "sample", _scripted_sampler(tok, script, max_new=48))
    ecfg = evaluation.EvalConfig(k=4, max_new_tokens=48, template="r1_zero_short", ks=(1, 2, 4), prompts_per_batch=1)
    summary, records = evaluation.evaluate_task(None, None, tok, task, examples, ecfg)
    progress = capsys.readouterr().err.splitlines()
    assert progress[-1].startswith("eval gsm8k 8/8 (100%)") and "pass@1=0.375" in progress[-1]
    r0, r1 = records
    assert r0["samples"][0] == "<think> 3*9 </think> <answer>27</answer>"  # the template's '<think>' prefix kept
    assert r0["answers"] == ["27", "27.0", "26", None] and r0["scores"] == [1.0, 1.0, 0.0, 0.0]
    assert r0["format"] == [1.0, 0.0, 0.0, 0.0] and r0["majority"] == "27" and r0["cons"] == 1.0
    assert r1["answers"] == ["5", "1234", "5", None] and r1["scores"] == [0.0, 1.0, 0.0, 0.0]
    assert r1["finished"] == [True, True, True, False] and r1["lengths"][3] == 48
    assert r1["majority"] == "5" and r1["majority_votes"] == 2 and r1["cons"] == 0.0
    assert summary["num_problems"] == 2 and summary["samples_per_problem"] == 4
    assert summary["pass@1"] == pytest.approx((0.5 + 0.25) / 2)
    assert summary["pass@2"] == pytest.approx(((1 - 1 / 6) + (1 - 3 / 6)) / 2)
    assert summary["pass@4"] == 1.0 and summary["cons@4"] == 0.5
    assert summary["answer_rate"] == pytest.approx(6 / 8) and summary["truncated_rate"] == pytest.approx(1 / 8)
    assert r1["format"] == [0.0, 1.0, 0.0, 0.0] and summary["format_rate"] == pytest.approx(2 / 8)
    assert summary["mean_length"] == pytest.approx(np.mean(r0["lengths"] + r1["lengths"]))
    with pytest.raises(ValueError, match="no examples"):
        evaluation.evaluate_task(None, None, tok, task, [], ecfg)
    script += ["<answer>27</answer>"] * 4
    evaluation.evaluate_task(None, None, tok, task, examples[:1], dataclasses.replace(ecfg, progress=False))
    assert capsys.readouterr().err == ""


def test_task_benchmarks_take_a_split():
    kwargs = dict(num_train=10, num_test=6, num_ood=5, min_numbers=3, max_numbers=3, max_value=15)
    _, test = evaluation.benchmark_examples(evaluation.Benchmark("cd", "countdown", task_kwargs=kwargs))
    _, ood = evaluation.benchmark_examples(evaluation.Benchmark("cd", "countdown", split="ood", task_kwargs=kwargs))
    assert len(test) == 6 and {len(e["numbers"]) for e in test} == {3}
    assert len(ood) == 5 and {len(e["numbers"]) for e in ood} == {4}
    with pytest.raises(ValueError, match="only the splits 'train' and 'test'"):
        evaluation.benchmark_examples(evaluation.Benchmark("a", "arithmetic", split="ood",
                                                           task_kwargs=dict(num_train=4, num_test=4)))


# ---------------------------------------------------------------------------------------------------- benchmarks


def test_tfds_source_gives_the_tasks_own_examples(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    manual = tmp_path / "manual"
    files = {
        "gsm8k": _write_jsonl(manual / "gsm8k" / "test.jsonl", GSM8K_ROWS),
        "math": _write_jsonl(manual / "math500" / "test.jsonl", [
            {"problem": "Simplify $\\sqrt{50}$.", "solution": "So $\\boxed{5\\sqrt{2}}$."},
            {"problem": "What is $2+2$?", "answer": "4"}]),
        "gpqa": _write_jsonl(manual / "gpqa" / "test.jsonl", [
            {"Question": "Most of air?", "Correct Answer": "Nitrogen", "Incorrect Answer 1": "Oxygen",
             "Incorrect Answer 2": "Argon", "Incorrect Answer 3": "Helium"},
            {"question": "Unit of charge?", "choices": ["Volt", "Coulomb", "Ampere", "Ohm"], "answer": 1}]),
    }
    for task, path in files.items():
        via_file = evaluation.benchmark_examples(evaluation.Benchmark(task, task, path=path))[1]
        via_tfds = evaluation.benchmark_examples(evaluation.Benchmark(
            task, task, source="tfds", manual_dir=str(manual), data_dir=str(tmp_path / "prepared")))[1]
        keep = ("prompt", "answer", "choices", "letters")
        assert [{k: e.get(k) for k in keep} for e in via_tfds] == [{k: e.get(k) for k in keep} for e in via_file]
    assert via_file[1]["answer"] == "B"
    assert via_file[0]["choices"]["ABCD".index(via_file[0]["answer"])] == "Nitrogen"
    first = evaluation.benchmark_examples(evaluation.Benchmark("g", "gsm8k", path=files["gsm8k"], num_problems=2))[1]
    assert [e["answer"] for e in first] == ["27", "1234"]
    with pytest.raises(ValueError, match="manual_dir"):
        evaluation.Benchmark("aime", "aime", source="tfds")
    with pytest.raises(ValueError, match="serves the tasks"):
        evaluation.Benchmark("c", "countdown", source="tfds", manual_dir="m", data_dir="d")


def test_configs_and_benchmark_selection(tmp_path):
    paper = eval_configs.get_config("paper")
    assert {b: paper.bench[b].k for b in ("aime", "math500", "gpqa")} == {"aime": 64, "math500": 16, "gpqa": 64}
    assert (paper.sampling.temperature, paper.sampling.top_p, paper.sampling.max_new_tokens) == (0.6, 0.95, 32768)
    assert paper.template == "math_distill"
    with pytest.raises(ValueError, match="bench.aime.path"):
        eval_main.benchmarks(paper, str(tmp_path))  # the paper preset refuses the shipped samples
    paper.benchmarks, paper.bench.aime.source, paper.bench.aime.manual_dir = "aime", "tfds", "/data"
    bench, _ = eval_main.benchmarks(paper, str(tmp_path))[0]
    assert bench.data_dir == os.path.join(str(tmp_path), "tfds")
    default = eval_configs.get_config("default,benchmarks=countdown+gsm8k+aime")
    benches = eval_main.benchmarks(default, str(tmp_path))
    assert [(b.name, b.k) for b, _ in benches] == [("countdown", 8), ("gsm8k", 8), ("aime", 64)]
    with pytest.raises(KeyError, match="known"):
        eval_main.benchmarks(eval_configs.get_config("smoke,benchmarks=aime24"), str(tmp_path))
    with pytest.raises(KeyError, match="unknown config key"):
        eval_configs.get_config("smoke,sampling.temprature=1.0")


# ---------------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def smoke_checkpoint(tmp_path_factory):
    import flax.linen as nn
    import jax

    from r1jax.models.config import get_config
    from r1jax.models.transformer import init_params
    from r1jax.stages.common import save_final

    workdir = str(tmp_path_factory.mktemp("stage"))
    cfg = get_config("tiny", dtype="float32")
    save_final(workdir, cfg, nn.unbox(init_params(cfg, jax.random.PRNGKey(0))), "byte")
    return workdir


def _check_consistent(summary, records, k):
    assert summary["num_problems"] == len(records) and summary["samples_per_problem"] == k
    for r in records:
        assert len(r["samples"]) == len(r["answers"]) == len(r["scores"]) == len(r["lengths"]) == k
        assert r["pass@1"] == pytest.approx(np.mean(r["scores"]))
        assert all(0 < n <= 16 for n in r["lengths"]) and all(s in (0.0, 1.0) for s in r["scores"])
    assert summary["pass@1"] == pytest.approx(np.mean([np.mean(r["scores"]) for r in records]))
    assert summary[f"cons@{k}"] == pytest.approx(np.mean([r["cons"] for r in records]))
    assert summary["mean_length"] == pytest.approx(np.mean([r["lengths"] for r in records]))
    assert summary["answer_rate"] == pytest.approx(np.mean([[a is not None for a in r["answers"]] for r in records]))
    assert summary["format_rate"] == pytest.approx(np.mean([r["format"] for r in records]))
    assert summary["truncated_rate"] == pytest.approx(np.mean([[not f for f in r["finished"]] for r in records]))


def test_cli_end_to_end_on_a_smoke_checkpoint(smoke_checkpoint, tmp_path):
    gsm8k = _write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "experiments.evaluate",
           f"--config=configs/evaluate.py:smoke,checkpoint={smoke_checkpoint},benchmarks=countdown+gsm8k",
           f"--config.bench.gsm8k.path={gsm8k}", "--config.bench.gsm8k.num_problems=3", f"--workdir={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| benchmark |" in proc.stdout and "countdown" in proc.stdout and "gsm8k" in proc.stdout

    combined = json.loads((out / "results.json").read_text())
    assert combined["checkpoint"] == os.path.join(smoke_checkpoint, "final")  # the stage folder resolves to final/
    assert combined["sampling"]["temperature"] == 0.6 and combined["sampling"]["top_p"] == 0.95
    table = (out / "results.md").read_text()
    for name, problems in (("countdown", 2), ("gsm8k", 3)):
        summary = json.loads((out / f"{name}.json").read_text())
        records = [json.loads(line) for line in (out / f"{name}_samples.jsonl").read_text().splitlines()]
        assert len(records) == problems
        _check_consistent(summary, records, k=2)
        assert combined["summaries"][name] == summary
        assert f"| {name} | {problems} | 2 |" in table and f"| {name} |" in (out / f"{name}.md").read_text()
    gsm8k_records = [json.loads(line) for line in (out / "gsm8k_samples.jsonl").read_text().splitlines()]
    assert [r["gold"] for r in gsm8k_records] == ["27", "1234", "3"]
    assert all(s.startswith("<think>") for r in gsm8k_records for s in r["samples"])
