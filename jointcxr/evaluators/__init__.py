"""Evaluators shared by the trainer (cheap in-training evals) and the eval binaries."""
