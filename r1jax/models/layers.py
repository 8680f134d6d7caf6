"""Building blocks shared by every model: norms, projections, rotary embeddings, the SwiGLU MLP.

Every parameter carries logical axis names (see r1jax/sharding.py for the rules that map them to the mesh).
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax.models.config import ModelConfig


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """Sharding hint by logical names; a no-op outside a mesh + rules context."""
    return nn.with_logical_constraint(x, tuple(names))


def param_init(std: float, names: Sequence[str | None]):
    return nn.with_logical_partitioning(nn.initializers.normal(stddev=std), tuple(names))


class RMSNorm(nn.Module):
    """RMSNorm in fp32 (Llama/Qwen/DeepSeek convention: normalise in fp32, scale, cast back)."""
    eps: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, (self.axis_name,)),
                           (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * scale.astype(jnp.float32)).astype(self.dtype)


class Dense(nn.Module):
    """x @ W over the last axis (+ optional bias), W of shape in_shape... x out_shape..., named axes.

    `features` may be a tuple (e.g. (heads, head_dim)); `names` names the kernel's axes, input axis first.
    """
    features: int | tuple[int, ...]
    names: tuple[str | None, ...]
    use_bias: bool = False
    std: float = 0.02
    dtype: jnp.dtype = jnp.bfloat16
    param_dtype: jnp.dtype = jnp.float32
    in_axes: int = 1     # how many trailing input axes are contracted

    @nn.compact
    def __call__(self, x):
        feats = (self.features,) if isinstance(self.features, int) else tuple(self.features)
        in_shape = x.shape[-self.in_axes:]
        kernel = self.param("kernel", param_init(self.std, self.names), (*in_shape, *feats), self.param_dtype)
        contract = tuple(range(x.ndim - self.in_axes, x.ndim))
        y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype),
                                ((contract, tuple(range(self.in_axes))), ((), ())))
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, self.names[self.in_axes:]),
                              feats, self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""
    config: ModelConfig
    hidden: int

    @nn.compact
    def __call__(self, x_BxTxD):
        cfg = self.config
        kw = dict(std=cfg.init_std, dtype=cfg.compute_dtype, param_dtype=cfg.weights_dtype)
        gate = Dense(self.hidden, ("embed", "mlp"), name="gate", **kw)(x_BxTxD)
        up = Dense(self.hidden, ("embed", "mlp"), name="up", **kw)(x_BxTxD)
        h_BxTxF = constrain(nn.silu(gate) * up, ("batch", "length", "mlp"))
        return Dense(cfg.d_model, ("mlp", "embed"), name="down", **kw)(h_BxTxF)


# ----------------------------------------------------------------------------- rotary embeddings

def _llama3_inv_freq(inv_freq, s):
    factor, lo, hi = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = jnp.where(wavelen > old / lo, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old / hi) & (wavelen <= old / lo)
    return jnp.where(medium, smoothed, scaled)


def _yarn_inv_freq(inv_freq, dim, base, s):
    """YaRN as DeepSeek-V3 uses it: interpolate low frequencies by `factor`, ramp between correction dims."""
    factor, beta_fast, beta_slow = s["factor"], s.get("beta_fast", 32.0), s.get("beta_slow", 1.0)
    original = s["original_max_position_embeddings"]

    def correction_dim(rotations):
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    ramp = jnp.clip((jnp.arange(dim // 2, dtype=jnp.float32) - low) / (high - low), 0.0, 1.0)
    extrapolate = 1.0 - ramp
    return inv_freq / factor * (1.0 - extrapolate) + inv_freq * extrapolate


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def rope_inv_freq(dim: int, theta: float, kind: str = "default", scaling: dict | None = None) -> jax.Array:
    """Inverse frequencies [dim/2] for rotary embeddings of width `dim`."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    if kind == "llama3":
        return _llama3_inv_freq(inv_freq, scaling)
    if kind == "yarn":
        return _yarn_inv_freq(inv_freq, dim, theta, scaling)
    return inv_freq


def apply_rope(x_BxTxNxH, positions_BxT, inv_freq, interleaved: bool = False, attention_scale: float = 1.0):
    """Rotates x by position. `interleaved=False`: HF rotate_half (pairs i, i+H/2, Llama/Qwen);
    `interleaved=True`: adjacent pairs (2i, 2i+1), DeepSeek's reference convention. Math in fp32."""
    angles = positions_BxT[..., None].astype(jnp.float32) * inv_freq  # [B,T,H/2]
    cos = (jnp.cos(angles) * attention_scale)[:, :, None, :]
    sin = (jnp.sin(angles) * attention_scale)[:, :, None, :]
    x = x_BxTxNxH.astype(jnp.float32)
    if interleaved:
        x1, x2 = x[..., 0::2], x[..., 1::2]
        out = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(x.shape)
    else:
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BxTxNxH.dtype)
