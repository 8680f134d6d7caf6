"""Rejection-sampling SFT (R1 §2.3.3): sample from the RL checkpoint, keep what is correct and readable, mix in
non-reasoning data, and fine-tune the *base* model on the result. One readable stage, top to bottom.

    run(config, workdir) -> path of the final params

config: `sample_from` (the RL checkpoint to sample from), `init_from` (the model to fine-tune: the pipeline's base),
`samples` (num_prompts, k, temperature, top_p, max_new_tokens, prompts_per_batch), `filters` (max_response_tokens,
min_language, language), `general_data` (a {"prompt","response"} JSONL; "" = the shipped sft_general.jsonl; "none" =
no general data), `general_share` (the general records' share of the dataset, cycling the file as needed; R1: 200k of
800k = 0.25) and `min_general` (at least that many), and the SFT fields of `stages.sft.train_sft` (seq_len,
batch_size, epochs, ...).

The dataset is written before training, to `<workdir>/data/dataset.jsonl` ({"id","prompt","response","source"}) and
`<workdir>/data/manifest.json` (written last: counts, and for every dropped sample the reason), and reused when
the stage is resumed. A sample is dropped for the first of these that applies (`judge`):

    too_long    the sampler hit max_new_tokens before the stop token, or the response exceeds max_response_tokens
    malformed   not R1's readable shape: exactly one `</think>`, `<think>` only at the start, a summary in prose
                (rewards.format.reasoning_format_reward)
    incorrect   the task's verifier gives accuracy < 1
    unreadable  the thinking or summary mixes languages (consistency < min_language), holds undecodable bytes
                (U+FFFD) or control characters, or a code block
    duplicate   the same response (up to whitespace) was already kept for the same prompt

The same sampling and filters make the cold-start data (stages/cold_start.py), which then also rewrites samples.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence

import ml_collections
import numpy as np

from r1jax.rewards.format import THINK_CLOSE, parse_reasoning, reasoning_format_reward
from r1jax.rewards.language import language_consistency
from r1jax.stages import common
from r1jax.tokenizer import get_template, load_tokenizer

REASONS = ("too_long", "malformed", "incorrect", "unreadable", "duplicate")
DATASET, MANIFEST = "dataset.jsonl", "manifest.json"
EXAMPLES_PER_REASON = 3  # dropped samples shown in the manifest for each reason


# ----------------------------------------------------------------------------------------------------------------
# Filters
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Filters:
    """What a kept sample must satisfy. max_response_tokens counts the sampler's tokens (stop token included)."""
    max_response_tokens: int = 1 << 30
    min_language: float = 1.0
    language: str = "en"


@dataclasses.dataclass(frozen=True)
class Sample:
    """One sampled completion. `text` includes the template's prefilled part (e.g. '<think>')."""
    example: Mapping
    text: str
    finished: bool
    num_tokens: int


def filters_from(config: ml_collections.ConfigDict) -> Filters:
    known = {f.name for f in dataclasses.fields(Filters)}
    given = dict(config.filters)
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(f"unknown filters key(s) {unknown}; known: {sorted(known)}")
    return Filters(**given)


def _garbled(text: str) -> bool:
    return "\ufffd" in text or any(ord(c) < 32 and c not in "\n\t\r" for c in text)


def judge(sample: Sample, task, filters: Filters, shape=reasoning_format_reward) -> str | None:
    """The first reason in REASONS (but 'duplicate', which needs the others) to drop `sample`, or None to keep it.
    `shape(text) -> 0 | 1` is the well-formedness check ('malformed'): R1's readable shape unless told otherwise."""
    if not sample.finished or sample.num_tokens > filters.max_response_tokens:
        return "too_long"
    if shape(sample.text) < 1.0:
        return "malformed"
    if task.reward(sample.text, sample.example)["accuracy"] < 1.0:
        return "incorrect"
    thinking, summary = parse_reasoning(sample.text)
    if (_garbled(sample.text) or "```" in sample.text
            or min(language_consistency(thinking, filters.language),
                   language_consistency(summary, filters.language)) < filters.min_language):
        return "unreadable"
    return None


def dedup_key(example: Mapping, response: str) -> tuple[str, str]:
    return str(example.get("id", example["prompt"])), " ".join(response.split())


