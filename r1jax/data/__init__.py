"""Data: grain pipelines over example dicts (`pipeline`), JSONL readers and shipped files (`jsonl`), and the tasks
that make and score examples (`tasks`). Import the submodules; this package imports nothing (grain is slow to load).
"""
