"""HF DeepseekV3 / V2 checkpoints: logits parity with transformers, export round trip, MTP tensors, configs."""
import json

import flax.linen as nn
import jax
import numpy as np
import pytest

from r1jax.models import hf, hf_deepseek
from r1jax.models.config import get_config
from r1jax.models.transformer import Transformer, init_params

COMMON = dict(vocab_size=64, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8, kv_lora_rank=16,
              qk_rope_head_dim=8, v_head_dim=12, qk_nope_head_dim=8, num_experts_per_tok=2, first_k_dense_replace=1,
              max_position_embeddings=256, rms_norm_eps=1e-6)
YARN = dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=32, beta_fast=32,
            beta_slow=1)


def make_deepseek(kind: str, folder, seed: int = 0):
    """Tiny random DeepseekV3 (q_lora, 4 groups keep 2, yarn with mscale != mscale_all_dim, random correction bias)
    or DeepseekV2 (softmax, plain q_proj, group-limited greedy), float32, saved with save_pretrained."""
    import torch
    import transformers
    torch.manual_seed(seed)
    if kind == "v3":
        config = transformers.DeepseekV3Config(
            **COMMON, q_lora_rank=12, n_group=4, topk_group=2, routed_scaling_factor=2.5,
            num_nextn_predict_layers=0, rope_parameters=dict(YARN, mscale=0.8, mscale_all_dim=1.0))
        model = transformers.DeepseekV3ForCausalLM(config)
    else:
        config = transformers.DeepseekV2Config(
            **COMMON, q_lora_rank=None, n_group=4, topk_group=2, topk_method="group_limited_greedy",
            rope_parameters=dict(YARN, mscale=0.707, mscale_all_dim=0.707))
        model = transformers.DeepseekV2ForCausalLM(config)
    with torch.no_grad():  # random init leaves norms at one and the bias at zero: perturb everything
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.05 * torch.randn_like(b))
    model.eval()
    model.save_pretrained(folder)
    return model


def torch_logits(model, tokens):
    import torch
    with torch.no_grad():
        return model(torch.as_tensor(tokens, dtype=torch.long)).logits.float().numpy()


@pytest.mark.parametrize("kind", ["v3", "v2"])
def test_logits_match_transformers_and_export_round_trips(kind, tmp_path):
    import transformers
    model = make_deepseek(kind, tmp_path / "in")
    tokens = np.random.default_rng(0).integers(0, 64, size=(2, 40))
    ref = torch_logits(model, tokens)
    cfg, params = hf.load(str(tmp_path / "in"), cfg_overrides=dict(dtype="float32", capacity_factor=8.0))
    assert cfg.attention == "mla" and cfg.router == ("sigmoid" if kind == "v3" else "softmax")
    assert cfg.q_lora_rank == (12 if kind == "v3" else 0)
    logits, aux = jax.jit(Transformer(cfg).apply)({"params": params}, tokens)
    assert float(aux["moe"]["dropped"].sum()) == 0
    err = np.abs(np.asarray(logits) - ref).max()
    assert err <= 1e-4, err

    out = hf.save(cfg, params, str(tmp_path / "out"))
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == f"deepseek_{kind}"
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out)
    reloaded.eval()
    np.testing.assert_allclose(torch_logits(reloaded, tokens), ref, atol=1e-6, rtol=0)


def test_bias_changes_routing_in_the_checkpoint(tmp_path):
    """The parity above is only meaningful if the random correction bias changes which experts are chosen."""
    make_deepseek("v3", tmp_path / "in")
    cfg, params = hf.load(str(tmp_path / "in"), cfg_overrides=dict(dtype="float32", capacity_factor=8.0))
    tokens = np.random.default_rng(0).integers(0, 64, size=(2, 40))
    _, aux = jax.jit(Transformer(cfg).apply)({"params": params}, tokens)
    params["moe_layers"]["moe"]["e_score_correction_bias"] *= 0
    _, aux0 = jax.jit(Transformer(cfg).apply)({"params": params}, tokens)
    assert (np.asarray(aux["moe"]["counts"]) != np.asarray(aux0["moe"]["counts"])).any()


def test_mtp_and_tied_embeddings_round_trip(tmp_path):
    cfg = get_config("moe_tiny", dtype="float32", mtp_depth=1, tie_embeddings=True)
    params = nn.unbox(jax.jit(lambda r: init_params(cfg, r))(jax.random.PRNGKey(0)))
    params = jax.tree.map(lambda p: p + 0.01 * np.arange(p.size).reshape(p.shape) % 0.37, params)
    hf.save(cfg, params, str(tmp_path / "out"))
    names = set(hf.SafetensorsReader(str(tmp_path / "out")).names())
    p = "model.layers.3."                                       # MTP module 0 = HF layer num_hidden_layers
    assert {p + "eh_proj.weight", p + "enorm.weight", p + "hnorm.weight", p + "shared_head.norm.weight",
            p + "embed_tokens.weight", p + "shared_head.head.weight", p + "mlp.experts.7.down_proj.weight",
            p + "mlp.gate.e_score_correction_bias", p + "self_attn.kv_b_proj.weight"} <= names
    assert "lm_head.weight" not in names
    cfg2, params2 = hf.load(str(tmp_path / "out"), cfg_overrides=dict(dtype="float32"))
    assert cfg2.mtp_depth == 1 and cfg2.tie_embeddings
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(params2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))


