"""DenseNet-121 (Hsu et al.'s image feature extractor): global = avgpool 1024-d.

torchvision names: features.conv0 / norm0 / denseblock{b}.denselayer{l}.
{norm1,conv1,norm2,conv2} / transition{b}.{norm,conv} / norm5 map to
`conv0`, `norm0`, `block{b}_layer{l}/{norm1,conv1,norm2,conv2}`,
`transition{b}/{norm,conv}`, `norm5`.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jointcxr.models import common


class DenseLayer(nn.Module):
  growth: int
  bn_size: int
  conv: Any
  norm: Any

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.bn_size * self.growth, 1, 1, padding=0, name="conv1")(
        nn.relu(self.norm(name="norm1")(x)))
    y = self.conv(self.growth, 3, 1, name="conv2")(
        nn.relu(self.norm(name="norm2")(y)))
    return jnp.concatenate([x, y], axis=-1)


class DenseNet(nn.Module):
  """Output: regions (final map), global (1024-d for DenseNet-121)."""
  growth: int = 32
  blocks: Sequence[int] = (6, 12, 24, 16)
  init_features: int = 64
  bn_size: int = 4
  in_channels: int = 1
  conv_impl: str = "xla"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> dict:
    conv = functools.partial(common.Conv, conv_impl=self.conv_impl,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(common.norm_layer, "batch", train=train,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    y = conv(self.init_features, 7, 2, padding=3, name="conv0")(x)
    y = common.max_pool_3x3_s2(nn.relu(norm(name="norm0")(y)))
    out = {}
    for b, n in enumerate(self.blocks, start=1):
      for l in range(1, n + 1):
        y = DenseLayer(self.growth, self.bn_size, conv, norm,
                       name=f"block{b}_layer{l}")(y)
      out[f"block{b}"] = y
      if b != len(self.blocks):
        y = _Transition(y.shape[-1] // 2, conv, norm,
                        name=f"transition{b}")(y)
    y = nn.relu(norm(name="norm5")(y))
    out["regions"] = y
    out["global"] = y.mean(axis=(1, 2))
    return out


class _Transition(nn.Module):
  features: int
  conv: Any
  norm: Any

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.features, 1, 1, padding=0, name="conv")(
        nn.relu(self.norm(name="norm")(x)))
    return nn.avg_pool(y, (2, 2), strides=(2, 2))


def Model(**kw) -> DenseNet:  # pylint: disable=invalid-name
  return DenseNet(**kw)
