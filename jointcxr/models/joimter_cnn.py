"""JoImTeRNet's image encoder: a small grayscale ResNet with soft attention.

METHODS.md §2.1: 7x7/4 stem with 8 channels (BN, ReLU, no max-pool); six
stages of two BasicBlocks, each stage halving the resolution, with 16, 32,
64, 128, 256, 512 channels; a SoftAttention block after stages 4 and 5 (16
spatial attention heads, each softmaxed over positions, summed into one map
A; output x + s * (x * A) with a learned scalar s). Regions: stage-5 output
-> 1x1 conv to `region_dim` (16x16 = 256 regions at 2048 px); global:
stage 6 -> adaptive average pool 2x2 -> flatten -> Linear `global_dim`.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jointcxr.models import common
from jointcxr.models import resnet


class SoftAttention(nn.Module):
  heads: int = 16
  conv_impl: str = "xla"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, _ = x.shape
    logits = common.Conv(self.heads, 3, 1, use_bias=True,
                         conv_impl=self.conv_impl, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="conv")(x)
    a = jax.nn.softmax(logits.reshape(b, h * w, self.heads).astype(
        jnp.float32), axis=1).sum(-1).reshape(b, h, w, 1).astype(self.dtype)
    s = self.param("scale", nn.initializers.zeros, (), self.param_dtype)
    return x + jnp.asarray(s, self.dtype) * (x * a)


class JoImTerCNN(nn.Module):
  """Output: regions [B,h,w,region_dim], global [B,global_dim], stage maps."""
  channels: Sequence[int] = (16, 32, 64, 128, 256, 512)
  stem_channels: int = 8
  region_dim: int = 512
  global_dim: int = 512
  attention_after: Sequence[int] = (4, 5)
  conv_impl: str = "xla"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> dict:
    conv = functools.partial(common.Conv, conv_impl=self.conv_impl,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(common.norm_layer, "batch", train=train,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    y = nn.relu(norm(name="bn1")(conv(self.stem_channels, 7, 4, padding=3,
                                      name="conv1")(x)))
    out = {}
    n = len(self.channels)
    for s, c in enumerate(self.channels, start=1):
      y = resnet.BasicBlock(c, 2, conv, norm, name=f"stage{s}_0")(y)
      y = resnet.BasicBlock(c, 1, conv, norm, name=f"stage{s}_1")(y)
      if s in self.attention_after:
        y = SoftAttention(conv_impl=self.conv_impl, dtype=self.dtype,
                          param_dtype=self.param_dtype,
                          name=f"attention{s}")(y)
      out[f"stage{s}"] = y
    regions = conv(self.region_dim, 1, 1, padding=0, use_bias=True,
                   name="region_proj")(out[f"stage{n - 1}"])
    pooled = common.adaptive_avg_pool(out[f"stage{n}"], 2, 2)
    g = common.dense(self.global_dim, ("embed", "mlp"), dtype=self.dtype,
                     param_dtype=self.param_dtype, name="global_proj")(
                         pooled.reshape(pooled.shape[0], -1))
    out.update(regions=regions, global_=g)
    out["global"] = out.pop("global_")
    return out


def Model(**kw) -> JoImTerCNN:  # pylint: disable=invalid-name
  return JoImTerCNN(**kw)
