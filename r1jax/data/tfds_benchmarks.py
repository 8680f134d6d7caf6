"""Evaluation benchmarks (GSM8K, MATH-500, AIME, GPQA) from local JSONL files as a TFDS dataset.

Nothing is downloaded: the builder reads `<manual_dir>/<config>/<split>.jsonl` (every .jsonl file in the config's
folder becomes a split named by its stem, e.g. `aime/aime24.jsonl` -> split 'aime24') and writes array_record
files, which `tfds.data_source` / `builder.as_data_source` read back as a random-access source for grain. Neither
step needs TensorFlow (checked with tensorflow-datasets 4.9.10 + array_record 0.8.6, TensorFlow absent).

Records (all text, str after `load_benchmark`):
  id        the row's 'id' / 'unique_id' / 'Record ID', else '<split>-<line>' (1-based line number)
  question  the problem statement, verbatim
  answer    the gold final answer: GSM8K the text after the last '####'; MATH/AIME the 'answer' field; GPQA a letter
            A-D. '' for a MATH row that only has a 'solution' (see `load_benchmark`'s gold_from_solution).
  solution  the worked solution / rationale when the row has one, else ''
  choices   GPQA only: the 4 options, in A-D order

Accepted JSONL rows, per config:
  gsm8k    {"question", "answer": "...rationale... #### 72"}  (no '####': the whole field is the answer)
  math500  {"problem", "answer"[, "solution"]} or {"problem", "solution"}   (HuggingFaceH4/MATH-500 has both)
  aime     {"problem" | "question" | "Problem" | "Question", "answer" | "Answer"[, "solution" | "Solution"]}
  gpqa     {"question", "choices": [4 strings], "answer": "A".."D" | 0..3 | the correct choice's text}
           or the original {"Question", "Correct Answer", "Incorrect Answer 1", "... 2", "... 3"[, "Explanation"]},
           whose options are shuffled into A-D by a seeded hash of the question (GPQA_SHUFFLE_SEED), so the order
           is the same on every machine and independent of the file's row order.

Prepared data is keyed by the sha256 of each source file (stored in the dataset's metadata); `load_benchmark`
re-prepares when a file changed, was added or was removed, so a stale cache is never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, SupportsIndex

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

CONFIGS = ("gsm8k", "math500", "aime", "gpqa")
LETTERS = "ABCD"
GPQA_SHUFFLE_SEED = 0

_DESCRIPTIONS = {
    "gsm8k": "GSM8K: grade-school word problems; answer = the number after '####'.",
    "math500": "MATH-500: competition math; answer = the 'answer' field (LaTeX).",
    "aime": "AIME: 15 problems a year; integer answers 0-999.",
    "gpqa": "GPQA: graduate-level multiple choice; answer = a letter A-D.",
}


class R1Benchmarks(tfds.core.GeneratorBasedBuilder):
    """TFDS builder `r1_benchmarks/<config>` over local JSONL files (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n, description=_DESCRIPTIONS[n]) for n in CONFIGS]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put one JSONL file per split in <manual_dir>/<config>/, e.g. <manual_dir>/gsm8k/test.jsonl, "
        "<manual_dir>/aime/aime24.jsonl. Field formats: see r1jax/data/tfds_benchmarks.py.")

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS 4.9.10 finds a packaged builder's file through `importlib_resources`, a backport it declares only for
        # Python < 3.9 (tensorflow/datasets#11212), so preparing fails with ModuleNotFoundError without it.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        text = tfds.features.Text()
        features = {"id": text, "question": text, "answer": text, "solution": text}
        if self.builder_config.name == "gpqa":
            features["choices"] = tfds.features.Sequence(tfds.features.Text(), length=4)
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.builder_config.description,
            features=tfds.features.FeaturesDict(features),
            disable_shuffling=True,  # keep file order: "the first N problems" must mean the same thing everywhere
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        files = _source_files(epath.Path(dl_manager.manual_dir), self.builder_config.name)
        self.info.metadata["sources"] = {split: _sha256(path) for split, path in files.items()}
        self.info.metadata["missing_answers"] = {split: _count_missing_answers(self.builder_config.name, path)
                                                 for split, path in files.items()}
        return {split: self._generate_examples(path, split) for split, path in files.items()}

    def _generate_examples(self, path: epath.Path, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        convert = _CONVERTERS[self.builder_config.name]
        for line_no, row in _read_jsonl(path):
            where = f"{path}:{line_no}"
            example = convert(row, where)
            example["id"] = _row_id(row, f"{split}-{line_no}")
            yield line_no, example


# --------------------------------------------------------------------------------------------------------------------
# Row formats
# --------------------------------------------------------------------------------------------------------------------


def _field(row: Mapping[str, Any], names: tuple[str, ...], where: str, *, required: bool = True) -> str | None:
    for n in names:
        if n in row and row[n] is not None:
            v = row[n]
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise ValueError(f"{where}: field {n!r} must be text or a number, got {type(v).__name__}")
            return v if isinstance(v, str) else str(v)
    if required:
        raise ValueError(f"{where}: none of the fields {list(names)} is present (row keys: {sorted(row)})")
    return None


def _gsm8k(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    raw = _field(row, ("answer",), where)
    if "####" in raw:
        solution, answer = raw.rsplit("####", 1)
    else:
        solution, answer = "", raw
    answer = answer.strip()
    if not answer:
        raise ValueError(f"{where}: empty answer after '####'")
    return {"question": _field(row, ("question",), where), "answer": answer, "solution": solution.strip()}


def _math500(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    answer = _field(row, ("answer",), where, required=False)
    solution = _field(row, ("solution",), where, required=False)
    if not answer and not solution:
        raise ValueError(f"{where}: a MATH row needs 'answer' or 'solution' (row keys: {sorted(row)})")
    return {"question": _field(row, ("problem",), where), "answer": (answer or "").strip(), "solution": solution or ""}


def _aime(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    answer = _field(row, ("answer", "Answer"), where).strip()
    if not answer:
        raise ValueError(f"{where}: empty answer")
    return {"question": _field(row, ("problem", "question", "Problem", "Question"), where), "answer": answer,
            "solution": _field(row, ("solution", "Solution"), where, required=False) or ""}


def _gpqa(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    if "choices" in row:
        question = _field(row, ("question",), where)
        choices = row["choices"]
        if not (isinstance(choices, list) and len(choices) == 4 and all(isinstance(c, str) for c in choices)):
            raise ValueError(f"{where}: 'choices' must be a list of 4 strings, got {choices!r}")
        letter = _gpqa_letter(row.get("answer"), choices, where)
    else:
        question = _field(row, ("Question",), where)
        options = [_field(row, (k,), where).strip()
                   for k in ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")]
        order = gpqa_order(question)
        choices = [options[j] for j in order]
        letter = LETTERS[order.index(0)]
    solution = _field(row, ("explanation", "Explanation"), where, required=False) or ""
    return {"question": question, "answer": letter, "solution": solution, "choices": choices}


def _gpqa_letter(answer: Any, choices: list[str], where: str) -> str:
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < 4:
        return LETTERS[answer]
    if isinstance(answer, str):
        letter = answer.strip().upper()
        if len(letter) == 1 and letter in LETTERS:
            return letter
        if choices.count(answer) == 1:
            return LETTERS[choices.index(answer)]
    raise ValueError(f"{where}: GPQA 'answer' must be a letter A-D, an index 0-3 or one choice's text; got {answer!r}")


def gpqa_order(question: str, seed: int = GPQA_SHUFFLE_SEED) -> list[int]:
    """Permutation of the 4 original options (0 = correct) for a question: option j goes to letter order.index(j).

    Sorting by sha256 of (seed, question, j) needs no RNG whose stream could change between library versions.
    """
    def key(j: int) -> bytes:
        return hashlib.sha256(f"{seed}\0{question}\0{j}".encode()).digest()
    return sorted(range(4), key=key)


_CONVERTERS: dict[str, Callable[[Mapping[str, Any], str], dict[str, Any]]] = {
    "gsm8k": _gsm8k, "math500": _math500, "aime": _aime, "gpqa": _gpqa}


def _row_id(row: Mapping[str, Any], default: str) -> str:
    for k in ("id", "unique_id", "Record ID"):
        if row.get(k) not in (None, ""):
            return str(row[k])
    return default


def _read_jsonl(path: epath.Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("r", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not valid JSON: {e}") from e
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
            yield line_no, row


def _source_files(manual_dir: epath.Path, config: str) -> dict[str, epath.Path]:
    folder = manual_dir / config
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no <split>.jsonl files in {folder} for r1_benchmarks/{config}. "
                                + R1Benchmarks.MANUAL_DOWNLOAD_INSTRUCTIONS)
    return {f.name[: -len(".jsonl")]: f for f in files}


def _sha256(path: epath.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _count_missing_answers(config: str, path: epath.Path) -> int:
    if config != "math500":
        return 0
    return sum(_math500(row, f"{path}:{n}")["answer"] == "" for n, row in _read_jsonl(path))


# --------------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------------


class BenchmarkSource:
    """Random-access source of benchmark records (dicts of str; 'choices' a list of str), for grain.

    len(source) records; source[i] decodes record i. When gold_from_solution is given, a record whose 'answer' is
    empty gets gold_from_solution(record['solution']) instead.
    """

    def __init__(self, source, name: str, split: str,
                 gold_from_solution: Callable[[str], str | None] | None = None):
        self._source = source
        self.name, self.split = name, split
        self._gold_from_solution = gold_from_solution

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: SupportsIndex) -> dict[str, Any]:
        record = {k: _to_text(v) for k, v in self._source[index].items()}
        if not record["answer"] and self._gold_from_solution is not None:
            gold = self._gold_from_solution(record["solution"])
            if not gold:
                raise ValueError(f"{self.name}/{self.split} record {record['id']!r}: no gold answer in its solution")
            record["answer"] = gold
        return record

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"BenchmarkSource(r1_benchmarks/{self.name}, split={self.split!r}, len={len(self)})"


def _to_text(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray) or isinstance(v, list):
        return [_to_text(x) for x in v]
    return v


def load_benchmark(name: str, manual_dir: str | os.PathLike, data_dir: str | os.PathLike, *,
                   split: str | None = None,
                   gold_from_solution: Callable[[str], str | None] | None = None) -> BenchmarkSource:
    """Prepares (once, or again when a source file changed) and opens one benchmark split.

    name: a config (gsm8k, math500, aime, gpqa). manual_dir: holds <name>/<split>.jsonl. data_dir: where the
    array_record files go. split: defaults to the only split there is (an error when there are several).
    gold_from_solution: the boxed-answer extractor (from r1jax.rewards) for MATH rows that have only a 'solution';
    required when the split has such rows, so an empty gold answer is never scored against.
    """
    if name not in CONFIGS:
        raise ValueError(f"unknown benchmark {name!r}; known: {list(CONFIGS)}")
    manual_dir, data_dir = epath.Path(manual_dir), os.fspath(data_dir)
    current = {s: _sha256(p) for s, p in _source_files(manual_dir, name).items()}
    download_config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))

    builder = R1Benchmarks(config=name, data_dir=data_dir, file_format="array_record")
    if builder.data_path.exists() and dict(builder.info.metadata.get("sources", {})) != current:
        logging.warning("r1_benchmarks/%s: source files in %s changed; preparing again", name, manual_dir)
        download_config = tfds.download.DownloadConfig(
            manual_dir=os.fspath(manual_dir), download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS)
    if not builder.data_path.exists() or download_config.download_mode.overwrite_dataset:
        builder.download_and_prepare(download_config=download_config)
        builder = R1Benchmarks(config=name, data_dir=data_dir, file_format="array_record")  # reads info from disk

    splits = sorted(builder.info.splits.keys())
    if split is None:
        if len(splits) != 1:
            raise ValueError(f"r1_benchmarks/{name} has splits {splits}; pass split=")
        split = splits[0]
    if split not in splits:
        raise ValueError(f"r1_benchmarks/{name} has no split {split!r}; known: {splits}")
    missing = int(builder.info.metadata.get("missing_answers", {}).get(split, 0))
    if missing and gold_from_solution is None:
        raise ValueError(f"r1_benchmarks/{name}/{split}: {missing} rows have a 'solution' but no 'answer'; pass "
                         "gold_from_solution= (the \\boxed{} extractor from r1jax.rewards)")
    return BenchmarkSource(builder.as_data_source(split=split), name, split, gold_from_solution)
