"""Vision Transformer tower (Ti/S/B); patch tokens are the regions."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jointcxr.models import common
from jointcxr.models import transformer

VARIANTS = {"Ti": (192, 12, 3), "S": (384, 12, 6), "B": (768, 12, 12)}


class ViT(nn.Module):
  """`variant` like "S/16". Output: regions [B,h,w,D], global, tokens."""
  variant: str = "S/16"
  width: int | None = None
  depth: int | None = None
  num_heads: int | None = None
  mlp_ratio: int = 4
  pool: str = "gap"  # or "cls"
  dropout: float = 0.0
  remat: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> dict:
    name, patch = self.variant.split("/")
    w0, d0, h0 = VARIANTS[name]
    width, depth, heads = (self.width or w0, self.depth or d0,
                           self.num_heads or h0)
    patch = int(patch)
    y = common.Conv(width, patch, patch, padding=0, use_bias=True,
                    dtype=self.dtype, param_dtype=self.param_dtype,
                    kernel_init=nn.initializers.lecun_normal(),
                    name="embedding")(x)
    b, h, w, _ = y.shape
    y = y.reshape(b, h * w, width)
    pos = self.param("pos_embedding", common.partitioned(
        nn.initializers.normal(0.02), (None, None, "embed")),
                     (1, h * w, width), self.param_dtype)
    y = y + jnp.asarray(pos, self.dtype)
    if self.pool == "cls":
      cls = self.param("cls", common.partitioned(nn.initializers.zeros,
                                                 (None, None, "embed")),
                       (1, 1, width), self.param_dtype)
      y = jnp.concatenate([jnp.tile(jnp.asarray(cls, self.dtype),
                                    (b, 1, 1)), y], axis=1)
    mask = jnp.ones(y.shape[:2], bool)
    y = transformer.Encoder(depth, heads, width * self.mlp_ratio,
                            self.dropout, pre_norm=True, remat=self.remat,
                            dtype=self.dtype, param_dtype=self.param_dtype,
                            name="encoder")(y, mask, train=train)
    tokens = y[:, 1:] if self.pool == "cls" else y
    out = {"tokens": tokens, "regions": tokens.reshape(b, h, w, width)}
    out["global"] = y[:, 0] if self.pool == "cls" else tokens.mean(axis=1)
    return out


def Model(**kw) -> ViT:  # pylint: disable=invalid-name
  return ViT(**kw)
