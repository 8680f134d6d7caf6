"""Tokenizers and prompt templates.

Two tokenizers share one small protocol (`Tokenizer`):

- `ByteTokenizer`: UTF-8 bytes plus the handful of special tokens the built-in tasks need. No files, no training.
- `HFTokenizer`: a `tokenizer.json` (the `tokenizers` library) with bos/eos/pad from `tokenizer_config.json`.

Neither adds special tokens on its own: `encode` maps text to ids and nothing else. A template that needs a bos
token writes its text (the distill chat template does, as HF's `{{bos_token}}` does), and `encode` turns that text
into the bos id because every special token's literal string is recognised inside text.

Templates are named (`TEMPLATES`); `apply_template(name, prompt)` renders one with the tokenizer's bos text.
Some templates already open the assistant's reasoning ("...<think>\\n"); `Template.completion_prefix` says what
the prompt already wrote of the assistant's turn, so a format check can score `completion_prefix + completion`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Tokenizer(Protocol):
    """What the rest of r1jax needs of a tokenizer."""

    @property
    def eos_id(self) -> int: ...

    @property
    def pad_id(self) -> int: ...

    @property
    def bos_id(self) -> int | None: ...

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int] | np.ndarray) -> str: ...

    def apply_template(self, name: str, prompt: str) -> str: ...


# --------------------------------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------------------------------

R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
    "User: {prompt}. Assistant:"
)
DISTILL_USER = "<｜User｜>"  # fullwidth vertical bars (U+FF5C)
DISTILL_ASSISTANT = "<｜Assistant｜>"
MATH_INSTRUCTION = "\nPlease reason step by step, and put your final answer within \\boxed{}."


@dataclasses.dataclass(frozen=True)
class Template:
    """A prompt template.

    render(prompt, bos_text) -> the full prompt text (bos_text is "" for a tokenizer without bos).
    completion_prefix: the text of the assistant's turn the prompt already contains; a completion sampled after this
      prompt continues it, so format rewards should see `completion_prefix + completion`.
    """

    name: str
    render: Callable[[str, str], str]
    completion_prefix: str
    doc: str


def _r1_zero(prompt: str, bos_text: str) -> str:
    del bos_text  # R1 Table 1 is plain text; whether a base model wants bos in front is the caller's call
    return R1_ZERO_TEMPLATE.replace("{prompt}", prompt)  # not str.format: prompts contain braces (\boxed{})


def _r1_distill(prompt: str, bos_text: str) -> str:
    return bos_text + DISTILL_USER + prompt + DISTILL_ASSISTANT + "<think>\n"


def _math_distill(prompt: str, bos_text: str) -> str:
    return _r1_distill(prompt + MATH_INSTRUCTION, bos_text)


def _plain(prompt: str, bos_text: str) -> str:
    del bos_text
    return prompt


def _r1_zero_short(prompt: str, bos_text: str) -> str:
    del bos_text
    return "User: " + prompt + "\nAssistant: <think>"


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in [
        Template("r1_zero", _r1_zero, "",
                 "R1-Zero (R1 Table 1), rendered exactly; the model writes '<think>' itself."),
        Template("r1_distill", _r1_distill, "<think>\n",
                 "R1 / distill chat template: bos + '<｜User｜>' + prompt + '<｜Assistant｜><think>\\n'."),
        Template("math_distill", _math_distill, "<think>\n",
                 "r1_distill with the R1 README's math instruction appended to the prompt."),
        Template("plain", _plain, "", "The prompt unchanged."),
        # The prompt opens <think> for the model, as the distill template does and TinyZero's does: a tiny byte
        # model then never has to learn to open the tag and every sample starts reasoning. What it loses (choosing not
        # to think) does not matter on the synthetic tasks this template is for. r1_zero keeps the paper's choice.
        Template("r1_zero_short", _r1_zero_short, "<think>",
                 "Compact R1-Zero-style template for tiny byte-level models; the prompt opens '<think>'."),
    ]
}


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise KeyError(f"unknown template {name!r}; known templates: {sorted(TEMPLATES)}")
    return TEMPLATES[name]


def render_template(name: str, prompt: str, *, bos_text: str = "") -> str:
    return get_template(name).render(prompt, bos_text)


# --------------------------------------------------------------------------------------------------------------------
# Byte tokenizer
# --------------------------------------------------------------------------------------------------------------------

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
THINK, END_THINK, ANSWER, END_ANSWER = "<think>", "</think>", "<answer>", "</answer>"
_REPLACEMENT = "\ufffd"


class ByteTokenizer:
    """UTF-8 bytes plus special tokens.

    Ids 0..255 are the bytes themselves; 256.. are the specials in this order: pad, bos, eos, <think>, </think>,
    <answer>, </answer>. vocab_size is padded up to a multiple of 8 (264) so embedding tables tile evenly; the
    spare id decodes to U+FFFD.

    encode recognises the literal strings of bos, eos and the four tags anywhere in text. The pad string is NOT
    recognised: decode drops pad ids, so a "<|pad|>" typed into text stays bytes and round-trips. decode maps
    specials back to their strings, drops pad, stops at nothing (callers cut at eos) and replaces invalid UTF-8
    with U+FFFD. A multi-byte character split by a special token therefore decodes to replacement characters.
    """

    SPECIAL_TOKENS = (PAD, BOS, EOS, THINK, END_THINK, ANSWER, END_ANSWER)
    NUM_BYTES = 256

    def __init__(self):
        self._special_to_id = {s: self.NUM_BYTES + i for i, s in enumerate(self.SPECIAL_TOKENS)}
        self._id_to_special = {i: s for s, i in self._special_to_id.items()}
        self._id_to_special[self.pad_id] = ""
        n = self.NUM_BYTES + len(self.SPECIAL_TOKENS)
        self._vocab_size = -(-n // 8) * 8
        for i in range(n, self._vocab_size):
            self._id_to_special[i] = _REPLACEMENT
        in_text = sorted((s for s in self.SPECIAL_TOKENS if s != PAD), key=len, reverse=True)
        self._split_re = re.compile("(" + "|".join(re.escape(s) for s in in_text) + ")")

    @property
    def pad_id(self) -> int:
        return self.NUM_BYTES  # 256

    @property
    def bos_id(self) -> int:
        return self.NUM_BYTES + 1

    @property
    def eos_id(self) -> int:
        return self.NUM_BYTES + 2

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def bos_text(self) -> str:
        return BOS

    def token_to_id(self, token: str) -> int | None:
        """Id of a special token's string (None for anything else)."""
        return self._special_to_id.get(token)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for i, piece in enumerate(self._split_re.split(text)):
            if i % 2:  # re.split with one group: odd pieces are the separators
                ids.append(self._special_to_id[piece])
            elif piece:
                ids.extend(piece.encode("utf-8"))
        return ids

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        ids_T = _as_ids(ids, self._vocab_size)
        special = np.flatnonzero(ids_T >= self.NUM_BYTES)
        if special.size == 0:
            return ids_T.astype(np.uint8).tobytes().decode("utf-8", errors="replace")
        parts, start = [], 0
        for pos in special.tolist():
            if pos > start:
                parts.append(ids_T[start:pos].astype(np.uint8).tobytes().decode("utf-8", errors="replace"))
            parts.append(self._id_to_special[int(ids_T[pos])])
            start = pos + 1
        if start < ids_T.size:
            parts.append(ids_T[start:].astype(np.uint8).tobytes().decode("utf-8", errors="replace"))
        return "".join(parts)

    def apply_template(self, name: str, prompt: str) -> str:
        return render_template(name, prompt, bos_text=self.bos_text)

    def __repr__(self) -> str:
        return f"ByteTokenizer(vocab_size={self.vocab_size})"


