"""All-scenario RL (R1 §2.3.4, Nature eq. 8-10): GRPO over a mix of reasoning prompts (rule rewards) and general
prompts (a learned reward model on the summary only), plus format and language rewards.

    run(config, workdir) -> path of the final params

This is `stages.grpo.run` with two things swapped in: the task is a `MixedTask`, and the rollout gets the reward
model's `Scorer` (stages/reward_model.py). Per completion the components are

    reasoning prompt:  the task's components (accuracy, format, language; countdown's score), rm = 0
    general prompt:    the task's components 0 except format and language; rm = the reward model's score of the
                       summary after </think>

and the reward is their weighted sum (`reward_weights`, e.g. countdown or accuracy, format, language, rm), i.e.
Reward = Reward_reasoning + Reward_general + Reward_language with Reward_general = RM + format. A group is one prompt,
so the group-relative advantage never compares a rule reward with a reward-model score. `general` (1 on general
prompts) is a bookkeeping component (weight 0): the logged `accuracy` is over reasoning prompts only.

config: the fields of stages/grpo.py, plus `reward_model` (the reward-model stage's output), `general_data` (a JSONL
of {"prompt", ...}; "" = the shipped sft_general.jsonl) and `general_share` (the share of general prompts in the
prompt stream, by repetition). Held-out evaluation is on the reasoning task's test split. Not modelled: R1 adds the
general data only in the last 400 of 1,700 steps, and uses a safety RM on the whole response.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import ml_collections

from r1jax.data.tasks.base import common_components
from r1jax.stages import common, grpo
from r1jax.stages import reward_model as rm_lib

FORMAT_STYLE = "think"  # general prompts are judged on R1's readable format


@dataclasses.dataclass
class MixedTask:
    """Reasoning examples (scored by `reasoning`) and general prompts (kind 'general', scored by the reward model).

    train_examples: the reasoning train split, then the general prompts repeated until they are `general_share` of
    the whole (at least once each). test_examples: the reasoning test split (general prompts have no verifier).
    """
    reasoning: object
    general: Sequence[Mapping]
    general_share: float = 0.25

    name = "mixed"

    def __post_init__(self):
        if not 0.0 <= self.general_share < 1.0:
            raise ValueError(f"general_share must be in [0, 1), got {self.general_share}")
        self._train = None

    @property
    def answer_kind(self) -> str:
        return self.reasoning.answer_kind

    def train_examples(self) -> list[dict]:
        if self._train is None:
            reasoning = list(self.reasoning.train_examples())
            general = []
            if self.general and self.general_share > 0:
                want = self.general_share / (1.0 - self.general_share) * len(reasoning)
                reps = max(1, math.ceil(want / len(self.general)))
                general = [{"id": f"general-{i}-{rep}", "prompt": g["prompt"], "kind": "general"}
                           for rep in range(reps) for i, g in enumerate(self.general)]
            self._train = reasoning + general
        return self._train

    def test_examples(self) -> Sequence[dict]:
        return self.reasoning.test_examples()

    def reward(self, completion: str, example: Mapping) -> dict[str, float]:
        """The reasoning task's components (0 on general prompts, but format and language), and 'general'."""
        if example.get("kind") == "general":
            zeros = dict.fromkeys(self._reasoning_keys(), 0.0)
            return {**zeros, **common_components(completion, FORMAT_STYLE), "general": 1.0}
        return {**self.reasoning.reward(completion, example), "general": 0.0}

    def _reasoning_keys(self) -> list[str]:
        if getattr(self, "_keys", None) is None:
            self._keys = sorted(self.reasoning.reward("", self.reasoning.train_examples()[0]))
        return self._keys


def general_prompts(path: str) -> list[dict]:
    """{"prompt": ...} records of a JSONL ("" = the shipped sft_general.jsonl; only 'prompt' is read)."""
    from r1jax.data.pipeline import jsonl_records, sample_file
    records = jsonl_records(path or sample_file("sft_general.jsonl"))
    bad = [i for i, r in enumerate(records) if not isinstance(r.get("prompt"), str)]
    if bad:
        raise ValueError(f"{path or 'sft_general.jsonl'}: records {bad[:5]} have no string 'prompt'")
    return records


def run(config: ml_collections.ConfigDict, workdir: str) -> str:
    if common.is_finished(workdir):
        return common.final_dir(workdir)
    if not config.reward_model:
        raise ValueError("all-scenario RL needs `reward_model`: the reward-model stage's output")
    task = MixedTask(grpo.make_task(config), general_prompts(config.general_data),
                     config.general_share)
    scorer = rm_lib.load_scorer(config.reward_model, batch=config.rm_batch_size)
    return grpo.run(config, workdir, task=task, reward_model=scorer)