def test_transformers_save_without_mtp_weights_needs_mtp_depth_0(tmp_path):
    """transformers writes num_nextn_predict_layers=1 by default but never the MTP weights."""
    import transformers
    transformers.DeepseekV3ForCausalLM(transformers.DeepseekV3Config(**COMMON)).save_pretrained(tmp_path / "m")
    with pytest.raises(KeyError, match="model.layers.3"):
        hf.load(str(tmp_path / "m"))
    cfg, _ = hf.load(str(tmp_path / "m"), cfg_overrides=dict(mtp_depth=0))
    assert cfg.mtp_depth == 0


OFFICIAL_V3 = {  # DeepSeek-V3's config.json (deepseek_r1_spec.md §1), quantization_config left out
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "vocab_size": 129280,
    "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_hidden_layers": 61,
    "num_nextn_predict_layers": 1, "num_attention_heads": 128, "num_key_value_heads": 128, "n_shared_experts": 1,
    "n_routed_experts": 256, "ep_size": 1, "routed_scaling_factor": 2.5, "kv_lora_rank": 512, "q_lora_rank": 1536,
    "qk_rope_head_dim": 64, "v_head_dim": 128, "qk_nope_head_dim": 128, "topk_method": "noaux_tc", "n_group": 8,
    "topk_group": 4, "num_experts_per_tok": 8, "moe_layer_freq": 1, "first_k_dense_replace": 3,
    "norm_topk_prob": True, "scoring_func": "sigmoid", "hidden_act": "silu", "max_position_embeddings": 163840,
    "initializer_range": 0.02, "rms_norm_eps": 1e-06, "use_cache": True, "bos_token_id": 0, "eos_token_id": 1,
    "tie_word_embeddings": False, "rope_theta": 10000, "attention_bias": False, "attention_dropout": 0.0,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 4096, "type": "yarn"}}

ARCH_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "mlp_dim", "norm_eps", "tie_embeddings", "max_seq_len",
               "rope_theta", "rope_kind", "rope_scaling", "attention", "q_lora_rank", "kv_lora_rank", "qk_nope_dim",
               "qk_rope_dim", "v_head_dim", "n_dense_layers", "n_routed_experts", "n_shared_experts",
               "n_experts_per_tok", "moe_mlp_dim", "n_group", "topk_group", "router", "norm_topk_prob",
               "routed_scaling_factor", "mtp_depth")


def _arch(cfg):
    return {f: getattr(cfg, f) for f in ARCH_FIELDS}


def test_official_v3_config_is_the_preset():
    assert _arch(hf_deepseek.config_from_hf(OFFICIAL_V3)) == _arch(get_config("deepseek_v3_671b"))


@pytest.mark.parametrize("name", ["deepseek_v3_671b", "deepseek_v2_lite", "moe_tiny", "moe_1b"])
def test_config_round_trip(name):
    cfg = get_config(name)
    assert _arch(hf_deepseek.config_from_hf(hf_deepseek.config_to_hf(cfg))) == _arch(cfg)


def test_671b_tensor_list():
    cfg = get_config("deepseek_v3_671b")
    tensors = hf_deepseek.hf_tensors(cfg)
    names = [t.hf_name for t in tensors]
    assert len(names) == len(set(names))
    per_attn, per_moe = 9, 2 + 3 + 3 * 256                       # router + bias, shared, experts
    # embed, norm, head; 3 dense layers; 58 MoE layers; the MTP layer 61 (+ its embed / head copies and 4 tensors)
    assert len(names) == 3 + 3 * (per_attn + 3) + 58 * (per_attn + per_moe) + (per_attn + per_moe + 6)
    by_name = {t.hf_name: t for t in tensors}
    t = by_name["model.layers.5.mlp.experts.17.up_proj.weight"]
    assert t.path == ("moe_layers", "moe", "up") and t.layer == (2, 17)
    assert by_name["model.layers.61.mlp.experts.0.gate_proj.weight"].path == ("mtp", "modules", "block", "moe", "gate")
    assert by_name["model.layers.2.mlp.down_proj.weight"].path == ("layers", "mlp", "down", "kernel")


def test_greedy_sampling_matches_transformers_generate(tmp_path):
    """The sampler (MLA latent cache, absorbed decode, MoE) reproduces transformers' greedy generate."""
    import torch
    from r1jax.sampling import SamplingConfig, sample
    model = make_deepseek("v3", tmp_path / "m", seed=1)
    cfg, params = hf.load(str(tmp_path / "m"), cfg_overrides=dict(dtype="float32", capacity_factor=8.0))
    prompts = [[5, 9, 3, 17, 2], [40, 1, 33], [7, 7, 8, 60, 12, 11, 3]]
    out = sample(params, cfg, prompts, SamplingConfig(temperature=0.0, max_new_tokens=10, chunk_size=4))
    for i, p in enumerate(prompts):
        with torch.no_grad():
            ref = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                 max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)
        np.testing.assert_array_equal(out.tokens[i], ref[0, len(p):].numpy(), err_msg=f"prompt {i}")
