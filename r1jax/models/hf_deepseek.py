"""HF DeepseekV3 (and DeepseekV2) checkpoints <-> r1jax MLA + DeepSeekMoE params; used by `r1jax.models.hf`.

The converter for `hf.py`: `config_from_hf(dict) -> ModelConfig`, `config_to_hf(cfg) -> dict`, `hf_tensors(cfg)`.
Tensor names are the on-disk names (what `save_pretrained` writes in transformers 5.x too: per-expert
`mlp.experts.N.{gate,up,down}_proj.weight`; transformers fuses them into 3-D tensors only in memory).
Routed-expert tensors fill one [layer, expert] slice of a stacked param: their `layer` is the tuple (layer, expert).

The MTP module k is HF layer `num_hidden_layers + k` with DeepSeek's names (enorm, hnorm, eh_proj, shared_head.norm,
the block's self_attn / mlp / norms, and copies of embed_tokens and shared_head.head).
Routers: sigmoid + e_score_correction_bias exports as `deepseek_v3`; softmax (V2, V2-Lite) as `deepseek_v2`.
"""
from __future__ import annotations

from r1jax.models.config import ModelConfig
from r1jax.models.hf import Tensor

YARN_KEYS = ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale", "mscale_all_dim",
             "attention_factor")


def _rope(hf: dict) -> dict:
    params = {**(hf.get("rope_parameters") or {}), **(hf.get("rope_scaling") or {})}
    theta = float(hf.get("rope_theta", params.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default")) or "default"
    if kind == "default":
        return dict(rope_theta=theta, rope_kind="default", rope_scaling=())
    if kind != "yarn":
        raise ValueError(f"DeepSeek rope_type {kind!r} unsupported; supported: default, yarn")
    if params.get("truncate", True) is False:
        raise ValueError("yarn with truncate=False is unsupported (DeepSeek checkpoints truncate)")
    if params.get("factor") is None:
        params["factor"] = hf["max_position_embeddings"] / params["original_max_position_embeddings"]
    scaling = {k: float(params[k]) for k in YARN_KEYS if params.get(k) is not None}
    return dict(rope_theta=theta, rope_kind="yarn", rope_scaling=tuple(sorted(scaling.items())))


def config_from_hf(hf: dict) -> ModelConfig:
    """ModelConfig of an HF DeepseekV3 / DeepseekV2 config.json (dict); raises on features r1jax lacks."""
    def need(cond, msg):
        if not cond:
            raise ValueError(f"unsupported {hf.get('model_type')} config: {msg}")
    need(hf.get("hidden_act", "silu") == "silu", f"hidden_act {hf.get('hidden_act')!r} (need silu)")
    need(not hf.get("attention_bias", False), "attention_bias=True")
    need(hf.get("rope_interleave", True), "rope_interleave=False (DeepSeek weights pair adjacent rope dims)")
    need(hf.get("moe_layer_freq", 1) == 1, f"moe_layer_freq {hf.get('moe_layer_freq')}")
    v2 = hf.get("model_type") == "deepseek_v2"
    router = hf.get("scoring_func", "softmax" if v2 else "sigmoid")
    n_experts = hf.get("n_routed_experts") or hf.get("num_experts") or 0
    need(n_experts > 0, "no routed experts")
    n_group = hf.get("n_group") or 1
    topk_group = hf.get("topk_group") or n_group
    if v2 and hf.get("topk_method", "greedy") == "greedy":
        n_group = topk_group = 1
    heads = hf["num_attention_heads"]
    need(hf.get("num_key_value_heads", heads) == heads, "num_key_value_heads != num_attention_heads")
    nope, rope = hf["qk_nope_head_dim"], hf["qk_rope_head_dim"]
    return ModelConfig(
        vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
        n_heads=heads, n_kv_heads=heads, head_dim=nope + rope, mlp_dim=hf["intermediate_size"],
        norm_eps=hf.get("rms_norm_eps", 1e-6), tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        init_std=hf.get("initializer_range", 0.02), max_seq_len=hf.get("max_position_embeddings", 4096),
        **_rope(hf), attention="mla", q_lora_rank=hf.get("q_lora_rank") or 0, kv_lora_rank=hf["kv_lora_rank"],
        qk_nope_dim=nope, qk_rope_dim=rope, v_head_dim=hf["v_head_dim"],
        n_dense_layers=hf.get("first_k_dense_replace", 0), n_routed_experts=n_experts,
        n_shared_experts=hf.get("n_shared_experts") or 0, n_experts_per_tok=hf["num_experts_per_tok"],
        moe_mlp_dim=hf["moe_intermediate_size"], n_group=n_group, topk_group=topk_group, router=router,
        # transformers' DeepseekV2 never renormalises the top-k weights, whatever norm_topk_prob says
        norm_topk_prob=False if v2 else bool(hf.get("norm_topk_prob", True)),
        routed_scaling_factor=float(hf.get("routed_scaling_factor", 1.0)),
        aux_loss_alpha=float(hf.get("aux_loss_alpha", 0.0) or 0.0) if not v2 else 0.0,
        mtp_depth=0 if v2 else int(hf.get("num_nextn_predict_layers", 0) or 0),
    ).validate()


def config_to_hf(cfg: ModelConfig) -> dict:
    """config.json for transformers' DeepseekV3ForCausalLM (sigmoid router) or DeepseekV2ForCausalLM (softmax)."""
    if cfg.attention != "mla" or not cfg.is_moe:
        raise ValueError(f"DeepSeek export needs an MLA MoE config, got attention={cfg.attention}, "
                         f"experts={cfg.n_routed_experts}")
    v2 = cfg.router == "softmax"
    if v2 and (cfg.norm_topk_prob or cfg.mtp_depth):
        raise ValueError("softmax routing exports as deepseek_v2, which has no norm_topk_prob and no MTP")
    hf = dict(
        architectures=["DeepseekV2ForCausalLM" if v2 else "DeepseekV3ForCausalLM"],
        model_type="deepseek_v2" if v2 else "deepseek_v3",
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.mlp_dim,
        moe_intermediate_size=cfg.moe_mlp_dim, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads, n_shared_experts=cfg.n_shared_experts, n_routed_experts=cfg.n_routed_experts,
        num_experts_per_tok=cfg.n_experts_per_tok, routed_scaling_factor=cfg.routed_scaling_factor,
        kv_lora_rank=cfg.kv_lora_rank, q_lora_rank=cfg.q_lora_rank or None, qk_rope_head_dim=cfg.qk_rope_dim,
        qk_nope_head_dim=cfg.qk_nope_dim, v_head_dim=cfg.v_head_dim, n_group=cfg.n_group, topk_group=cfg.topk_group,
        first_k_dense_replace=cfg.n_dense_layers, moe_layer_freq=1, norm_topk_prob=cfg.norm_topk_prob,
        scoring_func=cfg.router, hidden_act="silu", max_position_embeddings=cfg.max_seq_len,
        initializer_range=cfg.init_std, rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
        rope_theta=cfg.rope_theta, attention_bias=False, rope_interleave=True, torch_dtype="float32",
        bos_token_id=0, eos_token_id=1)
    if v2:
        hf["topk_method"] = "group_limited_greedy" if cfg.n_group > 1 and cfg.topk_group < cfg.n_group else "greedy"
    else:
        hf.update(topk_method="noaux_tc", num_nextn_predict_layers=cfg.mtp_depth, aux_loss_alpha=cfg.aux_loss_alpha)
    if cfg.rope_kind == "yarn":
        hf["rope_scaling"] = {"type": "yarn", "rope_type": "yarn", **cfg.scaling}
    elif cfg.rope_kind != "default":
        raise ValueError(f"DeepSeek export supports rope default / yarn, got {cfg.rope_kind!r}")
    return hf


# ----------------------------------------------------------------------------- tensors

def _t():
    return (lambda w: w.T), (lambda k: k.T)


def _proj_in(n: int, h: int):
    """HF [n*h, d_in] -> ours [d_in, n, h] and back."""
    return (lambda w: w.T.reshape(w.shape[1], n, h)), (lambda k: k.reshape(k.shape[0], n * h).T)


def _proj_out(n: int, h: int):
    """HF o_proj [d, n*h] -> ours [n, h, d] and back."""
    return (lambda w: w.T.reshape(n, h, w.shape[0])), (lambda k: k.reshape(n * h, k.shape[-1]).T)


def _block_tensors(cfg: ModelConfig, prefix: str, base: tuple[str, ...], layer, moe: bool) -> list[Tensor]:
    """One decoder block's tensors: HF names under `prefix`, our params under `base` at stack index `layer`."""
    N, qk = cfg.n_heads, cfg.qk_nope_dim + cfg.qk_rope_dim

    def T(hf, *path, conv=None, idx=layer):
        return Tensor(prefix + hf, base + path, idx, *(conv or ()))

    a = "self_attn."
    out = [T("input_layernorm.weight", "attn_norm", "scale"),
           T("post_attention_layernorm.weight", "mlp_norm", "scale"),
           T(a + "kv_a_proj_with_mqa.weight", "attn", "kv_a", "kernel", conv=_t()),
           T(a + "kv_a_layernorm.weight", "attn", "kv_norm", "scale"),
           T(a + "kv_b_proj.weight", "attn", "kv_b", "kernel", conv=_proj_in(N, cfg.qk_nope_dim + cfg.v_head_dim)),
           T(a + "o_proj.weight", "attn", "o", "kernel", conv=_proj_out(N, cfg.v_head_dim))]
    if cfg.q_lora_rank:
        out += [T(a + "q_a_proj.weight", "attn", "q_a", "kernel", conv=_t()),
                T(a + "q_a_layernorm.weight", "attn", "q_norm", "scale"),
                T(a + "q_b_proj.weight", "attn", "q_b", "kernel", conv=_proj_in(N, qk))]
    else:
        out.append(T(a + "q_proj.weight", "attn", "q", "kernel", conv=_proj_in(N, qk)))
    if not moe:
        return out + [T(f"mlp.{w}_proj.weight", "mlp", w, "kernel", conv=_t()) for w in ("gate", "up", "down")]
    out.append(T("mlp.gate.weight", "moe", "router", "kernel", conv=_t()))
    if cfg.router == "sigmoid":
        out.append(T("mlp.gate.e_score_correction_bias", "moe", "e_score_correction_bias"))
    if cfg.n_shared_experts:
        out += [T(f"mlp.shared_experts.{w}_proj.weight", "moe", "shared", w, "kernel", conv=_t())
                for w in ("gate", "up", "down")]
    for e in range(cfg.n_routed_experts):
        idx = (*layer, e) if isinstance(layer, tuple) else (e,) if layer is None else (layer, e)
        out += [T(f"mlp.experts.{e}.{w}_proj.weight", "moe", w, conv=_t(), idx=idx) for w in ("gate", "up", "down")]
    return out


def hf_tensors(cfg: ModelConfig) -> list[Tensor]:
    """Every HF tensor of `cfg` with the param it fills (stacked params: `layer` = index or (layer, expert))."""
    out = [Tensor("model.embed_tokens.weight", ("embed",)), Tensor("model.norm.weight", ("final_norm", "scale"))]
    head = Tensor("lm_head.weight", ("head",), None, *_t())
    out.append(head)
    for i in range(cfg.n_layers):
        moe = cfg.is_moe and i >= cfg.n_dense_layers
        stack, li = ("moe_layers", i - cfg.n_dense_layers) if moe else ("layers", i)
        out += _block_tensors(cfg, f"model.layers.{i}.", (stack,), li, moe)
    for k in range(cfg.mtp_depth):
        p = f"model.layers.{cfg.n_layers + k}."
        m = ("mtp", "modules")
        out += [Tensor(p + "enorm.weight", m + ("enorm", "scale"), k),
                Tensor(p + "hnorm.weight", m + ("hnorm", "scale"), k),
                Tensor(p + "eh_proj.weight", m + ("eh_proj", "kernel"), k, *_t()),
                Tensor(p + "shared_head.norm.weight", m + ("norm", "scale"), k),
                Tensor(p + "embed_tokens.weight", ("embed",)),
                Tensor(p + "shared_head.head.weight", ("embed",)) if cfg.tie_embeddings else
                Tensor(p + "shared_head.head.weight", ("head",), None, *_t())]
        out += _block_tensors(cfg, p, m + ("block",), k, cfg.is_moe)
    return out
