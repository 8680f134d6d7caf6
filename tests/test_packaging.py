"""pyproject.toml agrees with requirements*.txt and the README, and its console scripts name real functions."""
import importlib
import os
import re
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        return tomllib.load(fh)


def _requirements(name: str) -> list[str]:
    with open(os.path.join(ROOT, name)) as fh:
        lines = [line.split("#")[0].strip() for line in fh]
    return [line for line in lines if line and not line.startswith("-r")]


def test_dependencies_mirror_the_requirements_files():
    project = _pyproject()["project"]
    assert project["dependencies"] == _requirements("requirements.txt")
    assert project["optional-dependencies"]["test"] == _requirements("requirements-test.txt")
    assert "tensorboard>=2.21,<3" in project["dependencies"]
    assert "torch==2.13.0" in project["optional-dependencies"]["test"]


def test_accelerator_extras_are_the_readme_builds():
    with open(os.path.join(ROOT, "README.md")) as fh:
        readme = fh.read()
    extras = _pyproject()["project"]["optional-dependencies"]
    (cuda,) = set(re.findall(r'pip install "(jax\[cuda\d+\][^"]*)"', readme))
    jax_bounds = next(d for d in _pyproject()["project"]["dependencies"] if d.startswith("jax>="))[3:]
    assert extras["gpu"] == [cuda] and extras["tpu"] == [f"jax[tpu]{jax_bounds}"]
    assert extras["hf"] == [d for d in extras["test"] if d.startswith("transformers")]


def test_console_scripts_name_entry_points_that_exist():
    scripts = _pyproject()["project"]["scripts"]
    assert set(scripts) == {"r1jax-r1-zero", "r1jax-r1", "r1jax-distill", "r1jax-sft", "r1jax-evaluate"}
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target


def test_the_packages_and_their_data_are_included():
    setuptools = _pyproject()["tool"]["setuptools"]
    assert setuptools["packages"]["find"]["include"] == ["r1jax", "r1jax.*", "configs", "experiments"]
    (pattern,) = setuptools["package-data"]["r1jax.data"]
    data = os.listdir(os.path.join(ROOT, "r1jax", "data", os.path.dirname(pattern)))
    assert data and all(n.endswith(".jsonl") for n in data)  # every shipped data file matches the pattern
