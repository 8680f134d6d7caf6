import json

import numpy as np
import pytest

from r1jax import tokenizer as tok_lib
from r1jax.tokenizer import ByteTokenizer, HFTokenizer, Tokenizer, load_tokenizer

BOS_DS = "<｜begin▁of▁sentence｜>"
EOS_DS = "<｜end▁of▁sentence｜>"


# ---------------------------------------------------------------------------------------------------------------------
# ByteTokenizer
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def byte_tok():
    return ByteTokenizer()


@pytest.mark.parametrize("text", [
    "", "hello world", "Ünïcödé 日本語 🙂 ∑ x²", "tabs\tand\nnewlines\r\n", "<|pad|> stays text",
    "<thinker> <think </think", "{braces} \\boxed{42}",
])
def test_byte_round_trip(byte_tok, text):
    ids = byte_tok.encode(text)
    assert all(isinstance(i, int) for i in ids)
    assert byte_tok.decode(ids) == text
    assert byte_tok.decode(np.asarray(ids, np.int32)) == text


def test_byte_specials_are_single_ids(byte_tok):
    tok = byte_tok
    specials = {"<|bos|>": tok.bos_id, "<|eos|>": tok.eos_id, "<think>": 259, "</think>": 260,
                "<answer>": 261, "</answer>": 262}
    for s, i in specials.items():
        assert tok.encode(s) == [i]
        assert tok.token_to_id(s) == i
        assert tok.decode([i]) == s
    assert len(set(specials.values()) | {tok.pad_id}) == 7
    assert tok.pad_id == 256 and tok.bos_id == 257 and tok.eos_id == 258
    assert tok.vocab_size == 264 and tok.vocab_size % 8 == 0
    assert all(i < tok.vocab_size for i in specials.values())


def test_byte_specials_inside_text(byte_tok):
    text = "x<think>a+b</think> <answer>3</answer><|eos|>"
    ids = byte_tok.encode(text)
    assert ids == [ord("x"), 259, ord("a"), ord("+"), ord("b"), 260, ord(" "), 261, ord("3"), 262, 258]
    assert byte_tok.decode(ids) == text


def test_byte_decode_drops_pad_and_does_not_stop_at_eos(byte_tok):
    t = byte_tok
    ids = t.encode("ab") + [t.eos_id] + t.encode("c") + [t.pad_id, t.pad_id]
    assert t.decode(ids) == "ab<|eos|>c"
    assert t.encode("<|pad|>") == list(b"<|pad|>")  # the pad string is never a token in text


def test_byte_invalid_utf8_is_replaced(byte_tok):
    t = byte_tok
    assert t.decode([0xFF, ord("a"), 0xC3]) == "\ufffda\ufffd"
    e_acute = list("é".encode())  # two bytes; a special between them breaks the character
    assert t.decode([e_acute[0], 259, e_acute[1]]) == "\ufffd<think>\ufffd"
    assert t.decode([263]) == "\ufffd"  # the spare id from padding the vocabulary
    assert t.decode([]) == ""


def test_byte_decode_rejects_bad_ids(byte_tok):
    with pytest.raises(ValueError, match=r"token id -?\d+ is outside the tokenizer.s vocabulary of \d+ ids"):
        byte_tok.decode([1, 264])
    with pytest.raises(ValueError, match=r"token id -?\d+ is outside the tokenizer.s vocabulary of \d+ ids"):
        byte_tok.decode([-1])
    with pytest.raises(ValueError, match="one sequence"):
        byte_tok.decode([[1, 2]])


def test_byte_is_protocol_and_deterministic(byte_tok):
    assert isinstance(byte_tok, Tokenizer)
    assert ByteTokenizer().encode("é<think>") == byte_tok.encode("é<think>")


# ---------------------------------------------------------------------------------------------------------------------
# Templates: the expected strings are written out in full on purpose.
# ---------------------------------------------------------------------------------------------------------------------

R1_ZERO_EXPECTED = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant "
    "first thinks about the reasoning process in the mind and then provides the user with the answer. The reasoning "
    "process and answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., "
    "<think> reasoning process here </think> <answer> answer here </answer>. User: What is 2+3?. Assistant:"
)


def test_templates_render_exactly(byte_tok):
    t = byte_tok
    # "User: {prompt}. Assistant:" is rendered verbatim, so a prompt ending in "?" gives "?." (as in R1 Table 1).
    assert t.apply_template("r1_zero", "What is 2+3?") == R1_ZERO_EXPECTED
    assert t.apply_template("r1_distill", "What is 2+3?") == "<|bos|><｜User｜>What is 2+3?<｜Assistant｜><think>\n"
    assert t.apply_template("math_distill", "Find x.") == (
        "<|bos|><｜User｜>Find x.\nPlease reason step by step, and put your final answer within \\boxed{}."
        "<｜Assistant｜><think>\n")
    assert t.apply_template("plain", "Find {x}.") == "Find {x}."
    assert t.apply_template("r1_zero_short", "1 2 3 -> 6") == "User: 1 2 3 -> 6\nAssistant: <think>"
    # braces in prompts survive (no str.format)
    assert t.apply_template("r1_zero", "{0} \\boxed{}").endswith("User: {0} \\boxed{}. Assistant:")


def test_template_codepoints():
    text = tok_lib.render_template("r1_distill", "q", bos_text=BOS_DS)
    assert text == "<\uff5cbegin\u2581of\u2581sentence\uff5c><\uff5cUser\uff5c>q<\uff5cAssistant\uff5c><think>\n"


