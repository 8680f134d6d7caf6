"""grain prompt pipeline: checkpointable iterator state, per-epoch shuffling, host sharding; the JSONL readers."""

import pytest

from r1jax.data.pipeline import jsonl_records, prompt_dataset, sample_file, sft_records

EXAMPLES = [{"prompt": f"question {i}", "i": i} for i in range(23)]


def ids(batch):
    return [ex["i"] for ex in batch]


def test_batches_are_lists_of_example_dicts():
    batch = next(iter(prompt_dataset(EXAMPLES, batch_size=4, seed=0)))
    assert isinstance(batch, list) and len(batch) == 4
    assert all(isinstance(ex, dict) and set(ex) == {"prompt", "i"} for ex in batch)
    batch[0]["extra"] = 1  # consumers may add keys without touching the source
    assert all("extra" not in ex for ex in EXAMPLES)


def test_iterator_state_round_trip():
    it = iter(prompt_dataset(EXAMPLES, batch_size=4, seed=7))
    for _ in range(3):
        next(it)
    state = it.get_state()
    after = [ids(next(it)) for _ in range(2)]
    it.set_state(state)
    assert [ids(next(it)) for _ in range(2)] == after
    fresh = iter(prompt_dataset(EXAMPLES, batch_size=4, seed=7))  # e.g. after a restart
    fresh.set_state(state)
    assert [ids(next(fresh)) for _ in range(2)] == after


def test_each_epoch_is_a_new_permutation():
    batches = list(prompt_dataset(EXAMPLES[:20], batch_size=5, seed=1, num_epochs=2))
    first, second = sum(map(ids, batches[:4]), []), sum(map(ids, batches[4:]), [])
    assert sorted(first) == sorted(second) == list(range(20))
    assert first != second and first != list(range(20))


def test_deterministic_from_seed():
    a = [ids(b) for b in prompt_dataset(EXAMPLES, batch_size=3, seed=4, num_epochs=1)]
    b = [ids(b) for b in prompt_dataset(EXAMPLES, batch_size=3, seed=4, num_epochs=1)]
    c = [ids(b) for b in prompt_dataset(EXAMPLES, batch_size=3, seed=5, num_epochs=1)]
    assert a == b and a != c


def test_shards_are_disjoint_equal_and_cover():
    shards = []
    for k in range(4):
        ds = prompt_dataset(EXAMPLES, batch_size=1, seed=0, shard_index=k, shard_count=4, num_epochs=1)
        shards.append(sum(map(ids, ds), []))
    assert all(len(s) == 5 for s in shards)  # 23 cut to 20, 5 per host
    seen = sum(shards, [])
    assert len(seen) == len(set(seen)) == 20


def test_drop_remainder_and_infinite_repeat():
    assert len(list(prompt_dataset(EXAMPLES, batch_size=5, seed=0, num_epochs=1))) == 4
    assert [len(b) for b in prompt_dataset(EXAMPLES, batch_size=5, seed=0, num_epochs=1, drop_remainder=False)][-1] == 3
    it = iter(prompt_dataset(EXAMPLES[:3], batch_size=8, seed=0))  # fewer examples than a batch: repeats
    assert len(next(it)) == 8


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 1, "shard_index": 2, "shard_count": 2}, "shard_index"),
        ({"batch_size": 1, "num_epochs": 0}, "num_epochs"),
        ({"batch_size": 1, "shard_count": 100}, "cannot fill"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        prompt_dataset(EXAMPLES, seed=0, **kwargs)


def test_jsonl_records_fail_loudly(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": \n')
    with pytest.raises(ValueError, match=r"data.jsonl:4: invalid JSON"):
        jsonl_records(path)
    path.write_text('{"a": 1}\n"text"\n')
    with pytest.raises(ValueError, match=r"data.jsonl:2: expected a JSON object, got str"):
        jsonl_records(path)
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert jsonl_records(path) == [{"a": 1}, {"a": 2}]


def test_shipped_files():
    sft = sft_records()
    assert len(sft) >= 30 and all(r["prompt"] and r["response"] for r in sft)
    for name in ("gsm8k", "math", "aime", "gpqa", "code"):
        assert jsonl_records(sample_file(f"{name}_sample.jsonl"))
    with pytest.raises(FileNotFoundError, match="known: "):
        sample_file("nope.jsonl")
