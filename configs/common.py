"""What the config files share: parsing `preset,key=value,...` arguments and the common sections."""
from __future__ import annotations

import ast

import ml_collections


def parse_arg(arg: str | None, presets: tuple[str, ...]) -> tuple[str, dict]:
    """'gpu,model=moe_tiny,rl.steps=5' -> ('gpu', {'model': 'moe_tiny', 'rl.steps': 5}). Unknown presets raise."""
    preset, overrides = "default", {}
    for part in [p for p in (arg or "").split(",") if p]:
        if "=" in part:
            key, value = part.split("=", 1)
            try:
                overrides[key.strip()] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                overrides[key.strip()] = value
        else:
            preset = part.strip()
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; known: {list(presets)}")
    return preset, overrides


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
    """Sets dotted keys; a key that does not exist is an error naming the known ones."""
    for key, value in overrides.items():
        node, parts = config, key.split(".")
        for p in parts[:-1]:
            if p not in node:
                raise KeyError(f"unknown config key {key!r}: no {p!r}; known: {sorted(node.keys())}")
            node = node[p]
        if parts[-1] not in node:
            raise KeyError(f"unknown config key {key!r}; known at that level: {sorted(node.keys())}")
        node[parts[-1]] = value
    return config


def mesh(data=-1, fsdp=1, expert=1, tensor=1, multihost=False) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, expert=expert, tensor=tensor, multihost=multihost))


def task_section(name: str, **kwargs) -> ml_collections.ConfigDict:
    """config.task for a task name. JSONL tasks get `train_path` / `test_path` placeholders (None = the small sample
    file shipped with r1jax), so `--config.task.kwargs.train_path=/data/train.jsonl` works from the command line."""
    from ml_collections import config_dict
    if name in ("gsm8k", "math", "aime", "gpqa", "code"):
        kwargs = {"train_path": config_dict.placeholder(str), "test_path": config_dict.placeholder(str), **kwargs}
    return ml_collections.ConfigDict(dict(name=name, kwargs=ml_collections.ConfigDict(kwargs)))


# Where metrics go besides metrics.jsonl and TensorBoard: Weights & Biases, off by default.
METRICS = dict(wandb=False, wandb_project="r1jax", wandb_entity="", wandb_mode="", wandb_group="")


def metrics() -> ml_collections.ConfigDict:
    """config.metrics (experiments/cli.py reads it); wandb_mode='offline' writes <workdir>/wandb for `wandb sync`."""
    return ml_collections.ConfigDict(dict(METRICS))
