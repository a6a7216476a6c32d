"""Transformer encoder blocks shared by the ViT and BERT towers.

Post-LN (BERT, so HF BERT weights import exactly) or pre-LN (ViT). Parameter
names: `attn/{query,key,value,out}`, `ln_attn`, `mlp/{in,out}`, `ln_mlp`.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jointcxr.models import common


class SelfAttention(nn.Module):
  """Multi-head scaled dot-product self-attention with a key padding mask.

  Attributes:
    num_heads: heads; the width must divide by it.
    dropout: dropout on the attention probabilities (BERT's 0.1).
    dtype: compute dtype (the softmax runs in float32).
    param_dtype: parameter dtype.
  """
  num_heads: int
  dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, *, train: bool
               ) -> jax.Array:
    """Attends every position to the unmasked keys.

    Args:
      x: [B, T, D].
      mask: [B, T] bool, True for real tokens (keys).
      train: enables dropout.

    Returns:
      [B, T, D].
    """
    d = x.shape[-1]
    if d % self.num_heads:
      raise ValueError(f"width {d} does not divide into {self.num_heads} "
                       "heads")
    hd = d // self.num_heads
    proj = lambda n: common.dense(d, ("embed", "heads"), dtype=self.dtype,
                                  param_dtype=self.param_dtype, name=n)
    q, k, v = (proj(n)(x).reshape(*x.shape[:2], self.num_heads, hd)
               for n in ("query", "key", "value"))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(hd).astype(
        self.dtype)
    big_neg = jnp.finfo(logits.dtype).min
    logits = jnp.where(mask[:, None, None, :], logits, big_neg)
    w = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    w = nn.Dropout(self.dropout)(w, deterministic=not train)
    y = jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(x.shape)
    return common.dense(d, ("heads", "embed"), dtype=self.dtype,
                        param_dtype=self.param_dtype, name="out")(y)


class Block(nn.Module):
  """Transformer block: attention + GELU MLP, post-LN (BERT) or pre-LN (ViT).

  Attributes:
    num_heads: attention heads.
    mlp_dim: hidden width of the MLP.
    dropout: dropout rate (attention probabilities and residual branches).
    pre_norm: pre-LN (ViT, eps 1e-6) instead of post-LN (BERT, eps 1e-12).
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  pre_norm: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, train: bool = False
               ) -> jax.Array:
    """Applies the block ([B, T, D] -> [B, T, D]); `train` is positional
    so `nn.remat` can mark it static."""
    ln = lambda n: nn.LayerNorm(epsilon=1e-12 if not self.pre_norm else 1e-6,
                                dtype=self.dtype, param_dtype=self.param_dtype,
                                scale_init=common.partitioned(
                                    nn.initializers.ones, ("norm",)),
                                bias_init=common.partitioned(
                                    nn.initializers.zeros, ("norm",)),
                                name=n)
    drop = nn.Dropout(self.dropout)
    attn = SelfAttention(self.num_heads, self.dropout, self.dtype,
                         self.param_dtype, name="attn")
    mlp_in = common.dense(self.mlp_dim, ("embed", "mlp"), dtype=self.dtype,
                          param_dtype=self.param_dtype, name="mlp_in")
    mlp_out = common.dense(x.shape[-1], ("mlp", "embed"), dtype=self.dtype,
                           param_dtype=self.param_dtype, name="mlp_out")
    mlp = lambda h: mlp_out(nn.gelu(mlp_in(h), approximate=False))
    if self.pre_norm:
      x = x + drop(attn(ln("ln_attn")(x), mask, train=train),
                   deterministic=not train)
      return x + drop(mlp(ln("ln_mlp")(x)), deterministic=not train)
    x = ln("ln_attn")(x + drop(attn(x, mask, train=train),
                               deterministic=not train))
    return ln("ln_mlp")(x + drop(mlp(x), deterministic=not train))


class Encoder(nn.Module):
  """A stack of `Block`s named `layer_{i}` (+ `ln_final` when pre-LN).

  Attributes:
    depth: number of blocks.
    num_heads: attention heads.
    mlp_dim: MLP hidden width.
    dropout: dropout rate.
    pre_norm: pre-LN blocks and a final LayerNorm.
    remat: rematerialise each block in the backward pass.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """
  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  pre_norm: bool = False
  remat: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, *, train: bool = False
               ) -> jax.Array:
    """Encodes [B, T, D] with key padding mask [B, T] -> [B, T, D]."""
    # Argument 0 of the remat'ed call is the module itself, so `train` is 3.
    block = nn.remat(Block, static_argnums=(3,)) if self.remat else Block
    for i in range(self.depth):
      x = block(self.num_heads, self.mlp_dim, self.dropout, self.pre_norm,
                self.dtype, self.param_dtype, name=f"layer_{i}")(x, mask,
                                                                  train)
      x = nn.with_logical_constraint(x, ("act_batch", "act_len", "act_emb"))
    if self.pre_norm:
      x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype,
                       param_dtype=self.param_dtype, name="ln_final")(x)
    return x
