"""grain pipelines over in-memory examples (the JSONL readers of `r1jax.data.jsonl` are re-exported here).

Examples are plain dicts (prompt text plus verifier fields); a batch is a list of them, not a tensor, because the
prompts are tokenised and templated later, next to the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import grain

from r1jax.data.jsonl import iter_jsonl, jsonl_records, sample_file, sft_records  # noqa: F401 (re-exported)


def _as_list(batch: Sequence[dict]) -> list[dict]:
    return list(batch)


def prompt_dataset(
    examples: Sequence[dict],
    *,
    batch_size: int,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
) -> grain.IterDataset:
    """Batches (lists of `batch_size` example dicts) for one host; `iter()` of it is a checkpointable iterator.

    - Sharding: the examples are first cut to a multiple of `shard_count` (so every host gets the same number, and
      the same number of steps per epoch), then host `shard_index` takes every `shard_count`-th one. Shards are
      disjoint and together cover the cut list.
    - Shuffling: a fresh deterministic permutation of the shard each epoch, from `seed` and the epoch number.
    - `num_epochs=None` repeats forever; batches may straddle epochs. With a finite count and `drop_remainder`, the
      last short batch is dropped.
    - The iterator's `get_state()` / `set_state()` are small dicts (a position), to save with the checkpoint.
    Each element is a shallow copy of the example, so consumers may add keys freely.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"need 0 <= shard_index < shard_count, got {shard_index} and {shard_count}")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs}")
    per_shard = len(examples) // shard_count
    if per_shard == 0:
        raise ValueError(f"{len(examples)} examples cannot fill {shard_count} shards")
    ds = grain.MapDataset.source(list(examples[: per_shard * shard_count]))
    ds = ds[shard_index::shard_count]
    ds = ds.shuffle(seed=seed).repeat(num_epochs).map(dict)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, batch_fn=_as_list)
    # In-memory data: reading threads would only contend for the GIL.
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
