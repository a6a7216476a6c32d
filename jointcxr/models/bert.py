"""BERT-like text tower with word, sentence and report-level outputs.

Post-LN like BERT, so HF BERT checkpoints (e.g. a local Bio_ClinicalBERT
safetensors file) map one-to-one (`jointcxr.torch_layout.hf_to_bert` /
`bert_to_hf`; dense kernels transpose, embeddings and LayerNorm scales are
`weight`):

    flax (tower `txt/...`)                  HF BERT
    embed_word/embedding                    embeddings.word_embeddings
    embed_position/embedding                embeddings.position_embeddings
    embed_type/embedding                    embeddings.token_type_embeddings
    embed_ln/{scale,bias}                   embeddings.LayerNorm
    encoder/layer_i/attn/{query,key,value}  encoder.layer.i.attention.self.*
    encoder/layer_i/attn/out                ...attention.output.dense
    encoder/layer_i/ln_attn                 ...attention.output.LayerNorm
    encoder/layer_i/mlp_in                  encoder.layer.i.intermediate.dense
    encoder/layer_i/mlp_out                 encoder.layer.i.output.dense
    encoder/layer_i/ln_mlp                  encoder.layer.i.output.LayerNorm
    (two-tower `mlm_head/`)transform        cls.predictions.transform.dense
    mlm_head/ln                             cls.predictions.transform.LayerNorm
    mlm_head/decoder (untied) | bias (tied) cls.predictions.decoder / .bias

The flat `embed_*` / `encoder/layer_i` names (rather than `embed/word`,
`layer_i`) are what the configs' freeze regexes (`^txt/embed_`,
`^txt/encoder/layer_[0-5]/`) and the HF mapping use. HF's pooler is not
part of the tower.

Sentences are pooled over each sentence's token span (`sentence_ids`, -1 for
[CLS]/[SEP]/padding) by max (LoVT) or mean; padded tokens never reach a
sentence, a word or a pooled report vector.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jointcxr.models import common
from jointcxr.models import heads as heads_lib
from jointcxr.models import transformer

GLOBAL_POOLS = ("cls", "max", "mean", "attention")


class MlmHead(nn.Module):
  """BERT's MLM head: Linear -> GELU -> LayerNorm -> Linear to the vocab.

  Attributes:
    vocab_size: output classes.
    tied: reuse the word embedding matrix as the decoder (BERT) and learn
      only a bias; the embedding must then be passed to `__call__`.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """
  vocab_size: int
  tied: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, words: jax.Array, embedding: jax.Array | None = None
               ) -> jax.Array:
    """Vocabulary logits of every token.

    Args:
      words: token features [B, T, D].
      embedding: the word embedding matrix [V, D]; required when tied.

    Returns:
      logits [B, T, vocab_size].
    """
    d = words.shape[-1]
    h = common.dense(d, ("embed", "mlp"), dtype=self.dtype,
                     param_dtype=self.param_dtype, name="transform")(words)
    h = nn.LayerNorm(epsilon=1e-12, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="ln")(nn.gelu(
                         h, approximate=False))
    if not self.tied:
      return common.dense(self.vocab_size, ("embed", "vocab"),
                          dtype=self.dtype, param_dtype=self.param_dtype,
                          name="decoder")(h)
    if embedding is None or embedding.shape != (self.vocab_size, d):
      raise ValueError(
          f"a tied MLM head needs the [{self.vocab_size}, {d}] word "
          f"embedding, got {None if embedding is None else embedding.shape}")
    bias = self.param("bias", common.partitioned(nn.initializers.zeros,
                                                 ("vocab",)),
                      (self.vocab_size,), self.param_dtype)
    return (h @ jnp.asarray(embedding, self.dtype).T +
            jnp.asarray(bias, self.dtype))


class Bert(nn.Module):
  """BERT text tower.

  Attributes:
    vocab_size: token vocabulary.
    hidden: model width D.
    layers: encoder blocks.
    heads: attention heads.
    mlp_dim: MLP hidden width.
    max_len: position slots; longer inputs are an error.
    type_vocab: token-type slots (all tokens use type 0).
    dropout: dropout on embeddings, attention and residual branches.
    max_sentences: S, the static number of sentence slots.
    sentence_pool: "max" (LoVT) or "mean" over each sentence's tokens.
    global_pool: report vector: "cls", or "max" / "mean" / "attention"
      (LoVT-style 8-head attention pooling) over the words ([CLS] and
      padding excluded).
    pool_heads: heads of the attention pool.
    remat: rematerialise each encoder block.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """
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
  global_pool: str = "cls"
  pool_heads: int = 8
  remat: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    if self.global_pool not in GLOBAL_POOLS:
      raise ValueError(f"unknown global_pool {self.global_pool!r}; expected "
                       f"one of {GLOBAL_POOLS}")
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
    if self.global_pool == "attention":
      self.pool = heads_lib.AttentionPool(self.pool_heads, dtype=self.dtype,
                                          param_dtype=self.param_dtype)

  def __call__(self, tokens: jax.Array, text_mask: jax.Array,
               sentence_ids: jax.Array | None = None, *,
               train: bool = False) -> dict:
    """Encodes a batch of tokenised reports.

    Args:
      tokens: [B, T] int32, [CLS] first.
      text_mask: [B, T] bool, True for real tokens (incl. [CLS]/[SEP]).
      sentence_ids: [B, T] int32 sentence index per token (-1 for
        [CLS]/[SEP]/padding); None skips the sentence outputs.
      train: enables dropout.

    Returns:
      dict with `words` [B, T, D] (every position; padded ones are
      meaningless), `cls` [B, D], `global` [B, D], and, with
      `sentence_ids`, `sentences` [B, S, D] and `sentence_mask` [B, S]
      (empty sentence slots are zeros / False).
    """
    t = tokens.shape[1]
    if t > self.max_len:
      raise ValueError(f"{t} tokens exceed max_len={self.max_len}")
    text_mask = jnp.asarray(text_mask, bool)
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
    body = text_mask.at[:, 0].set(False)  # [CLS] is no word
    if self.global_pool == "cls":
      out["global"] = out["cls"]
    elif self.global_pool == "max":
      out["global"] = jnp.max(jnp.where(body[..., None], words, -1e9), 1)
    elif self.global_pool == "mean":
      out["global"] = common.masked_mean(words, body)
    else:
      out["global"], out["global_weights"] = self.pool(words, body)
    return out

  def word_embedding(self) -> jax.Array:
    """The word embedding matrix [vocab_size, D] (for a tied MLM head)."""
    return self.embed_word.embedding


def Model(**kw) -> Bert:  # pylint: disable=invalid-name
  """Factory used by the two-tower model (`text_model="bert"`).

  Args:
    **kw: `Bert` attributes.

  Returns:
    The unbound module.
  """
  return Bert(**kw)
