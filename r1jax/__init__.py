"""r1jax: the DeepSeek-R1 recipe in JAX/Flax."""

__version__ = "0.1.0"
