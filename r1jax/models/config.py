"""ModelConfig: one frozen dataclass for dense (Qwen2 / Llama) and DeepSeek-V3-style MoE transformers.

Presets are looked up by name at the edges (`get_config('qwen2.5-0.5b', dtype='float32')`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and numerics of one transformer.

    Dense layers use `mlp_dim`; MoE layers (all layers from `n_dense_layers` on, when `n_routed_experts > 0`) use
    `n_shared_experts * moe_mlp_dim` for the shared expert and `moe_mlp_dim` per routed expert.
    """
    vocab_size: int = 264
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 16
    mlp_dim: int = 128
    norm_eps: float = 1e-6
    qkv_bias: bool = False
    tie_embeddings: bool = True
    init_std: float = 0.02
    max_seq_len: int = 4096
    # RoPE: kind 'default' | 'llama3' | 'yarn'. `rope_scaling` holds the kind's parameters (HF names).
    rope_theta: float = 10000.0
    rope_kind: str = "default"
    rope_scaling: tuple[tuple[str, float], ...] = ()
    # Attention kind: 'gqa' | 'mla'. attn_impl: 'auto' (cuDNN flash on GPU for plain causal batches) | 'xla' | 'cudnn'.
    attention: str = "gqa"
    attn_impl: str = "auto"
    # MLA (DeepSeek-V2/V3). q_lora_rank 0 = plain query projection (V2-Lite).
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_dim: int = 0
    qk_rope_dim: int = 0
    v_head_dim: int = 0
    # Mixture of experts (n_routed_experts 0 = dense model).
    n_dense_layers: int = 0
    n_routed_experts: int = 0
    n_shared_experts: int = 0
    n_experts_per_tok: int = 0
    moe_mlp_dim: int = 0
    n_group: int = 1
    topk_group: int = 1
    router: str = "sigmoid"            # 'softmax' (V2) | 'sigmoid' (V3, with e_score_correction_bias)
    norm_topk_prob: bool = True
    routed_scaling_factor: float = 1.0
    capacity_factor: float = 1.25      # per-expert buffer = ceil(factor * tokens * k / experts)
    moe_impl: str = "einsum"           # 'einsum' (GPU/CPU) | 'ragged' (TPU)
    router_bias_rate: float = 0.001    # aux-loss-free bias update gamma
    aux_loss_alpha: float = 0.0        # sequence-wise balance loss weight
    # Multi-token prediction (V3 §2.2).
    mtp_depth: int = 0
    mtp_lambda: float = 0.3
    # Numerics and memory.
    dtype: str = "bfloat16"            # compute dtype; params are `param_dtype`; logits and router math fp32
    param_dtype: str = "float32"
    remat: str = "none"                # 'none' | 'full' | 'dots' (save matmul outputs)
    scan_layers: bool = True

    # ------------------------------------------------------------------ derived
    @property
    def is_moe(self) -> bool:
        return self.n_routed_experts > 0

    @property
    def n_moe_layers(self) -> int:
        return self.n_layers - self.n_dense_layers if self.is_moe else 0

    @property
    def n_leading_dense(self) -> int:
        return self.n_dense_layers if self.is_moe else self.n_layers

    @property
    def compute_dtype(self) -> Any:
        return jnp.dtype(self.dtype)

    @property
    def weights_dtype(self) -> Any:
        return jnp.dtype(self.param_dtype)

    @property
    def scaling(self) -> dict[str, float]:
        return dict(self.rope_scaling)

    def replace(self, **kwargs) -> "ModelConfig":
        return replace(self, **kwargs)

    def validate(self) -> "ModelConfig":
        def check(cond, msg):
            if not cond:
                raise ValueError(f"ModelConfig: {msg}")
        check(self.attention in ("gqa", "mla"), f"attention must be 'gqa' or 'mla', got {self.attention!r}")
        check(self.rope_kind in ("default", "llama3", "yarn"), f"unknown rope_kind {self.rope_kind!r}")
        check(self.attn_impl in ("auto", "xla", "cudnn"), f"unknown attn_impl {self.attn_impl!r}")
        check(self.remat in ("none", "full", "dots"), f"unknown remat {self.remat!r}")
        check(self.router in ("softmax", "sigmoid"), f"unknown router {self.router!r}")
        check(self.moe_impl in ("einsum", "ragged"), f"unknown moe_impl {self.moe_impl!r}")
        if self.attention == "gqa":
            check(self.n_heads % self.n_kv_heads == 0, f"n_heads {self.n_heads} not a multiple of n_kv_heads {self.n_kv_heads}")
        else:
            check(self.kv_lora_rank > 0 and self.qk_rope_dim > 0 and self.v_head_dim > 0, "MLA needs kv_lora_rank, qk_rope_dim, v_head_dim")
        if self.is_moe:
            check(0 <= self.n_dense_layers <= self.n_layers, "n_dense_layers out of range")
            check(self.n_routed_experts % self.n_group == 0, "n_routed_experts must divide into n_group groups")
            check(1 <= self.topk_group <= self.n_group, "topk_group must be in [1, n_group]")
            check(1 <= self.n_experts_per_tok <= self.n_routed_experts, "n_experts_per_tok out of range")
            check(self.moe_mlp_dim > 0, "moe_mlp_dim must be > 0")
        return self


