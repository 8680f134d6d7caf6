"""Rollouts: prompts -> sampler (G per prompt) -> text -> rewards -> group advantages -> a training batch.

The batch layout is the one `grpo.make_grpo_train_step` reads: each row is prompt + completion, right-padded to a
static length; `completion_mask_BxT[b, t] = 1` on the completion's tokens (the stop token included), and the
sampler's log-probs sit at those same columns.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from r1jax.rl.advantages import dynamic_sampling_mask, group_advantages
from r1jax.rl.batch import reflection_word_rate, response_length_stats
from r1jax.sampling import SamplingConfig, sample
from r1jax.tokenizer import get_template


@dataclasses.dataclass
class Rollout:
    """G completions for each of P prompts, rows prompt-major (prompt i owns rows i*G ... i*G+G-1)."""
    examples: list[dict]                 # [P]
    prompt_ids: list[list[int]]          # [P]
    tokens: np.ndarray                   # [P*G, N] completion tokens (pad after the stop)
    logprobs: np.ndarray                 # [P*G, N] sampler log-probs
    lengths: np.ndarray                  # [P*G]
    finished: np.ndarray                 # [P*G]
    texts: list[str]                     # [P*G] what the model wrote (template prefix included)
    components: dict[str, np.ndarray]    # name -> [P*G] reward components
    rewards: np.ndarray                  # [P*G] weighted total
    group_size: int
    timed_out: np.ndarray | None = None  # [P*G] the reward ran past its deadline (scored 0); None = not tracked

    def select_groups(self, keep: np.ndarray) -> "Rollout":
        """The rollout restricted to the prompts where `keep` [P] is true."""
        rows = np.repeat(keep, self.group_size)
        pick = lambda xs: [x for x, k in zip(xs, keep) if k]  # noqa: E731
        return Rollout(pick(self.examples), pick(self.prompt_ids), self.tokens[rows], self.logprobs[rows],
                       self.lengths[rows], self.finished[rows], [t for t, k in zip(self.texts, rows) if k],
                       {k: v[rows] for k, v in self.components.items()}, self.rewards[rows], self.group_size,
                       None if self.timed_out is None else self.timed_out[rows])

    @staticmethod
    def concat(parts: Sequence["Rollout"]) -> "Rollout":
        first = parts[0]
        width = max(p.tokens.shape[1] for p in parts)
        pad = lambda a: np.pad(a, ((0, 0), (0, width - a.shape[1])))  # noqa: E731
        return Rollout(sum((p.examples for p in parts), []), sum((p.prompt_ids for p in parts), []),
                       np.concatenate([pad(p.tokens) for p in parts]), np.concatenate([pad(p.logprobs) for p in parts]),
                       np.concatenate([p.lengths for p in parts]), np.concatenate([p.finished for p in parts]),
                       sum((p.texts for p in parts), []),
                       {k: np.concatenate([p.components[k] for p in parts]) for k in first.components},
                       np.concatenate([p.rewards for p in parts]), first.group_size,
                       None if any(p.timed_out is None for p in parts)
                       else np.concatenate([p.timed_out for p in parts]))


@dataclasses.dataclass(frozen=True)
class Scoring:
    """How rule rewards are scored: a bounded pool of `workers` processes (0 = the CPU count, at most 8), each sample
    under its own `timeout_s` deadline (a timed-out sample scores 0 and is counted), the whole batch under
    `batch_timeout_s` (0 = no cap). `workers=-1` scores in this process, one sample after another, without deadlines
    (what a reward that cannot be pickled to a worker gets, with a warning)."""
    workers: int = 0
    timeout_s: float = 10.0
    batch_timeout_s: float = 0.0


def score_rewards(reward_fn, texts: Sequence[str], rows: Sequence[Mapping],
                  scoring: "Scoring | None") -> tuple[list[dict], np.ndarray | None]:
    """Components per text (dicts) and which timed out ([R] bool; None when scored in this process)."""
    import logging
    import pickle
    if scoring is not None and scoring.workers >= 0:
        from r1jax.rewards.batch import score_batch
        try:
            pickle.dumps(reward_fn)
        except Exception as e:  # noqa: BLE001 - any pickling failure means: no worker can run it
            logging.warning("the task's reward cannot be pickled to a scoring worker (%s): scoring in this process, "
                            "without per-sample deadlines", e)
        else:
            scored = score_batch(reward_fn, list(texts), list(rows), workers=scoring.workers or None,
                                 timeout_s=scoring.timeout_s, batch_timeout_s=scoring.batch_timeout_s or None)
            return [dict(c) for c in scored.components], np.asarray(scored.timed_out, bool)
    return [dict(reward_fn(t, e)) for t, e in zip(texts, rows)], None


def weighted_reward(components: Mapping[str, float], weights: Mapping[str, float]) -> float:
    missing = sorted(set(weights) - set(components))
    if missing:
        raise KeyError(f"reward weights name component(s) {missing} that the task does not produce; "
                       f"it produces {sorted(components)}")
    return float(sum(w * components[k] for k, w in weights.items()))


def rollout(params, cfg, tokenizer, task, examples: Sequence[dict], sampling: SamplingConfig, rng, *,
            template: str, weights: Mapping[str, float], mesh=None, overlong_buffer: int = 0,
            reward_model=None, vocab_limit: int | None = None, scoring: "Scoring | None" = None) -> Rollout:
    """Samples `sampling.n` completions per example and scores them with the task's verifier.

    `reward_model(row_examples, texts) -> {name: [R] array}` (optional) adds learned reward components to every row
    in one batched call (all-scenario RL: `stages.reward_model.Scorer` gives 'rm', scored on the summary only).
    """
    from r1jax.rewards.length import overlong_penalty
    tmpl = get_template(template)
    bos = getattr(tokenizer, "bos_text", "")
    prompt_ids = [tokenizer.encode(tmpl.render(e["prompt"], bos)) for e in examples]
    out = sample(params, cfg, prompt_ids, sampling, rng, mesh=mesh, vocab_limit=vocab_limit)
    texts = [tmpl.completion_prefix + tokenizer.decode([int(t) for t in out.tokens[r, :out.lengths[r]]
                                                         if t != tokenizer.eos_id])
             for r in range(len(out.lengths))]
    rows = [examples[r // sampling.n] for r in range(len(texts))]
    comps, timed_out = score_rewards(task.reward, texts, rows, scoring)
    for r, c in enumerate(comps):
        if overlong_buffer:
            c["overlong"] = overlong_penalty(int(out.lengths[r]), sampling.max_new_tokens, overlong_buffer)
    if reward_model is not None:
        learned = reward_model([examples[r // sampling.n] for r in range(len(texts))], texts)
        for name, values in learned.items():
            for c, v in zip(comps, np.asarray(values, np.float32)):
                c[name] = float(v)
    names = sorted(comps[0])
    components = {k: np.asarray([c[k] for c in comps], np.float32) for k in names}
    rewards = np.asarray([weighted_reward(c, weights) for c in comps], np.float32)
    return Rollout(list(examples), prompt_ids, np.asarray(out.tokens), np.asarray(out.logprobs),
                   np.asarray(out.lengths), np.asarray(out.finished), texts, components, rewards, sampling.n,
                   timed_out)


def informative_groups(ro: Rollout) -> np.ndarray:
    """DAPO dynamic sampling: [P] true where a group's rewards are not all equal (others teach nothing)."""
    return np.asarray(dynamic_sampling_mask(ro.rewards, ro.group_size))


