import pytest
"""The notebooks run top to bottom on CPU with their smoke settings and fail on any error.

As papermill does, the settings are a cell injected after the one tagged "parameters". The kernel is this test's own
interpreter (a kernel spec written to a temporary folder), so no `ipykernel install` is needed and the notebook sees
exactly the packages the tests see. The kernel gets one CPU device (not conftest's 8 fake ones), as a CPU runtime has.
The committed .ipynb files must be what notebooks/build.py writes.
"""
import ast
import importlib.util
import json
import os
import re
import sys

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
KERNEL = "r1jax-test"

# Smoke settings per notebook (beyond SMOKE, WORKDIR and REPO), chosen to keep each run near a minute on 2 cores.
SETTINGS = {
    "r1_zero.ipynb": {"WATCH_EVERY_S": 2},
    # One evaluation fewer per RL stage (no before/after table; the report still evaluates every stage), and no
    # student-GRPO arm (tests/stages/test_pipeline.py runs it).
    "r1_pipeline.ipynb": {"COMPARE": False,
                          "OVERRIDES": "reasoning_rl.eval.num_problems=0,all_scenario_rl.eval.num_problems=0,"
                                       "report.num_problems=2,report.k=2"},
    "hf_roundtrip.ipynb": {},  # SMOKE: the tiny random Qwen2, 16 new tokens
}


def _kernel_manager(tmp_path) -> KernelManager:
    """A kernel of this interpreter, defined in a temporary kernel-spec folder."""
    spec_dir = tmp_path / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "r1jax tests", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_dir.parent)]))


def _kernel_env(tmp_path) -> dict:
    env = dict(os.environ)
    env["R1JAX_CACHE"] = str(tmp_path / "jax_cache")  # the setup cell turns the compilation cache on: not in ~/.cache
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", "")).strip()
    if flags:
        env["XLA_FLAGS"] = flags
    else:
        env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _inject(nb, settings: dict) -> None:
    """Adds a cell of settings right after the cell tagged "parameters" (papermill's injected-parameters)."""
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"expected one cell tagged 'parameters', found {len(tagged)}"
    names = re.findall(r"^([A-Z_]+) =", nb.cells[tagged[0]].source, flags=re.M)
    unknown = sorted(set(settings) - set(names))
    assert not unknown, f"settings {unknown} are not in the parameters cell ({names})"
    cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in settings.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(tagged[0] + 1, cell)


def execute(name: str, tmp_path) -> tuple[nbformat.NotebookNode, str]:
    """Runs notebooks/<name> with its smoke settings in tmp_path; returns the executed notebook and its work folder."""
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    workdir = str(tmp_path / "work")
    _inject(nb, {"SMOKE": True, "WORKDIR": workdir, "REPO": ROOT, **SETTINGS[name]})
    client = NotebookClient(nb, km=_kernel_manager(tmp_path), timeout=600, allow_errors=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute(env=_kernel_env(tmp_path))
    finally:
        nbformat.write(nb, str(tmp_path / name))  # the executed notebook, to look at when a cell failed
    return nb, workdir


def _text(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") + o.get("data", {}).get("text/plain", "") +
                       o.get("data", {}).get("text/markdown", ""))
    return "\n".join(out)


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for cell in nb.cells for o in cell.get("outputs", []))


@pytest.mark.slow
def test_r1_zero_notebook(tmp_path):
    nb, workdir = execute("r1_zero.ipynb", tmp_path)
    text = _text(nb)
    assert "preset 'smoke'" in text and "policy:" in text
    assert f"compilation cache: {tmp_path / 'jax_cache'}" in text and os.listdir(tmp_path / "jax_cache")
    for f in ["pretrain/final/model.json", "rl/final/model.json", "rl/report.md", "rl/curves.png"]:
        assert os.path.exists(os.path.join(workdir, f)), f
    assert "| before |" in text and "| base |" in text and "| final |" in text  # stage table, greedy table
    assert _images(nb) >= 2  # pretraining curves and the RL curves


@pytest.mark.slow
def test_r1_pipeline_notebook(tmp_path):
    nb, workdir = execute("r1_pipeline.ipynb", tmp_path)
    text = _text(nb)
    assert "| stage | params | pass@1 |" in text
    for stage in ["pretrain", "cold_start", "reasoning_rl", "rejection_sft", "reward_model", "all_scenario_rl",
                  "student_pretrain", "distill"]:
        assert os.path.exists(os.path.join(workdir, stage, "final", "model.json")), stage
        assert f"| {stage} |" in text, stage
    assert "held-out preference pairs" in text
    assert _images(nb) >= 8  # every stage's curves


@pytest.mark.slow
def test_hf_roundtrip_notebook(tmp_path):
    nb, workdir = execute("hf_roundtrip.ipynb", tmp_path)
    text = _text(nb)
    assert "greedy tokens agree with transformers: True" in text
    assert os.path.exists(os.path.join(workdir, "export", "config.json"))
    assert os.path.exists(os.path.join(workdir, "export", "model.safetensors"))
    assert os.path.exists(os.path.join(workdir, "export", "generation_config.json"))  # copied along


def test_committed_notebooks_are_built_and_clean():
    spec = importlib.util.spec_from_file_location("notebooks_build", os.path.join(NOTEBOOKS, "build.py"))
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert set(build.NOTEBOOKS) == {"r1_zero.ipynb", "r1_pipeline.ipynb", "hf_roundtrip.ipynb"} == set(SETTINGS)
    for name in build.NOTEBOOKS:
        with open(os.path.join(NOTEBOOKS, name)) as fh:
            assert fh.read() == build.render(name), f"{name} is out of date: run python notebooks/build.py"
        nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                ast.parse(cell.source)  # a quoting slip in build.py shows here, not minutes into a notebook run
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


def test_notebooks_install_the_readme_jax_build_from_one_repository_url():
    """The setup cell installs the README's CUDA build, and every notebook names the same repository."""
    with open(os.path.join(ROOT, "README.md")) as fh:
        readme_cuda = set(re.findall(r'pip install "(jax\[cuda\d+\][^"]*)"', fh.read()))
    assert len(readme_cuda) == 1, readme_cuda
    sys.path.insert(0, NOTEBOOKS)
    try:
        import nb_cells
    finally:
        sys.path.remove(NOTEBOOKS)
    assert {nb_cells.JAX_CUDA} == readme_cuda
    for name in SETTINGS:
        nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
        source = "\n".join(c.source for c in nb.cells)
        assert nb_cells.JAX_CUDA in source and "cuda12" not in source, name
        assert f'R1JAX_REPO = "{nb_cells.R1JAX_REPO}"' in source and "REPO_URL" not in source, name
        colab = nb_cells.COLAB.format(name)
        assert colab.startswith(nb_cells.R1JAX_REPO.replace("github.com", "colab.research.google.com/github")), colab
        assert colab in source, name
