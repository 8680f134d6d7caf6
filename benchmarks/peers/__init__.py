"""Peers run side by side with r1jax in the benchmarks: each in its own process, with its own wheels."""
