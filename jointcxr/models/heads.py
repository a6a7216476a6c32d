"""Projection heads and the attention modules of LoVT and JoImTeRNet.

- `ProjectionMLP`: LoVT's Linear -> BatchNorm -> ReLU -> Linear (or no norm,
  ConVIRT), applied to [B, D] or per unit to [B, N, D] (BN statistics over
  all valid units, like LoVT's 1x1 conv + BN); `Linear` for JoImTeRNet.
- `AttentionPool`: LoVT's pooling, an 8-head attention whose single query is
  the mean of the local features; returns the pooled vector and the
  **head-averaged** weights (PyTorch MHA's default), which LoVT uses as local
  loss weights.
- `CrossAttention`: LoVT's symmetric single-head region <-> sentence
  attention (shared K, V, O projections, scores / sqrt(d), BatchNorm on the
  attended outputs).
- `region_word_attention`: AttnGAN/DAMSM attention (softmax over words, then
  over regions sharpened by gamma1) for grounding pictures and heatmaps.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jointcxr.models import common


class ProjectionMLP(nn.Module):
  """LoVT's projection head: Linear -> BN -> ReLU -> Linear.

  Applied to [B, D] (global) or per unit to [B, N, D] (local; LoVT's 1x1
  conv + BN, so BatchNorm statistics are taken over all valid units of the
  batch). Kaiming-normal kernels and zero biases, as in LoVT.

  Attributes:
    hidden: hidden width (2048).
    out: output width (512).
    norm: "batch" (LoVT, CLIP*) or "none" (ConVIRT).
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """
  hidden: int = 2048
  out: int = 512
  norm: str = "batch"  # batch | none
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """Projects features.

    Args:
      x: [B, D] or [B, N, D].
      mask: optional [B] / [B, N] validity mask; masked units do not enter
        the BatchNorm statistics (their outputs are meaningless).
      train: BatchNorm uses (and updates) batch statistics.

    Returns:
      [..., out].
    """
    if self.norm not in ("batch", "none"):
      raise ValueError(f"unknown projection norm {self.norm!r}; expected "
                       "'batch' or 'none'")
    h = common.dense(self.hidden, ("embed", "mlp"), dtype=self.dtype,
                     param_dtype=self.param_dtype, name="fc1",
                     kernel_init=nn.initializers.kaiming_normal())(x)
    if self.norm == "batch":
      bn = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                        epsilon=1e-5, dtype=self.dtype,
                        param_dtype=self.param_dtype, name="bn")
      h = bn(h, mask=None if mask is None else mask[..., None])
    return common.dense(self.out, ("mlp", "embed"), dtype=self.dtype,
                        param_dtype=self.param_dtype, name="fc2",
                        kernel_init=nn.initializers.kaiming_normal())(
                            nn.relu(h))


class Linear(nn.Module):
  """A linear projection (JoImTeRNet's heads), same call as ProjectionMLP.

  Attributes:
    out: output width.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """
  out: int = 512
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """Returns x @ W + b; `mask` and `train` are accepted and unused."""
    del mask, train
    return common.dense(self.out, ("embed", "mlp"), dtype=self.dtype,
                        param_dtype=self.param_dtype, name="fc")(x)


class AttentionPool(nn.Module):
  """Multi-head attention with the (masked) mean of the units as query.

  Like PyTorch's `nn.MultiheadAttention(D, heads)` called with query =
  mean of the units and keys = values = units: separate query/key/value
  and output projections (with biases), scores / sqrt(D / heads).

  Attributes:
    num_heads: attention heads (8 in LoVT).
    dtype: compute dtype (the softmax runs in float32).
    param_dtype: parameter dtype.
  """
  num_heads: int = 8
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array]:
    """Pools units into one vector.

    Args:
      x: units [B, N, D].
      mask: [B, N] bool, True for real units (None: all real).

    Returns:
      (pooled [B, D], head-averaged weights [B, N]: zero on masked units,
      summing to 1 over the real units; a sample with no real unit gets all
      zeros).
    """
    b, n, d = x.shape
    if d % self.num_heads:
      raise ValueError(f"width {d} does not divide into {self.num_heads} "
                       "heads")
    if mask is None:
      mask = jnp.ones((b, n), bool)
    mask = jnp.asarray(mask, bool)
    hd = d // self.num_heads
    q_in = common.masked_mean(x, mask)
    proj = lambda n_: common.dense(d, ("embed", "heads"), dtype=self.dtype,
                                   param_dtype=self.param_dtype, name=n_)
    q = proj("query")(q_in).reshape(b, self.num_heads, hd)
    k = proj("key")(x).reshape(b, n, self.num_heads, hd)
    v = proj("value")(x).reshape(b, n, self.num_heads, hd)
    logits = jnp.einsum("bhd,bnhd->bhn", q, k) / jnp.sqrt(hd).astype(
        self.dtype)
    logits = jnp.where(mask[:, None, :], logits.astype(jnp.float32), -1e30)
    w = jax.nn.softmax(logits, axis=-1)  # [B, H, N]
    pooled = jnp.einsum("bhn,bnhd->bhd", w.astype(self.dtype), v).reshape(b, d)
    pooled = common.dense(d, ("heads", "embed"), dtype=self.dtype,
                          param_dtype=self.param_dtype, name="out")(pooled)
    # A sample without real units would otherwise spread its weight evenly
    # over padding; zero it so losses see no weight there.
    return pooled, w.mean(axis=1) * mask


class CrossAttention(nn.Module):
  """LoVT's symmetric single-head attention between regions and sentences.

  One key projection K serves both modalities, so the score matrix
  s[k, l] = (K r_k) . (K z_l) / sqrt(dim) is shared by both directions;
  one value projection V and one output projection O are shared too.

  Attributes:
    dim: width of the projections (512).
    norm: "batch" (LoVT's attention_norm) or "none" on the attended outputs.
    dtype: compute dtype (softmaxes run in float32).
    param_dtype: parameter dtype.
  """
  dim: int = 512
  norm: str = "batch"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, regions: jax.Array, sents: jax.Array,
               sent_mask: jax.Array, *, train: bool = False
               ) -> tuple[jax.Array, jax.Array, dict]:
    """Attends each region to the sentences and each sentence to regions.

    Args:
      regions: projected image locals [B, N, D].
      sents: projected report locals [B, S, D].
      sent_mask: [B, S] bool, True for real sentences.
      train: BatchNorm uses batch statistics.

    Returns:
      (z^{R->I} [B, N, dim]: the report attended to each region,
       z^{I->R} [B, S, dim]: the image attended to each sentence (rows of
       padded sentences are meaningless),
       {"region_to_sentence": alpha [B, N, S] (softmax over real
       sentences), "sentence_to_region": beta [B, N, S] (softmax over
       regions)}).
    """
    if self.norm not in ("batch", "none"):
      raise ValueError(f"unknown attention norm {self.norm!r}; expected "
                       "'batch' or 'none'")
    sent_mask = jnp.asarray(sent_mask, bool)
    dense = lambda n: common.dense(self.dim, ("embed", "kv"),
                                   dtype=self.dtype,
                                   param_dtype=self.param_dtype, name=n)
    key, value, out = dense("key"), dense("value"), dense("out")
    ki, kr = key(regions), key(sents)
    scores = jnp.einsum("bnd,bsd->bns", ki, kr) / jnp.sqrt(self.dim).astype(
        self.dtype)
    scores = scores.astype(jnp.float32)
    alpha = jax.nn.softmax(jnp.where(sent_mask[:, None, :], scores, -1e30),
                           axis=2)  # over sentences, per region
    beta = jax.nn.softmax(scores, axis=1)  # over regions, per sentence
    r2i = out(jnp.einsum("bns,bsd->bnd", alpha.astype(self.dtype),
                         value(sents)))
    i2r = out(jnp.einsum("bns,bnd->bsd", beta.astype(self.dtype),
                         value(regions)))
    if self.norm == "batch":
      bn = lambda n: nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                  epsilon=1e-5, dtype=self.dtype,
                                  param_dtype=self.param_dtype, name=n)
      r2i = bn("bn_regions")(r2i)
      i2r = bn("bn_sentences")(i2r, mask=sent_mask[..., None])
    return r2i, i2r, {"region_to_sentence": alpha,
                      "sentence_to_region": beta}


def region_word_attention(regions: jax.Array, words: jax.Array,
                          word_mask: jax.Array, gamma1: float
                          ) -> tuple[jax.Array, jax.Array]:
  """DAMSM attention of matched pairs (METHODS.md §2.2b).

  Raw dot-product affinities a[t, r] = e_t . r_r; the first softmax runs
  over the (real) words for each region, the second over the regions for
  each word, sharpened by gamma1; c_t = sum_r alpha[t, r] r_r. Parameter
  free, so a plain function (the losses and the grounding pictures use it).

  Args:
    regions: [B, R, D].
    words: [B, T, D], paired with the regions of the same row.
    word_mask: [B, T] bool, True for real words.
    gamma1: sharpness of the softmax over regions (4 in JoImTeRNet).

  Returns:
    (attention over regions per word [B, T, R] (rows of masked words are
    meaningless), region context per word [B, T, D]).
  """
  a = jnp.einsum("btd,brd->btr", words, regions).astype(jnp.float32)
  a = jnp.where(word_mask[..., None], a, -1e30)
  a = jax.nn.softmax(a, axis=1)  # over words, for each region
  attn = jax.nn.softmax(gamma1 * a, axis=2)  # over regions, for each word
  ctx = jnp.einsum("btr,brd->btd", attn.astype(regions.dtype), regions)
  return attn, ctx