def replace(cfg: ModelConfig, **kwargs) -> ModelConfig:
    """dataclasses.replace that names unknown fields and the known ones."""
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(f"unknown ModelConfig field(s) {unknown}; known: {sorted(known)}")
    if "rope_scaling" in kwargs and isinstance(kwargs["rope_scaling"], dict):
        kwargs["rope_scaling"] = tuple(sorted(kwargs["rope_scaling"].items()))
    return dataclasses.replace(cfg, **kwargs).validate()


def _llama3_scaling(factor: float, original: int) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(dict(factor=factor, low_freq_factor=1.0, high_freq_factor=4.0,
                             original_max_position_embeddings=original).items()))


def _yarn_scaling(factor: float, original: int, mscale: float, mscale_all_dim: float) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(dict(factor=factor, original_max_position_embeddings=original, beta_fast=32.0, beta_slow=1.0,
                             mscale=mscale, mscale_all_dim=mscale_all_dim).items()))


PRESETS: dict[str, ModelConfig] = {
    # Tests and CPU runs: byte-level vocabulary.
    "tiny": ModelConfig(),
    # A small base model that learns the built-in tasks on a laptop CPU.
    "small": ModelConfig(d_model=256, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=64, mlp_dim=768),
    # Qwen2.5 (HF Qwen2ForCausalLM): qkv bias, rope_theta 1e6.
    "qwen2.5-0.5b": ModelConfig(vocab_size=151936, d_model=896, n_layers=24, n_heads=14, n_kv_heads=2, head_dim=64,
                                mlp_dim=4864, qkv_bias=True, tie_embeddings=True, rope_theta=1e6, max_seq_len=32768),
    "qwen2.5-1.5b": ModelConfig(vocab_size=151936, d_model=1536, n_layers=28, n_heads=12, n_kv_heads=2, head_dim=128,
                                mlp_dim=8960, qkv_bias=True, tie_embeddings=True, rope_theta=1e6, max_seq_len=32768),
    "qwen2.5-7b": ModelConfig(vocab_size=152064, d_model=3584, n_layers=28, n_heads=28, n_kv_heads=4, head_dim=128,
                              mlp_dim=18944, qkv_bias=True, tie_embeddings=False, rope_theta=1e6, max_seq_len=32768),
    # deepseek_r1_spec.md §6: Qwen2Config of DeepSeek-R1-Distill-Qwen-1.5B.
    "r1-distill-qwen-1.5b": ModelConfig(vocab_size=151936, d_model=1536, n_layers=28, n_heads=12, n_kv_heads=2,
                                        head_dim=128, mlp_dim=8960, qkv_bias=True, tie_embeddings=False,
                                        rope_theta=10000.0, max_seq_len=131072),
    # Llama 3.x (HF LlamaForCausalLM) with llama3 rope scaling.
    "llama-3.2-1b": ModelConfig(vocab_size=128256, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, head_dim=64,
                                mlp_dim=8192, norm_eps=1e-5, tie_embeddings=True, rope_theta=500000.0,
                                rope_kind="llama3", rope_scaling=_llama3_scaling(32.0, 8192), max_seq_len=131072),
    "llama-3.1-8b": ModelConfig(vocab_size=128256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, head_dim=128,
                                mlp_dim=14336, norm_eps=1e-5, tie_embeddings=False, rope_theta=500000.0,
                                rope_kind="llama3", rope_scaling=_llama3_scaling(8.0, 8192), max_seq_len=131072),
    # ------------------------------------------------------------------ DeepSeek MoE (MLA + DeepSeekMoE)
    # DeepSeek-V3 exactly (deepseek_r1_spec.md §1-2); the HF checkpoint's MTP layer 61 = mtp_depth 1.
    "deepseek_v3_671b": ModelConfig(
        vocab_size=129280, d_model=7168, n_layers=61, n_heads=128, n_kv_heads=128, head_dim=192, mlp_dim=18432,
        norm_eps=1e-6, tie_embeddings=False, init_std=0.006, max_seq_len=163840,
        rope_theta=10000.0, rope_kind="yarn", rope_scaling=_yarn_scaling(40.0, 4096, 1.0, 1.0),
        attention="mla", q_lora_rank=1536, kv_lora_rank=512, qk_nope_dim=128, qk_rope_dim=64, v_head_dim=128,
        n_dense_layers=3, n_routed_experts=256, n_shared_experts=1, n_experts_per_tok=8, moe_mlp_dim=2048,
        n_group=8, topk_group=4, router="sigmoid", norm_topk_prob=True, routed_scaling_factor=2.5,
        router_bias_rate=0.001, aux_loss_alpha=0.0001, mtp_depth=1, mtp_lambda=0.3),
    # DeepSeek-V2-Lite (the spec's config_16B.json): softmax router, no groups, plain query projection.
    "deepseek_v2_lite": ModelConfig(
        vocab_size=102400, d_model=2048, n_layers=27, n_heads=16, n_kv_heads=16, head_dim=192, mlp_dim=10944,
        norm_eps=1e-6, tie_embeddings=False, max_seq_len=163840,
        rope_theta=10000.0, rope_kind="yarn", rope_scaling=_yarn_scaling(40.0, 4096, 0.707, 0.707),
        attention="mla", q_lora_rank=0, kv_lora_rank=512, qk_nope_dim=128, qk_rope_dim=64, v_head_dim=128,
        n_dense_layers=1, n_routed_experts=64, n_shared_experts=2, n_experts_per_tok=6, moe_mlp_dim=1408,
        n_group=1, topk_group=1, router="softmax", norm_topk_prob=False, routed_scaling_factor=1.0,
        aux_loss_alpha=0.001),
    # Tests / CPU: V3 in miniature (byte vocab, yarn, groups, q_lora, sigmoid router with bias).
    "moe_tiny": ModelConfig(
        vocab_size=264, d_model=64, n_layers=3, n_heads=4, n_kv_heads=4, head_dim=24, mlp_dim=128,
        tie_embeddings=False, max_seq_len=512,
        rope_kind="yarn", rope_scaling=_yarn_scaling(4.0, 128, 1.0, 1.0),
        attention="mla", q_lora_rank=32, kv_lora_rank=32, qk_nope_dim=16, qk_rope_dim=8, v_head_dim=16,
        n_dense_layers=1, n_routed_experts=8, n_shared_experts=1, n_experts_per_tok=2, moe_mlp_dim=32,
        n_group=2, topk_group=1, router="sigmoid", routed_scaling_factor=2.5, capacity_factor=2.0),
    # One GPU: 1.00B total / 0.25B active params (param_count; 117M of each is the tied Qwen-vocab embedding).
    "moe_1b": ModelConfig(
        vocab_size=151936, d_model=768, n_layers=12, n_heads=16, n_kv_heads=16, head_dim=96, mlp_dim=3072,
        tie_embeddings=True, max_seq_len=32768, rope_theta=10000.0,
        attention="mla", q_lora_rank=0, kv_lora_rank=256, qk_nope_dim=64, qk_rope_dim=32, v_head_dim=64,
        n_dense_layers=1, n_routed_experts=64, n_shared_experts=1, n_experts_per_tok=6, moe_mlp_dim=512,
        n_group=8, topk_group=4, router="sigmoid", routed_scaling_factor=2.5),
}


