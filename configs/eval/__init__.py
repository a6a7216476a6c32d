"""Configs of the evaluation binaries."""
