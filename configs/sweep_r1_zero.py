"""The example sweep over R1-Zero: KL weight beta x learning rate x group size (2 x 2 x 2 = 8 points).

    python -m experiments.sweep --config=configs/r1_zero.py --sweep=configs/sweep_r1_zero.py \
        --workdir=workdirs/sweep_r1_zero                            # 2-core CPU: ~15 min a point, ~2 h in all
    python -m experiments.sweep --config=configs/r1_zero.py:gpu --sweep=configs/sweep_r1_zero.py \
        --workdir=workdirs/sweep_r1_zero_gpu                        # one H100
    python -m experiments.sweep --config=configs/r1_zero.py --sweep=configs/sweep_r1_zero.py:beta,lr   # 4 points

The argument after ':' picks axes by name (default: all). Every point starts from the same base model and differs
from the preset only in its overrides; compare them in <workdir>/sweep.md and sweep.png (experiments/sweep.py).
With prompts_per_step fixed, group size 4 samples half the completions of group size 8 per step.
"""
from __future__ import annotations

import itertools

AXES = {
    "beta": ("rl.grpo.kl_beta", (0.0, 0.001)),        # DAPO's no-KL vs R1's 0.001
    "lr": ("rl.learning_rate", (1e-4, 3e-5)),
    "group": ("rl.rollout.group_size", (4, 8)),
}


def get_sweep(arg: str | None = None) -> list[dict]:
    names = [a.strip() for a in (arg or "").split(",") if a.strip()] or list(AXES)
    unknown = sorted(set(names) - set(AXES))
    if unknown:
        raise ValueError(f"unknown sweep axis {unknown}; known: {list(AXES)}")
    keys = [AXES[n][0] for n in names]
    return [dict(zip(keys, values)) for values in itertools.product(*(AXES[n][1] for n in names))]