def register(name: str, cfg: ModelConfig) -> None:
    """Adds a preset (used by modules that define MoE presets)."""
    PRESETS[name] = cfg.validate()


def get_config(name: str, **overrides) -> ModelConfig:
    """The preset `name` with `overrides` applied; unknown names or fields raise, listing the known ones."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides) if overrides else PRESETS[name].validate()


def param_count(cfg: ModelConfig, active: bool = False) -> int:
    """Parameter count from the config alone (embeddings included; `active`: per-token active experts only)."""
    d, v = cfg.d_model, cfg.vocab_size
    if cfg.attention == "gqa":
        attn = d * cfg.head_dim * (cfg.n_heads + 2 * cfg.n_kv_heads) + cfg.n_heads * cfg.head_dim * d
        if cfg.qkv_bias:
            attn += cfg.head_dim * (cfg.n_heads + 2 * cfg.n_kv_heads)
    else:
        qk = cfg.qk_nope_dim + cfg.qk_rope_dim
        q = (d * cfg.q_lora_rank + cfg.q_lora_rank + cfg.q_lora_rank * cfg.n_heads * qk) if cfg.q_lora_rank \
            else d * cfg.n_heads * qk
        kv = d * (cfg.kv_lora_rank + cfg.qk_rope_dim) + cfg.kv_lora_rank \
            + cfg.kv_lora_rank * cfg.n_heads * (cfg.qk_nope_dim + cfg.v_head_dim)
        attn = q + kv + cfg.n_heads * cfg.v_head_dim * d
    norms = 2 * d
    dense_layer = attn + norms + 3 * d * cfg.mlp_dim
    total = cfg.n_leading_dense * dense_layer
    if cfg.is_moe:
        n_exp = cfg.n_experts_per_tok if active else cfg.n_routed_experts
        moe_layer = attn + norms + 3 * d * cfg.moe_mlp_dim * (n_exp + cfg.n_shared_experts) \
            + d * cfg.n_routed_experts + (cfg.n_routed_experts if cfg.router == "sigmoid" else 0)
        total += cfg.n_moe_layers * moe_layer
    total += v * d * (1 if cfg.tie_embeddings else 2) + d
    return total


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward): 6 * active matmul params + attention."""
    n = param_count(cfg, active=True) - cfg.vocab_size * cfg.d_model  # the embedding lookup is not a matmul
    if cfg.tie_embeddings:
        n += cfg.vocab_size * cfg.d_model  # ...but the tied head is
    qk = cfg.head_dim if cfg.attention == "gqa" else cfg.qk_nope_dim + cfg.qk_rope_dim
    vd = cfg.head_dim if cfg.attention == "gqa" else cfg.v_head_dim
    # Causal attention: QK^T and AV over on average seq_len/2 keys, 2 FLOPs per MAC, x3 for fwd+bwd.
    attn = 3 * 2 * cfg.n_layers * cfg.n_heads * (qk + vd) * seq_len / 2
    return 6.0 * n + attn

