"""Builds the two-tower model of a training config (used by every binary)."""

import jax.numpy as jnp

from jointcxr.models import two_towers


def from_config(config, vocab_size: int) -> two_towers.Model:
  """`config.model` -> Model; a text vocab of -1 takes the tokenizer's."""
  m = config.model.to_dict() if hasattr(config.model, "to_dict") else dict(
      config.model)
  text = dict(m["text"])
  if text.get("vocab_size", -1) == -1:
    text["vocab_size"] = vocab_size
  return two_towers.Model(image_model=m["image_model"], image=m["image"],
                          text_model=m["text_model"], text=text,
                          method=m.get("method", config.method),
                          heads=m["heads"], dtype=jnp.dtype(config.dtype))
