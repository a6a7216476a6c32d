"""PyTorch reference implementations for bench/train_step.py."""
