"""Small random-weight `transformers` checkpoints, saved with save_pretrained (no hub access)."""
from __future__ import annotations

import numpy as np


def make_hf_model(kind: str, folder, seed: int = 0, **overrides):
    """Builds a tiny random Qwen2 or Llama (llama3 rope scaling on) model in float32 and saves it to `folder`."""
    import torch
    import transformers

    torch.manual_seed(seed)
    common = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6)
    common.update(overrides)
    if kind == "qwen2":
        config = transformers.Qwen2Config(rope_theta=10000.0, tie_word_embeddings=False, **common)
        model = transformers.Qwen2ForCausalLM(config)
    elif kind == "llama":
        config = transformers.LlamaConfig(
            rope_theta=500000.0, tie_word_embeddings=False,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 16}, **common)
        model = transformers.LlamaForCausalLM(config)
    else:
        raise ValueError(kind)
    # Random init leaves biases zero and norms one: perturb everything so parity checks every tensor.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(folder)
    return model


def hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    import torch
    with torch.no_grad():
        return model(torch.as_tensor(tokens, dtype=torch.long)).logits.float().numpy()
