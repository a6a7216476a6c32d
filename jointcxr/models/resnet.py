"""ResNet-18/50 image towers returning conv1..conv5 maps, regions and a global.

Parameter names follow torchvision so that export/import is one-to-one:

    flax                              torchvision
    conv1/kernel [7,7,cin,64]         conv1.weight [64,cin,7,7]
    bn1/{scale,bias}                  bn1.{weight,bias}
    batch_stats bn1/{mean,var}        bn1.{running_mean,running_var}
    layer{s}_{i}/conv{k}, bn{k}       layer{s}.{i}.conv{k}, bn{k}
    layer{s}_{i}/downsample_conv      layer{s}.{i}.downsample.0
    layer{s}_{i}/downsample_bn        layer{s}.{i}.downsample.1

(conv kernels transpose HWIO <-> OIHW). Grayscale input uses `in_channels=1`;
ImageNet RGB stems are folded on import by summing the kernel over its input
channels (equivalent for a gray image replicated to RGB).
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jointcxr.models import common

STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3),
          101: (3, 4, 23, 3)}


class BasicBlock(nn.Module):
  features: int
  stride: int
  conv: Any
  norm: Any

  @nn.compact
  def __call__(self, x):
    y = nn.relu(self.norm(name="bn1")(self.conv(self.features, 3, self.stride,
                                                name="conv1")(x)))
    y = self.norm(name="bn2", scale_init=nn.initializers.zeros)(
        self.conv(self.features, 3, 1, name="conv2")(y))
    if x.shape[-1] != self.features or self.stride != 1:
      x = self.norm(name="downsample_bn")(self.conv(
          self.features, 1, self.stride, padding=0,
          name="downsample_conv")(x))
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  features: int
  stride: int
  conv: Any
  norm: Any
  expansion: int = 4

  @nn.compact
  def __call__(self, x):
    out = self.features * self.expansion
    y = nn.relu(self.norm(name="bn1")(self.conv(self.features, 1, 1,
                                                padding=0, name="conv1")(x)))
    y = nn.relu(self.norm(name="bn2")(self.conv(self.features, 3, self.stride,
                                                name="conv2")(y)))
    y = self.norm(name="bn3", scale_init=nn.initializers.zeros)(
        self.conv(out, 1, 1, padding=0, name="conv3")(y))
    if x.shape[-1] != out or self.stride != 1:
      x = self.norm(name="downsample_bn")(self.conv(
          out, 1, self.stride, padding=0, name="downsample_conv")(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ResNet tower. Output dict: conv1..conv5, regions (=conv5), global."""
  depth: int = 50
  width: int = 64
  stage_sizes: Sequence[int] | None = None
  norm: str = "batch"
  in_channels: int = 1
  conv_impl: str = "xla"
  remat: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> dict:
    if x.shape[-1] != self.in_channels:
      raise ValueError(f"expected {self.in_channels} input channel(s), got "
                       f"image shape {x.shape}")
    conv = functools.partial(common.Conv, conv_impl=self.conv_impl,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(common.norm_layer, self.norm, train=train,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.with_logical_constraint(x, ("act_batch", None, None, None))
    out = {}
    y = nn.relu(norm(name="bn1")(conv(self.width, 7, 2, padding=3,
                                      name="conv1")(x)))
    out["conv1"] = y
    y = common.max_pool_3x3_s2(y)
    block_cls = Bottleneck if self.depth >= 50 else BasicBlock
    if self.remat:
      block_cls = nn.remat(block_cls)
    sizes = self.stage_sizes or STAGES[self.depth]
    for s, n in enumerate(sizes):
      for i in range(n):
        stride = 2 if (s > 0 and i == 0) else 1
        y = block_cls(self.width * 2 ** s, stride, conv, norm,
                      name=f"layer{s + 1}_{i}")(y)
      out[f"conv{s + 2}"] = y
    out["regions"] = y
    out["global"] = jnp.mean(y, axis=(1, 2))
    return out


def Model(**kw) -> ResNet:  # pylint: disable=invalid-name
  """Factory used by the two-tower model (`image_model="resnet"`)."""
  return ResNet(**kw)
