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
  hidden: int = 2048
  out: int = 512
  norm: str = "batch"  # batch | none
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    h = common.dense(self.hidden, ("embed", "mlp"), dtype=self.dtype,
                     param_dtype=self.param_dtype, name="fc1",
                     kernel_init=nn.initializers.kaiming_normal())(x)
    if self.norm == "batch":
      bn = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                        epsilon=1e-5, dtype=self.dtype,
                        param_dtype=self.param_dtype, name="bn")
      h = bn(h, mask=None if mask is None else mask[..., None])
    elif self.norm != "none":
      raise ValueError(f"unknown norm {self.norm!r}")
    return common.dense(self.out, ("mlp", "embed"), dtype=self.dtype,
                        param_dtype=self.param_dtype, name="fc2",
                        kernel_init=nn.initializers.kaiming_normal())(
                            nn.relu(h))


class Linear(nn.Module):
  out: int = 512
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask=None, *, train: bool = False):
    del mask, train
    return common.dense(self.out, ("embed", "mlp"), dtype=self.dtype,
                        param_dtype=self.param_dtype, name="fc")(x)


class AttentionPool(nn.Module):
  """Multi-head attention with the (masked) mean of the units as query."""
  num_heads: int = 8
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array]:
    b, n, d = x.shape
    if mask is None:
      mask = jnp.ones((b, n), bool)
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
    return pooled, w.mean(axis=1)


class CrossAttention(nn.Module):
  """Symmetric single-head attention between regions and sentences."""
  dim: int = 512
  norm: str = "batch"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, regions: jax.Array, sents: jax.Array,
               sent_mask: jax.Array, *, train: bool = False
               ) -> tuple[jax.Array, jax.Array, dict]:
    """Returns (regions attended by sentences [B,N,D] = z^{R->I},
    sentences attended by regions [B,S,D] = z^{I->R}, attention maps)."""
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

  Args:
    regions: [B, R, D]; words: [B, T, D]; word_mask: [B, T].
    gamma1: sharpness of the softmax over regions.

  Returns:
    (attention over regions per word [B, T, R], region context per word
    [B, T, D]).
  """
  a = jnp.einsum("btd,brd->btr", words, regions).astype(jnp.float32)
  a = jnp.where(word_mask[..., None], a, -1e30)
  a = jax.nn.softmax(a, axis=1)  # over words, for each region
  attn = jax.nn.softmax(gamma1 * a, axis=2)  # over regions, for each word
  ctx = jnp.einsum("btr,brd->btd", attn.astype(regions.dtype), regions)
  return attn, ctx