REWARD_CONTROLS = ("none", "shuffle")


@dataclasses.dataclass(frozen=True)
class CollectConfig:
    """How a step's rollouts are gathered (see `collect`).

    prompts_per_step: groups in the step's batch. dynamic_sampling / max_sample_rounds: DAPO's resampling of groups
    whose rewards are all equal, at most that many rounds. reward_control: 'none', or 'shuffle' (a control run: the
    step's rewards are permuted across all its rows before advantages, so the reward rate is exactly the real one but
    carries no information about the completion it is paired with). overlong_buffer: DAPO's soft length penalty.
    """
    prompts_per_step: int
    template: str
    weights: Mapping[str, float]
    dynamic_sampling: bool = False
    max_sample_rounds: int = 1
    overlong_buffer: int = 0
    reward_control: str = "none"
    scoring: Scoring | None = None

    def __post_init__(self):
        if self.reward_control not in REWARD_CONTROLS:
            raise ValueError(f"reward_control={self.reward_control!r} is unknown; known: {REWARD_CONTROLS}")
        if self.max_sample_rounds < 1:
            raise ValueError(f"max_sample_rounds must be >= 1, got {self.max_sample_rounds}")


def shuffled_rewards(rewards: np.ndarray, seed) -> np.ndarray:
    """The control's rewards: the same values in a random order (a permutation over all rows of the step)."""
    return np.asarray(rewards)[np.random.default_rng(seed).permutation(len(rewards))]


