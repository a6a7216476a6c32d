"""Vision Transformer tower (Ti/S/B, big_vision layout); patch tokens = regions.

`variant` is "<size>/<patch>" (e.g. "S/16"). Pre-LN encoder blocks
(`jointcxr.models.transformer`), learned position embeddings for the patch
grid, `pool="gap"` (mean of the patch tokens) or `"cls"` (a class token
without position embedding, big_vision style). Parameters: `embedding`
(the patch convolution, kernel [p, p, cin, D]), `pos_embedding`, `cls`,
`encoder/layer_{i}/...`, `encoder/ln_final`.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jointcxr.models import common
from jointcxr.models import transformer

# width, depth, heads
VARIANTS = {"Ti": (192, 12, 3), "S": (384, 12, 6), "B": (768, 12, 12)}


def parse_variant(variant: str) -> tuple[int, int, int, int]:
  """"S/16" -> (width, depth, heads, patch).

  Args:
    variant: size name from VARIANTS, a slash and the patch size.

  Returns:
    (width, depth, heads, patch).

  Raises:
    ValueError: on a malformed variant string.
  """
  name, _, patch = variant.partition("/")
  if name not in VARIANTS or not patch.isdigit():
    raise ValueError(f"bad ViT variant {variant!r}; expected e.g. 'S/16' "
                     f"with a size in {sorted(VARIANTS)}")
  return (*VARIANTS[name], int(patch))


class ViT(nn.Module):
  """Vision Transformer image tower.

  Attributes:
    variant: "Ti/16", "S/16", "B/32", ...
    width: overrides the variant's width (tiny test models).
    depth: overrides the variant's depth.
    num_heads: overrides the variant's heads.
    mlp_ratio: MLP width / model width.
    pool: "gap" (mean of patch tokens) or "cls".
    dropout: dropout in the encoder.
    in_channels: input channels.
    conv_impl: lowering of the patch convolution ("im2col" is a reshape).
    remat: rematerialise each encoder block.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """
  variant: str = "S/16"
  width: int | None = None
  depth: int | None = None
  num_heads: int | None = None
  mlp_ratio: int = 4
  pool: str = "gap"
  dropout: float = 0.0
  in_channels: int = 1
  conv_impl: str = "xla"
  remat: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> dict:
    """Runs the tower.

    Args:
      x: images [B, H, W, in_channels], H and W multiples of the patch.
      train: enables dropout.

    Returns:
      dict with `tokens` [B, h*w, D] (patch tokens after the final norm),
      `regions` [B, h, w, D] (the same as a grid) and `global` [B, D].
    """
    w0, d0, h0, patch = parse_variant(self.variant)
    width, depth, heads = (self.width or w0, self.depth or d0,
                           self.num_heads or h0)
    if self.pool not in ("gap", "cls"):
      raise ValueError(f"unknown ViT pool {self.pool!r}; expected 'gap' or "
                       "'cls'")
    if x.shape[-1] != self.in_channels:
      raise ValueError(f"expected {self.in_channels} input channel(s), got "
                       f"image shape {x.shape}")
    if x.shape[1] % patch or x.shape[2] % patch:
      raise ValueError(f"image size {x.shape[1:3]} is not a multiple of the "
                       f"patch size {patch}")
    x = nn.with_logical_constraint(x, ("act_batch", None, None, None))
    y = common.Conv(width, patch, patch, padding=0, use_bias=True,
                    conv_impl=self.conv_impl, dtype=self.dtype,
                    param_dtype=self.param_dtype,
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
  """Factory used by the two-tower model (`image_model="vit"`).

  Args:
    **kw: `ViT` attributes.

  Returns:
    The unbound module.
  """
  return ViT(**kw)