def _as_ids(ids: Sequence[int] | np.ndarray, vocab_size: int) -> np.ndarray:
    """ids -> int64 [T]; an id outside [0, vocab_size) is an error (a model whose vocab is padded past the
    tokenizer's must mask those logits rather than have them decoded to nothing)."""
    ids_T = np.asarray(ids)
    if ids_T.ndim != 1:
        raise ValueError(f"decode takes one sequence of ids [T]; got shape {ids_T.shape}")
    if ids_T.size == 0:
        return ids_T.astype(np.int64)
    if not np.issubdtype(ids_T.dtype, np.integer):
        raise TypeError(f"token ids must be integers; got dtype {ids_T.dtype}")
    ids_T = ids_T.astype(np.int64)
    bad = (ids_T < 0) | (ids_T >= vocab_size)
    if bad.any():
        raise ValueError(f"token id {int(ids_T[bad][0])} is outside the tokenizer's vocabulary of {vocab_size} ids "
                         f"([0, {vocab_size})); a model whose vocabulary rows are padded past the tokenizer's must "
                         f"not emit ids >= {vocab_size} (r1jax's sampler masks them: sample(..., vocab_limit=))")
    return ids_T


# --------------------------------------------------------------------------------------------------------------------
# HF tokenizer.json
# --------------------------------------------------------------------------------------------------------------------


