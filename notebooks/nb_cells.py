"""The cells every notebook of this folder is made of (markdown, code, the "parameters" cell, setup) and the
notebook wrapper; notebooks/build.py writes the notebooks from them."""
from __future__ import annotations

import textwrap

import nbformat

REPO_URL = "https://github.com/<org>/r1jax.git"  # placeholder: where the repository is published
COLAB = "https://colab.research.google.com/github/<org>/r1jax/blob/main/notebooks/{}"


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
    path. On a fresh Colab runtime there is none: the cell clones `REPO_URL` and installs `requirements.txt`, with the
    jax build for the runtime's accelerator. Wherever the repository is already there (a local checkout, CI) nothing
    is installed. If pip replaced a package Colab had already imported, restart the session and run again.
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
        subprocess.run(["git", "clone", "--depth=1", REPO_URL, REPO_DIR], check=True)
        on_tpu = glob.glob("/dev/accel*") or any(k in os.environ for k in ("TPU_ACCELERATOR_TYPE", "COLAB_TPU_ADDR"))
        jax_pkg = "jax[tpu]" if on_tpu else "jax[cuda12]" if shutil.which("nvidia-smi") else "jax"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", jax_pkg + ">=0.10.2,<0.12",
                        "-r", os.path.join(REPO_DIR, "requirements.txt")], check=True)
    if REPO_DIR not in sys.path:
        sys.path.insert(0, REPO_DIR)
    print("r1jax:", REPO_DIR)
"""

REPO_PARAMS = f"""
    REPO = ""                     # an r1jax checkout; "" = this notebook's repository, else REPO_URL is cloned (Colab)
    REPO_URL = "{REPO_URL}"
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
