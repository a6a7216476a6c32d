"""Deep averaging network (Iyyer et al. 2015): word dropout, mean, MLP.

Used by Hsu et al. as a fine-tuned report encoder. Word dropout removes
whole tokens from the average during training only.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jointcxr.models import common


class DAN(nn.Module):
  """Output: words (embeddings), global (MLP of the masked mean)."""
  vocab_size: int = 8000
  embed_dim: int = 300
  hidden: Sequence[int] = (300, 300)
  word_dropout: float = 0.3
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, text_mask: jax.Array,
               sentence_ids: jax.Array | None = None, *,
               train: bool = False) -> dict:
    del sentence_ids
    e = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype,
                 param_dtype=self.param_dtype,
                 embedding_init=common.partitioned(
                     nn.initializers.normal(0.1), ("vocab", "embed")),
                 name="embed")(tokens)
    keep = text_mask
    if train and self.word_dropout > 0:
      rng = self.make_rng("dropout")
      keep = keep & (jax.random.uniform(rng, keep.shape) >= self.word_dropout)
      # Never drop every word of a text.
      keep = jnp.where(keep.any(-1, keepdims=True), keep, text_mask)
    h = common.masked_mean(e, keep)
    for i, units in enumerate(self.hidden):
      h = nn.relu(common.dense(units, ("embed", "mlp"), dtype=self.dtype,
                               param_dtype=self.param_dtype,
                               name=f"mlp_{i}")(h))
    return {"words": e, "global": h}


def Model(**kw) -> DAN:  # pylint: disable=invalid-name
  return DAN(**kw)