class HFTokenizer:
    """A `tokenizers` tokenizer.json with special tokens from tokenizer_config.json.

    path: tokenizer.json, or a folder holding it. tokenizer_config.json (and chat_template.jinja) are read from the
    same folder when present. bos_token / eos_token / pad_token override the config's. Resolution:
      eos: required; an error names the file that lacks it.
      bos: None when the config has none (Qwen).
      pad: the config's pad_token; when it has none, the eos token (HF's usual `pad_token = eos_token`; padding is
        always masked in r1jax, so sharing the id is harmless). decode drops pad ids, so with pad == eos the eos text
        is dropped too; callers cut at eos before decoding anyway.
    A named token that is not in the vocabulary is an error.

    encode never adds special tokens (the post-processor is bypassed). `add_bos_token` reports whether the model
    family expects bos in front of every document (tokenizer_config's `add_bos_token`, else whether the
    tokenizer.json post-processor prepends it); templates other than the distill ones do not write bos, so callers
    feeding e.g. r1_zero to a Llama/DeepSeek base model may want to prepend `bos_id`.
    `chat_template` is the raw HF Jinja string (or None); it is exposed, not rendered.
    vocab_size counts added tokens; a model's embedding table may be larger.
    """

    def __init__(self, path: str | os.PathLike, *, bos_token: str | None = None, eos_token: str | None = None,
                 pad_token: str | None = None):
        import tokenizers  # deferred: the byte tokenizer must not need it

        path = os.fspath(path)
        if os.path.isdir(path):
            folder, json_path = path, os.path.join(path, "tokenizer.json")
        else:
            folder, json_path = os.path.dirname(path) or ".", path
        if not os.path.isfile(json_path):
            raise FileNotFoundError(f"no tokenizer.json at {json_path}")
        self.path = json_path
        try:
            self._tok = tokenizers.Tokenizer.from_file(json_path)
        except Exception as e:  # noqa: BLE001 - the library raises a bare Exception for a bad file
            raise ValueError(f"{json_path}: not a tokenizer.json the `tokenizers` library can read ({e})") from e
        self._vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

        config_path = os.path.join(folder, "tokenizer_config.json")
        config: dict[str, Any] = {}
        if os.path.isfile(config_path):
            with open(config_path, encoding="utf-8") as f:
                try:
                    config = json.load(f)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{config_path} is not valid JSON: {e}") from e
            if not isinstance(config, dict):
                raise ValueError(f"{config_path} must hold a JSON object, got {type(config).__name__}")
        where = config_path if config else f"{config_path} (absent)"

        eos = eos_token or _token_content(config.get("eos_token"), "eos_token", config_path)
        if eos is None:
            raise ValueError(f"no eos token: {where} has no 'eos_token'; pass HFTokenizer(..., eos_token=...)")
        bos = bos_token or _token_content(config.get("bos_token"), "bos_token", config_path)
        pad = pad_token or _token_content(config.get("pad_token"), "pad_token", config_path) or eos
        self.eos_token, self.bos_token, self.pad_token = eos, bos, pad
        self._eos_id = self._require_id(eos, "eos_token")
        self._pad_id = self._require_id(pad, "pad_token")
        self._bos_id = None if bos is None else self._require_id(bos, "bos_token")

        if isinstance(config.get("add_bos_token"), bool):
            self.add_bos_token = config["add_bos_token"]
        else:
            self.add_bos_token = (self._bos_id is not None
                                  and self._tok.encode("", add_special_tokens=True).ids[:1] == [self._bos_id])
        self.chat_template = _chat_template(config, folder)

    def _require_id(self, token: str, what: str) -> int:
        i = self._tok.token_to_id(token)
        if i is None:
            raise ValueError(f"{what} {token!r} is not in the vocabulary of {self.path}")
        return i

    @property
    def eos_id(self) -> int:
        return self._eos_id

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def bos_id(self) -> int | None:
        return self._bos_id

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def bos_text(self) -> str:
        return self.bos_token or ""

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        ids_T = _as_ids(ids, self._vocab_size)
        return self._tok.decode([i for i in ids_T.tolist() if i != self._pad_id], skip_special_tokens=False)

    def apply_template(self, name: str, prompt: str) -> str:
        return render_template(name, prompt, bos_text=self.bos_text)

    def __repr__(self) -> str:
        return f"HFTokenizer({self.path!r}, vocab_size={self.vocab_size})"


def _token_content(value: Any, key: str, config_path: str) -> str | None:
    """tokenizer_config stores a special token as a string, an AddedToken dict ({"content": ...}) or null."""
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{config_path}: cannot read {key}={value!r} (expected a string or {{'content': ...}})")


def _chat_template(config: dict[str, Any], folder: str) -> str | None:
    jinja_path = os.path.join(folder, "chat_template.jinja")
    if os.path.isfile(jinja_path):  # transformers >= 4.43 saves it beside the config
        with open(jinja_path, encoding="utf-8") as f:
            return f.read()
    value = config.get("chat_template")
    if isinstance(value, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        value = named.get("default")
    return value if isinstance(value, str) else None


def load_tokenizer(spec: str | os.PathLike) -> ByteTokenizer | HFTokenizer:
    """'byte' -> ByteTokenizer(); a path to tokenizer.json or a folder holding it -> HFTokenizer(path)."""
    if spec == "byte":
        return ByteTokenizer()
    if os.path.exists(os.fspath(spec)):
        return HFTokenizer(spec)
    raise ValueError(f"unknown tokenizer {spec!r}: expected 'byte' or a path to tokenizer.json (or its folder)")
