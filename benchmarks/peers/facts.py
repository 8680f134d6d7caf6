"""What was measured about the peers off the device (pip here, 2026-12-02), and published figures, with sources.

The benchmarks copy these strings into their JSON records as the reason a peer column is null, or as the labelled
published comparison. Each fact says how it was measured; re-measure with the commands named before changing one.
"""
from __future__ import annotations

import importlib.util

# ----------------------------------------------------------------------------- vLLM (issue 16's second peer)
# `pip install --dry-run --no-deps --report` over vllm releases for cp312 manylinux x86-64: 0.27.0-0.33 pin
# torch==2.13.0 and 0.34.0 pins torch==2.14.0; 0.26.0 is the newest pinning torch==2.11.0 (the image's). Its wheel,
# fetched with `pip download --no-deps vllm==0.26.0`, is 303,698,761 bytes; 45 of its unconditional requirements are
# not on the image (flashinfer-python==0.6.14, xgrammar, tilelang==0.1.9, nvidia-cutlass-dsl==4.6.0, openai, fastapi,
# ...) and two conflict with it (numba==0.65.0 vs 0.68.0, setuptools<81 vs 81.0.0).
VLLM_PIN = "vllm==0.26.0"
VLLM_WHEEL_BYTES = 303_698_761
VLLM_REASON = (
    "vllm 0.26.0 (the newest release pinning torch==2.11.0, the device image's) is a 290 MiB wheel "
    f"({VLLM_WHEEL_BYTES:,} bytes) > the 64 MiB device transfer limit, before 45 requirements missing from the image "
    "(flashinfer-python 0.6.14, xgrammar, tilelang, nvidia-cutlass-dsl, ...) and numba==0.65.0 vs the image's 0.68.0; "
    "vllm 0.34.0 (latest) is 228 MiB and pins torch==2.14.0")


def vllm_reason() -> str | None:
    """Why the vLLM column is null on this machine; None if vllm is importable (then a runner is what is missing)."""
    if importlib.util.find_spec("vllm") is None:
        return VLLM_REASON
    return None


# ----------------------------------------------------------------------------- MaxText (issue 22's peer)
# maxtext 0.2.5 (`pip download --no-deps`, 13,599,930 bytes) declares no requirements outside extras; its 'cuda12'
# extra pins jax-cuda12 and transformer-engine-jax, which do not match the image's CUDA 13 jax. Its pre-training
# module imports under jax 0.11.2 / flax 0.12.10 with the 24 wheels of pins/maxtext.txt (24.7 MiB) and an xprof stub,
# and a synthetic-data run of 4 steps of a tiny qwen2 decoder ran on CPU here, so benchmarks/peers/maxtext_train.py
# runs it on the device side by side; the published figure below is kept beside it.
MAXTEXT_PIN = "maxtext==0.2.5"

# The nearest published MaxText GPU shape: Llama2-7B on one A3 VM (8 x H100 80GB), seq 4,096, per-device batch 4,
# bf16, FSDP 8, cudnn_flash_te attention (configs/gpu/models/llama2_7b.yml of the same wheel). MaxText publishes
# TFLOP/s per chip, not MFU; the MFU here is that figure over the H100 SXM dense bf16 peak of 989 TFLOP/s.
MAXTEXT_PUBLISHED = dict(
    maxtext_published_mfu=492 / 989,
    maxtext_published_tflops_per_chip=492,
    maxtext_published_shape="Llama2-7B, seq 4096, per-device batch 4, bf16, 1x A3 (8x H100-80GB, FSDP 8)",
    maxtext_published_quote=("Expected performance results for Llama2-7B model running on A3 GPU: / "
                             "| Hardware               | TFLOP/sec/chip   | / "
                             "| 1x A3 (h100-80gb-8)    | 492              |"),
    maxtext_published_source=(
        "maxtext 0.2.5 wheel, maxtext/configs/gpu/a3/llama_2_7b/README.md (also github.com/AI-Hypercomputer/maxtext "
        "MaxText/configs/a3/llama_2_7b/README.md); MFU = 492 / 989 TFLOP/s (H100 SXM dense bf16 peak), "
        "derived here, not stated by MaxText"),
)
