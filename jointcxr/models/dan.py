"""Deep averaging network (Iyyer et al. 2015): word dropout, mean, MLP.

Used by Hsu et al. as a fine-tuned report encoder. Word dropout removes
whole tokens from the average during training only (never every token of a
text: a text that would lose all its words keeps them all). Parameters:
`embed/embedding` (importable from word vectors, e.g. `jointcxr.hsu`'s
GloVe-format reader), `mlp_{i}`.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jointcxr.models import common


class DAN(nn.Module):
  """Deep averaging network text tower.

  Attributes:
    vocab_size: token vocabulary.
    embed_dim: word vector width.
    hidden: widths of the ReLU MLP layers after the average.
    word_dropout: probability of dropping each token at train time.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """
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
    """Averages the kept word vectors and applies the MLP.

    Args:
      tokens: [B, T] int32.
      text_mask: [B, T] bool, True for real tokens.
      sentence_ids: unused (same signature as the BERT tower).
      train: enables word dropout (needs a "dropout" rng).

    Returns:
      dict with `words` [B, T, embed_dim] and `global` [B, hidden[-1]].
    """
    del sentence_ids
    text_mask = jnp.asarray(text_mask, bool)
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
  """Factory used by the two-tower model (`text_model="dan"`).

  Args:
    **kw: `DAN` attributes.

  Returns:
    The unbound module.
  """
  return DAN(**kw)