def collect(params, cfg, tokenizer, task, next_prompts, sampling: SamplingConfig, rng, cc: CollectConfig, *,
            mesh=None, reward_model=None, vocab_limit: int | None = None) -> tuple[Rollout, np.ndarray, object]:
    """One step's rollouts: prompts from `next_prompts()` -> G samples each -> rewards, with dynamic sampling.

    Returns (rollout of exactly `cc.prompts_per_step` groups, the rewards to train on [P*G], rng). With dynamic
    sampling, groups whose rewards are all equal are set aside and more prompts drawn, up to `max_sample_rounds`;
    set-aside groups (A = 0) only fill up the static batch when the rounds run out. The trained rewards are the
    rollout's own, or under `reward_control='shuffle'` a permutation of them (seeded from the step's rng).
    """
    import jax
    rounds = cc.max_sample_rounds if cc.dynamic_sampling else 1
    parts, set_aside, kept = [], [], 0
    for _ in range(rounds):
        rng, key = jax.random.split(rng)
        ro = rollout(params, cfg, tokenizer, task, next_prompts(), sampling, key, template=cc.template,
                     weights=dict(cc.weights), mesh=mesh, overlong_buffer=cc.overlong_buffer,
                     reward_model=reward_model, vocab_limit=vocab_limit, scoring=cc.scoring)
        if not cc.dynamic_sampling:
            parts = [ro]
            break
        good = informative_groups(ro)
        parts.append(ro.select_groups(good))
        set_aside.append(ro.select_groups(~good))
        kept += int(good.sum())
        if kept >= cc.prompts_per_step:
            break
    batch = Rollout.concat(parts + set_aside)
    batch = batch.select_groups(np.arange(len(batch.examples)) < cc.prompts_per_step)
    trained = batch.rewards
    if cc.reward_control == "shuffle":
        seed = int(jax.random.randint(jax.random.fold_in(rng, 0x5EED), (), 0, 2 ** 31 - 1))
        trained = shuffled_rewards(batch.rewards, seed)
    return batch, trained, rng


def build_batch(ro: Rollout, advantages: np.ndarray, seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
    """Rows of prompt + completion right-padded to `seq_len`, with the masks and log-probs at completion columns."""
    R, G = len(ro.rewards), ro.group_size
    tokens = np.full((R, seq_len), pad_id, np.int32)
    mask = np.zeros((R, seq_len), np.float32)
    sampler_logps = np.zeros((R, seq_len), np.float32)
    for r in range(R):
        p = ro.prompt_ids[r // G]
        n = int(ro.lengths[r])
        if len(p) + n > seq_len:
            raise ValueError(f"row {r}: prompt {len(p)} + completion {n} tokens exceed seq_len {seq_len}")
        tokens[r, :len(p)] = p
        tokens[r, len(p):len(p) + n] = ro.tokens[r, :n]
        mask[r, len(p):len(p) + n] = 1.0
        sampler_logps[r, len(p):len(p) + n] = ro.logprobs[r, :n]
    positions = np.broadcast_to(np.arange(seq_len, dtype=np.int32), (R, seq_len)).copy()
    return dict(tokens_BxT=tokens, positions_BxT=positions, completion_mask_BxT=mask,
                sampler_logps_BxT=sampler_logps, advantages_B=np.asarray(advantages, np.float32))


def rollout_metrics(ro: Rollout, max_new_tokens: int) -> dict[str, float]:
    """Reward components, accuracy, response length (mean / max / truncated share), reflection-word rate."""
    out = {f"reward/{k}": float(v.mean()) for k, v in ro.components.items()}
    out["reward/total"] = float(ro.rewards.mean())
    if "accuracy" in ro.components:
        acc = ro.components["accuracy"]
        if "general" in ro.components:  # a task mix: accuracy over the verifiable (reasoning) prompts only
            acc = acc[ro.components["general"] == 0]
        out["accuracy"] = float(acc.mean()) if acc.size else 0.0
    lens = response_length_stats(ro.lengths, max_new_tokens, finished=ro.finished)
    out.update({f"response_length/{k}": float(v) for k, v in lens.items()})
    out["reflection_rate"] = float(reflection_word_rate(ro.texts))
    if ro.timed_out is not None:
        out["reward/timed_out_frac"] = float(np.mean(ro.timed_out))
    out["groups_informative"] = float(informative_groups(ro).mean())
    return out


def advantages_for(ro: Rollout, scale: str, rewards: np.ndarray | None = None) -> np.ndarray:
    """Group advantages of the rollout's rewards (or of `rewards`, the control's, in the same row order)."""
    return np.asarray(group_advantages(ro.rewards if rewards is None else rewards, ro.group_size, scale=scale))
