"""DenseNet-121 (Hsu et al.'s image feature extractor): global = avgpool 1024-d.

torchvision names map one-to-one (conv kernels HWIO <-> OIHW):

    flax                                   torchvision (`features.` prefix)
    conv0, norm0                           conv0, norm0
    block{b}_layer{l}/{norm1,conv1,...}    denseblock{b}.denselayer{l}.*
    transition{b}/{norm,conv}              transition{b}.{norm,conv}
    norm5                                  norm5

A 3-channel ImageNet stem folds to `in_channels=1` by summing `conv0`'s
kernel over its input channels (as for the ResNet). `regions` is the final
map after norm5 + ReLU; `global` its average (torchvision's features before
the classifier), and `block1`..`block4` the dense blocks' outputs.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jointcxr.models import common


class DenseLayer(nn.Module):
  """BN-ReLU-1x1 conv (bn_size * growth) - BN-ReLU-3x3 conv (growth), concat.

  Attributes:
    growth: channels added by the layer.
    bn_size: bottleneck multiplier.
    conv: `common.Conv` partial.
    norm: `common.norm_layer` partial.
  """
  growth: int
  bn_size: int
  conv: Any
  norm: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.conv(self.bn_size * self.growth, 1, 1, padding=0, name="conv1")(
        nn.relu(self.norm(name="norm1")(x)))
    y = self.conv(self.growth, 3, 1, name="conv2")(
        nn.relu(self.norm(name="norm2")(y)))
    return jnp.concatenate([x, y], axis=-1)


class DenseNet(nn.Module):
  """DenseNet image tower (defaults: DenseNet-121).

  Attributes:
    growth: growth rate.
    blocks: dense layers per block.
    init_features: stem channels.
    bn_size: bottleneck multiplier.
    in_channels: input channels.
    conv_impl: "xla" or "im2col" (see `common.Conv`).
    remat: rematerialise each dense layer in the backward pass.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """
  growth: int = 32
  blocks: Sequence[int] = (6, 12, 24, 16)
  init_features: int = 64
  bn_size: int = 4
  in_channels: int = 1
  conv_impl: str = "xla"
  remat: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> dict:
    """Runs the tower.

    Args:
      x: images [B, H, W, in_channels].
      train: BatchNorm uses batch statistics.

    Returns:
      dict with `block1`..`block{n}`, `regions` [B, h, w, C] and `global`
      [B, C] (C = 1024 for DenseNet-121).
    """
    if x.shape[-1] != self.in_channels:
      raise ValueError(f"expected {self.in_channels} input channel(s), got "
                       f"image shape {x.shape}")
    conv = functools.partial(common.Conv, conv_impl=self.conv_impl,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(common.norm_layer, "batch", train=train,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    layer = nn.remat(DenseLayer) if self.remat else DenseLayer
    x = nn.with_logical_constraint(x, ("act_batch", None, None, None))
    y = conv(self.init_features, 7, 2, padding=3, name="conv0")(x)
    y = common.max_pool_3x3_s2(nn.relu(norm(name="norm0")(y)))
    out = {}
    for b, n in enumerate(self.blocks, start=1):
      for l in range(1, n + 1):
        y = layer(self.growth, self.bn_size, conv, norm,
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
  """BN-ReLU-1x1 conv halving the channels, then 2x2 average pooling."""
  features: int
  conv: Any
  norm: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.conv(self.features, 1, 1, padding=0, name="conv")(
        nn.relu(self.norm(name="norm")(x)))
    return nn.avg_pool(y, (2, 2), strides=(2, 2))


def Model(**kw) -> DenseNet:  # pylint: disable=invalid-name
  """Factory used by the two-tower model (`image_model="densenet"`).

  Args:
    **kw: `DenseNet` attributes.

  Returns:
    The unbound module.
  """
  return DenseNet(**kw)