def filter_samples(samples: Iterable[Sample], task, filters: Filters, rewrite=None,
                   source_shape=reasoning_format_reward) -> tuple[list[dict], dict]:
    """(kept records, manifest). `rewrite(text, example) -> text` (cold start) is applied to a sample that passed
    `judge` with `source_shape` as its well-formedness check (the shape the sampled model writes); the rewritten text
    must pass `judge` again in R1's readable shape (a failure counts as that reason, with `rewrite:` in front)."""
    kept, seen = [], set()
    dropped = {r: 0 for r in REASONS}
    shown: dict[str, list[str]] = {r: [] for r in REASONS}
    total = 0
    for s in samples:
        total += 1
        reason = judge(s, task, filters, source_shape)
        text = s.text
        if reason is None and rewrite is not None:
            text = rewrite(s.text, s.example)
            again = judge(dataclasses.replace(s, text=text), task, filters)
            reason = None if again is None else f"rewrite:{again}"
        key = dedup_key(s.example, text)
        if reason is None and key in seen:
            reason = "duplicate"
        if reason is not None:
            dropped[reason] = dropped.get(reason, 0) + 1
            if len(shown.setdefault(reason, [])) < EXAMPLES_PER_REASON:
                shown[reason].append(s.text)
            continue
        seen.add(key)
        kept.append({"id": f"{s.example.get('id', 'ex')}-{len(kept)}", "prompt": s.example["prompt"],
                     "response": text, "source": "reasoning"})
    manifest = {"num_samples": total, "kept": len(kept), "dropped": dropped,
                "keep_rate": len(kept) / max(total, 1), "dropped_examples": {k: v for k, v in shown.items() if v}}
    return kept, manifest


# ----------------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------------
def select_prompts(examples: Sequence[Mapping], num: int, seed: int) -> list[Mapping]:
    """`num` examples (all when num <= 0 or num >= len) in a permutation fixed by `seed`."""
    order = np.random.default_rng([seed, 7]).permutation(len(examples))
    if 0 < num < len(examples):
        order = order[:num]
    return [examples[i] for i in order]