def test_template_completion_prefixes():
    assert tok_lib.get_template("r1_zero").completion_prefix == ""
    assert tok_lib.get_template("r1_zero_short").completion_prefix == "<think>"
    assert tok_lib.get_template("r1_distill").completion_prefix == "<think>\n"
    assert tok_lib.get_template("math_distill").completion_prefix == "<think>\n"
    for name, template in tok_lib.TEMPLATES.items():
        assert template.render("P", "").endswith(template.completion_prefix), name


def test_unknown_template_lists_known(byte_tok):
    with pytest.raises(KeyError, match="r1_zero_short"):
        byte_tok.apply_template("r1-zero", "x")


def test_template_tokens_with_byte_tokenizer(byte_tok):
    ids = byte_tok.encode(byte_tok.apply_template("r1_distill", "hi"))
    assert ids[0] == byte_tok.bos_id and ids[-2:] == [259, ord("\n")]


# ---------------------------------------------------------------------------------------------------------------------
# HFTokenizer on a tokenizer.json built here
# ---------------------------------------------------------------------------------------------------------------------


def _build_bpe(folder, config=None, bos_post_processor=False):
    from tokenizers import Tokenizer as HFTok, decoders, models, pre_tokenizers, processors, trainers

    tok = HFTok(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=[BOS_DS, EOS_DS, "<｜User｜>", "<｜Assistant｜>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["the cat sat on the mat", "what is two plus three", "ünïcode and 日本語"],
                            trainer=trainer)
    tok.add_tokens(["<think>", "</think>"])
    if bos_post_processor:
        tok.post_processor = processors.TemplateProcessing(single=f"{BOS_DS} $A", special_tokens=[(BOS_DS, 0)])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


DS_CONFIG = {
    "bos_token": {"__type": "AddedToken", "content": BOS_DS, "lstrip": False},
    "eos_token": EOS_DS,
    "pad_token": EOS_DS,
    "add_bos_token": True,
    "chat_template": "{{ bos_token }}{% for m in messages %}<｜User｜>{{ m['content'] }}{% endfor %}",
}


def test_hf_special_ids_and_round_trip(tmp_path):
    folder = _build_bpe(tmp_path / "ds", DS_CONFIG)
    tok = HFTokenizer(folder)
    assert isinstance(tok, Tokenizer)
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 1)
    assert tok.add_bos_token is True
    assert tok.chat_template == DS_CONFIG["chat_template"]
    assert tok.vocab_size == tok.token_to_id("</think>") + 1  # added tokens counted
    for text in ["the cat sat", "ünïcode 日本語 🙂", "a <think>b</think> c", ""]:
        assert tok.decode(tok.encode(text)) == text
    prompt = tok.apply_template("r1_distill", "what is two plus three")
    ids = tok.encode(prompt)
    assert ids[0] == tok.bos_id and ids[1] == tok.token_to_id("<｜User｜>")
    assert tok.token_to_id("<｜Assistant｜>") in ids and ids[-2] == tok.token_to_id("<think>")
    assert tok.decode(ids) == prompt
    assert tok.encode("x")[0] != tok.bos_id  # encode adds nothing
    # pad (== eos here) is dropped; other specials decode to their text
    assert tok.decode(tok.encode("cat") + [tok.pad_id]) == "cat"


def test_hf_file_path_and_fallbacks(tmp_path):
    folder = _build_bpe(tmp_path / "qwen", {"bos_token": None, "eos_token": EOS_DS}, bos_post_processor=False)
    tok = load_tokenizer(folder / "tokenizer.json")
    assert isinstance(tok, HFTokenizer)
    assert tok.bos_id is None and tok.pad_id == tok.eos_id == 1 and tok.add_bos_token is False
    assert tok.apply_template("r1_distill", "q") == "<｜User｜>q<｜Assistant｜><think>\n"


def test_hf_add_bos_from_post_processor(tmp_path):
    folder = _build_bpe(tmp_path / "llama", {"bos_token": BOS_DS, "eos_token": EOS_DS}, bos_post_processor=True)
    tok = HFTokenizer(folder)
    assert tok.add_bos_token is True
    assert tok.encode("the cat")[0] != tok.bos_id


def test_hf_errors(tmp_path):
    folder = _build_bpe(tmp_path / "noconf")
    with pytest.raises(ValueError, match="no eos token"):
        HFTokenizer(folder)
    assert HFTokenizer(folder, eos_token=EOS_DS).eos_id == 1
    with pytest.raises(ValueError, match="not in the vocabulary"):
        HFTokenizer(folder, eos_token="<eos>")
    bad = _build_bpe(tmp_path / "bad", {"eos_token": EOS_DS, "pad_token": 7})
    with pytest.raises(ValueError, match="pad_token"):
        HFTokenizer(bad)
    with pytest.raises(FileNotFoundError):
        HFTokenizer(tmp_path / "missing")
    tok = HFTokenizer(folder, eos_token=EOS_DS)
    with pytest.raises(ValueError, match=r"token id -?\d+ is outside the tokenizer.s vocabulary of \d+ ids"):
        tok.decode([tok.vocab_size])


def test_load_tokenizer_specs(tmp_path):
    assert isinstance(load_tokenizer("byte"), ByteTokenizer)
    with pytest.raises(ValueError, match="unknown tokenizer"):
        load_tokenizer(str(tmp_path / "nope"))
