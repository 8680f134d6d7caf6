"""The cells every notebook of this folder is made of (markdown, code, the "parameters" cell, setup) and the
notebook wrapper; notebooks/build.py writes the notebooks from them."""
from __future__ import annotations

import textwrap

import nbformat

# Where r1jax is published. The checkout these notebooks were built in has no git remote, so this is a placeholder:
# set it and run `python notebooks/build.py`.
R1JAX_REPO = "https://github.com/<org>/r1jax"
COLAB = R1JAX_REPO.replace("https://github.com/", "https://colab.research.google.com/github/") + \
    "/blob/main/notebooks/{}"
# The jax builds the README installs (GPU: its CUDA 13 build; TPU: jax[tpu]); requirements.txt brings the rest.
JAX_BOUNDS = ">=0.10.2,<0.12"
JAX_CUDA, JAX_TPU, JAX_CPU = f"jax[cuda13]{JAX_BOUNDS}", f"jax[tpu]{JAX_BOUNDS}", f"jax{JAX_BOUNDS}"


def md(text: str):
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str, tags: tuple[str, ...] = ()):
    cell = nbformat.v4.new_code_cell(textwrap.dedent(text).strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def parameters(text: str):
    """The cell tagged "parameters" (CI injects its settings after it), ending with where the repository is."""
    return code(textwrap.dedent(text).strip() + "\n" + textwrap.dedent(REPO_PARAMS).strip(), tags=("parameters",))


SETUP_MD = """
    ## Setup

    Finds the r1jax checkout (`REPO`, this notebook's own repository, or `/content/r1jax`) and puts it on the import
    path. On a fresh Colab runtime there is none: the cell clones `R1JAX_REPO` and installs `requirements.txt`, with
    the jax build for the runtime's accelerator (as the README does: `pip install "jax[cuda13]>=0.10.2,<0.12"` on a
    GPU, `jax[tpu]` on a TPU). Wherever the repository is already there (a local checkout, CI) nothing is installed.
    If pip replaced a package Colab had already imported, restart the session and run again. JAX's compilation cache
    (`~/.cache/r1jax/jax_cache`) makes a rerun of the notebook skip most compiling.
"""

SETUP = """
    import glob, os, shutil, subprocess, sys

    def find_repo(candidates):
        for d in candidates:
            if d and os.path.isdir(os.path.join(d, "r1jax")) and os.path.exists(os.path.join(d, "requirements.txt")):
                return os.path.abspath(d)
        return None

    REPO_DIR = find_repo([REPO, os.getcwd(), os.path.dirname(os.getcwd()), "/content/r1jax"])
    if REPO_DIR is None:  # a fresh Colab runtime
        REPO_DIR = os.path.abspath(REPO or "/content/r1jax")
        subprocess.run(["git", "clone", "--depth=1", R1JAX_REPO, REPO_DIR], check=True)
        on_tpu = glob.glob("/dev/accel*") or any(k in os.environ for k in ("TPU_ACCELERATOR_TYPE", "COLAB_TPU_ADDR"))
        jax_pkg = "{JAX_CPU}"
        if on_tpu:
            jax_pkg = "{JAX_TPU}"
        elif shutil.which("nvidia-smi"):
            jax_pkg = "{JAX_CUDA}"  # the README's CUDA build
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", jax_pkg,
                        "-r", os.path.join(REPO_DIR, "requirements.txt")], check=True)
    if REPO_DIR not in sys.path:
        sys.path.insert(0, REPO_DIR)
    from r1jax import jax_setup
    print("r1jax:", REPO_DIR, "| compilation cache:", jax_setup.enable_compilation_cache())
""".replace("{JAX_TPU}", JAX_TPU).replace("{JAX_CUDA}", JAX_CUDA).replace("{JAX_CPU}", JAX_CPU)

REPO_PARAMS = f"""
    REPO = ""                     # an r1jax checkout; "" = this notebook's own, else R1JAX_REPO is cloned (Colab)
    R1JAX_REPO = "{R1JAX_REPO}"   # where r1jax is published (a placeholder: set it)
"""


def notebook(cells, accelerator: str | None):
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}, "colab": {"provenance": []}}
    if accelerator:
        nb.metadata["accelerator"] = accelerator  # Colab opens the notebook on this runtime type
    for i, cell in enumerate(nb.cells):  # stable ids, so rebuilding an unchanged notebook changes nothing
        cell["id"] = f"cell-{i:02d}"
    return nb