def sample_completions(params, cfg, tokenizer, examples: Sequence[Mapping], s: ml_collections.ConfigDict, *,
                       template: str, seed: int, mesh=None) -> list[Sample]:
    """`s.k` samples per example at `s.temperature` / `s.top_p`, at most `s.max_new_tokens` each."""
    import jax
    from r1jax.evaluation import generate
    from r1jax.sampling import SamplingConfig
    sampling = SamplingConfig(temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                              n=s.k, stop_ids=(tokenizer.eos_id,), pad_id=tokenizer.pad_id,
                              chunk_size=s.chunk_size)
    rng = jax.random.PRNGKey(seed)
    out: list[Sample] = []
    per = s.prompts_per_batch
    for start in range(0, len(examples), per):
        chunk = list(examples[start:start + per])
        rng, key = jax.random.split(rng)
        texts, lengths, comp, _ = generate(params, cfg, tokenizer, [e["prompt"] for e in chunk], sampling, key,
                                           template=template, mesh=mesh)
        for r, text in enumerate(texts):
            out.append(Sample(chunk[r // s.k], text, bool(comp.finished[r]), int(lengths[r])))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Datasets on disk and SFT examples
# ----------------------------------------------------------------------------------------------------------------
def general_records(path: str, count: int) -> list[dict]:
    """`count` non-reasoning chat records (the file's records in order, cycled when it holds fewer) in the readable
    format with an empty thinking (`<think>\\n</think> reply`), as R1 answers simple queries; "" = the shipped
    sft_general.jsonl, "none" = nothing."""
    from r1jax.data.pipeline import sft_records
    if path == "none" or count <= 0:
        return []
    records = sft_records(path or None)
    out = []
    for j in range(count):
        i, rep = j % len(records), j // len(records)
        r = records[i]
        response = r["response"] if THINK_CLOSE in r["response"] else "<think>\n</think> " + r["response"]
        out.append({"id": f"general-{i}-{rep}", "prompt": r["prompt"], "response": response, "source": "general"})
    return out


def general_count(kept: int, share: float, minimum: int = 0) -> int:
    """How many general records make them `share` of the dataset beside `kept` reasoning samples (R1: 200k of 800k,
    0.25), and at least `minimum`."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"general_share must be in [0, 1), got {share}")
    return max(int(minimum), round(share / (1.0 - share) * kept))


def write_dataset(outdir: str, records: Sequence[Mapping], manifest: Mapping) -> str:
    """dataset.jsonl, then manifest.json (last, atomically: its presence means the dataset is complete)."""
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, DATASET), "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp = os.path.join(outdir, MANIFEST + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(dict(manifest), fh, indent=1, ensure_ascii=False)
    os.replace(tmp, os.path.join(outdir, MANIFEST))
    return os.path.join(outdir, DATASET)


def read_dataset(outdir: str) -> tuple[list[dict], dict] | None:
    """(records, manifest) of a complete dataset folder, else None."""
    if not os.path.exists(os.path.join(outdir, MANIFEST)):
        return None
    from r1jax.data.pipeline import sft_records
    with open(os.path.join(outdir, MANIFEST)) as fh:
        manifest = json.load(fh)
    return sft_records(os.path.join(outdir, DATASET)), manifest


def dataset_path(ref: str) -> str:
    """A JSONL path from a JSONL path, a dataset folder, or a stage output (`<stage>/final` -> `<stage>/data`)."""
    if os.path.isfile(ref):
        return ref
    for candidate in (os.path.join(ref, DATASET), os.path.join(os.path.dirname(ref.rstrip("/")), "data", DATASET)):
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"no SFT dataset at {ref!r}: expected a JSONL file, a folder holding {DATASET}, or a "
                            f"stage output whose stage folder holds data/{DATASET}")


def sft_examples(records: Sequence[Mapping], tokenizer, template: str) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids + eos) pairs. The prompt is templated; a response that starts with what the template
    already wrote of the assistant's turn (e.g. '<think>') has that part removed, so it is not written twice."""
    tmpl = get_template(template)
    bos = getattr(tokenizer, "bos_text", "")
    prefix = tmpl.completion_prefix
    out = []
    for r in records:
        response = r["response"]
        if prefix and response.startswith(prefix):
            response = response[len(prefix):]
        elif prefix.strip() and response.lstrip().startswith(prefix.strip()):
            response = response.lstrip()[len(prefix.strip()):]
        out.append((tokenizer.encode(tmpl.render(r["prompt"], bos)), tokenizer.encode(response) + [tokenizer.eos_id]))
    return out


# ----------------------------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------------------------
def build_dataset(config: ml_collections.ConfigDict, outdir: str, tokenizer, task, mesh) -> tuple[list[dict], dict]:
    """Samples from `config.sample_from`, filters, mixes in general data, writes the dataset; reuses a complete one."""
    done = read_dataset(outdir)
    if done is not None:
        logging.info("reusing the rejection-sampled dataset in %s", outdir)
        return done
    if not config.sample_from:
        raise ValueError("rejection_sft needs `sample_from`: the RL checkpoint to sample from")
    cfg, params, _ = common.load_model(config.sample_from, mesh, common.numeric_overrides(config))
    examples = select_prompts(task.train_examples(), config.samples.num_prompts, config.seed)
    samples = sample_completions(params, cfg, tokenizer, examples, config.samples, template=config.template,
                                 seed=config.seed + 11, mesh=mesh)
    del params
    kept, manifest = filter_samples(samples, task, filters_from(config))
    general = general_records(config.general_data,
                              general_count(len(kept), config.general_share, config.min_general))
    manifest = {"sample_from": config.sample_from, "num_prompts": len(examples), "samples_per_prompt":
                config.samples.k, "temperature": config.samples.temperature, **manifest,
                "general_records": len(general), "total_records": len(kept) + len(general)}
    logging.info("rejection sampling: kept %d of %d samples (%s), + %d general records", len(kept),
                 manifest["num_samples"], manifest["dropped"], len(general))
    if not kept:
        logging.warning("rejection sampling kept no reasoning sample; the SFT data is general data only")
    records = kept + general
    if not records:
        raise ValueError("rejection sampling produced an empty dataset (no kept sample and no general data)")
    write_dataset(outdir, records, manifest)
    return records, manifest


def sft_on_built_dataset(config: ml_collections.ConfigDict, workdir: str, build) -> str:
    """A dataset stage's run(): `build(config, outdir, tokenizer, task, mesh) -> (records, manifest)` writes (or
    reuses) `<workdir>/data/`, then SFT from `init_from` on its records (stages.sft.train_sft)."""
    from r1jax.stages.grpo import make_task
    from r1jax.stages.sft import train_sft
    if common.is_finished(workdir):
        logging.info("%s already finished", workdir)
        return common.final_dir(workdir)
    tokenizer = load_tokenizer(config.tokenizer)
    records, _ = build(config, os.path.join(workdir, "data"), tokenizer, make_task(config), common.make_mesh(config))
    examples = sft_examples(records, tokenizer, config.template)
    return train_sft(config, workdir, examples, pad_id=tokenizer.pad_id, tokenizer=config.tokenizer)


def run(config: ml_collections.ConfigDict, workdir: str) -> str:
    return sft_on_built_dataset(config, workdir, build_dataset)
