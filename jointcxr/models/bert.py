"""BERT-like text tower with word, sentence and report-level outputs.

Post-LN like BERT so HF BERT checkpoints (e.g. a local Bio_ClinicalBERT
safetensors file) import exactly (`jointcxr.export.import_hf_bert`):

    flax                                         HF BERT
    embed_word/embedding                         embeddings.word_embeddings
    embed_position/embedding                     embeddings.position_embeddings
    embed_type/embedding                         embeddings.token_type_embeddings
    embed_ln/{scale,bias}                        embeddings.LayerNorm
    encoder/layer_i/attn/{query,key,value}       encoder.layer.i.attention.self.*
    encoder/layer_i/attn/out                     ...attention.output.dense
    encoder/layer_i/ln_attn                      ...attention.output.LayerNorm
    encoder/layer_i/mlp_in, mlp_out              ...intermediate.dense, output.dense
    encoder/layer_i/ln_mlp                       ...output.LayerNorm
    mlm_head/{transform,ln,decoder}              cls.predictions.*

(dense kernels transpose). Sentences are pooled over each sentence's token
span (`sentence_ids`, -1 for [CLS]/[SEP]/padding) by max (LoVT) or mean.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jointcxr.models import common
from jointcxr.models import transformer


class MlmHead(nn.Module):
  """Linear -> GELU -> LayerNorm -> Linear to the vocabulary."""
  vocab_size: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, words: jax.Array) -> jax.Array:
    d = words.shape[-1]
    h = common.dense(d, ("embed", "mlp"), dtype=self.dtype,
                     param_dtype=self.param_dtype, name="transform")(words)
    h = nn.LayerNorm(epsilon=1e-12, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="ln")(nn.gelu(
                         h, approximate=False))
    return common.dense(self.vocab_size, ("embed", "vocab"), dtype=self.dtype,
                        param_dtype=self.param_dtype, name="decoder")(h)


class Bert(nn.Module):
  """Text tower. Output: words, sentences, sentence_mask, cls, global."""
  vocab_size: int = 30522
  hidden: int = 768
  layers: int = 12
  heads: int = 12
  mlp_dim: int = 3072
  max_len: int = 512
  type_vocab: int = 2
  dropout: float = 0.1
  max_sentences: int = 32
  sentence_pool: str = "max"
  global_pool: str = "cls"  # cls | max | mean
  remat: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    emb = lambda n, num: nn.Embed(
        num, self.hidden, dtype=self.dtype, param_dtype=self.param_dtype,
        embedding_init=common.partitioned(nn.initializers.normal(0.02),
                                          ("vocab" if n == "embed_word" else
                                           None, "embed")), name=n)
    self.embed_word = emb("embed_word", self.vocab_size)
    self.embed_position = emb("embed_position", self.max_len)
    self.embed_type = emb("embed_type", self.type_vocab)
    self.embed_ln = nn.LayerNorm(epsilon=1e-12, dtype=self.dtype,
                                 param_dtype=self.param_dtype)
    self.encoder = transformer.Encoder(
        self.layers, self.heads, self.mlp_dim, self.dropout, pre_norm=False,
        remat=self.remat, dtype=self.dtype, param_dtype=self.param_dtype)
    self.drop = nn.Dropout(self.dropout)

  def __call__(self, tokens: jax.Array, text_mask: jax.Array,
               sentence_ids: jax.Array | None = None, *,
               train: bool = False) -> dict:
    t = tokens.shape[1]
    if t > self.max_len:
      raise ValueError(f"{t} tokens exceed max_len={self.max_len}")
    pos = jnp.arange(t)[None, :]
    x = (self.embed_word(tokens) + self.embed_position(pos) +
         self.embed_type(jnp.zeros_like(tokens)))
    x = self.drop(self.embed_ln(x), deterministic=not train)
    x = nn.with_logical_constraint(x, ("act_batch", "act_len", "act_emb"))
    words = self.encoder(x, text_mask, train=train)
    out = {"words": words, "cls": words[:, 0]}
    if sentence_ids is not None:
      out["sentences"], out["sentence_mask"] = common.segment_pool(
          words, sentence_ids, self.max_sentences, self.sentence_pool)
    body = jnp.asarray(text_mask).at[:, 0].set(False)  # [CLS] is no word
    if self.global_pool == "cls":
      out["global"] = out["cls"]
    elif self.global_pool == "max":
      out["global"] = jnp.max(jnp.where(body[..., None], words, -1e9), 1)
    elif self.global_pool == "mean":
      out["global"] = common.masked_mean(words, body)
    else:
      raise ValueError(f"unknown global_pool {self.global_pool!r}")
    return out

  def attend(self, words: jax.Array) -> jax.Array:
    """Logits against the (tied) word embedding matrix."""
    return self.embed_word.attend(words)


def Model(**kw) -> Bert:  # pylint: disable=invalid-name
  return Bert(**kw)
