"""ResNet-18/50 image towers returning conv1..conv5 maps, regions and a global.

Parameter names follow torchvision so that export/import is one-to-one:

    flax                              torchvision
    conv1/kernel [7,7,cin,64]         conv1.weight [64,cin,7,7]
    bn1/{scale,bias}                  bn1.{weight,bias}
    batch_stats bn1/{mean,var}        bn1.{running_mean,running_var}
    layer{s}_{i}/conv{k}, bn{k}       layer{s}.{i}.conv{k}, bn{k}
    layer{s}_{i}/downsample_conv      layer{s}.{i}.downsample.0
    layer{s}_{i}/downsample_bn        layer{s}.{i}.downsample.1

(conv kernels transpose HWIO <-> OIHW; `jointcxr.torch_layout` does the
conversion). Grayscale input uses `in_channels=1`; ImageNet RGB stems are
folded on import by summing the `conv1` kernel over its 3 input channels,
which gives the same output for a gray image replicated to RGB (so the
ImageNet normalisation must then be applied to the gray channel with the
mean/std of the three channels' average).

Initialisation follows torchvision: kaiming_normal(fan_out) convolutions,
BatchNorm scale 1 and bias 0; `zero_init_residual=True` zero-initialises the
last BN of each residual branch (torchvision's option, off by default).
Tiny test variants come from `width` (channels of the first stage) and
`stage_sizes` (blocks per stage).
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jointcxr.models import common

STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3),
          101: (3, 4, 23, 3)}


def _last_bn_init(zero: bool):
  return nn.initializers.zeros if zero else nn.initializers.ones


class BasicBlock(nn.Module):
  """torchvision BasicBlock: two 3x3 convs, projection shortcut if needed.

  Attributes:
    features: output channels.
    stride: stride of the first conv (and of the shortcut).
    conv: `common.Conv` partial (lowering, dtypes).
    norm: `common.norm_layer` partial (kind, train, dtypes).
    zero_init_residual: zero-initialise bn2's scale.
  """
  features: int
  stride: int
  conv: Any
  norm: Any
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.relu(self.norm(name="bn1")(self.conv(self.features, 3, self.stride,
                                                name="conv1")(x)))
    y = self.norm(name="bn2",
                  scale_init=_last_bn_init(self.zero_init_residual))(
                      self.conv(self.features, 3, 1, name="conv2")(y))
    if x.shape[-1] != self.features or self.stride != 1:
      x = self.norm(name="downsample_bn")(self.conv(
          self.features, 1, self.stride, padding=0,
          name="downsample_conv")(x))
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  """torchvision Bottleneck (v1.5: the stride sits on the 3x3 conv).

  Attributes:
    features: bottleneck width; the output has `features * expansion`.
    stride: stride of conv2 (and of the shortcut).
    conv: `common.Conv` partial.
    norm: `common.norm_layer` partial.
    zero_init_residual: zero-initialise bn3's scale.
    expansion: output channel multiplier.
  """
  features: int
  stride: int
  conv: Any
  norm: Any
  zero_init_residual: bool = False
  expansion: int = 4

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out = self.features * self.expansion
    y = nn.relu(self.norm(name="bn1")(self.conv(self.features, 1, 1,
                                                padding=0, name="conv1")(x)))
    y = nn.relu(self.norm(name="bn2")(self.conv(self.features, 3, self.stride,
                                                name="conv2")(y)))
    y = self.norm(name="bn3",
                  scale_init=_last_bn_init(self.zero_init_residual))(
        self.conv(out, 1, 1, padding=0, name="conv3")(y))
    if x.shape[-1] != out or self.stride != 1:
      x = self.norm(name="downsample_bn")(self.conv(
          out, 1, self.stride, padding=0, name="downsample_conv")(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ResNet image tower.

  Attributes:
    depth: 18 or 34 (BasicBlock), 50 or 101 (Bottleneck).
    width: channels of the stem and first stage (64 in torchvision).
    stage_sizes: blocks per stage; None takes the depth's standard sizes.
    norm: "batch" or "group".
    norm_groups: GroupNorm groups (32; tiny test widths need fewer).
    in_channels: input channels (1 for grayscale radiographs).
    conv_impl: "xla" or "im2col" (see `common.Conv`).
    zero_init_residual: torchvision's option of the same name.
    remat: rematerialise each residual block in the backward pass.
    output_stride: 32 (torchvision), 16 or 8: the last one or two stages
      keep their input resolution (stride 1, no dilation), so `regions`
      has 2x / 4x more rows and columns. Small inputs need it (at 64 px a
      stride-32 map is 2 x 2); parameter shapes and names do not change.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """
  depth: int = 50
  width: int = 64
  stage_sizes: Sequence[int] | None = None
  norm: str = "batch"
  norm_groups: int = 32
  in_channels: int = 1
  conv_impl: str = "xla"
  zero_init_residual: bool = False
  remat: bool = False
  output_stride: int = 32
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> dict:
    """Runs the tower.

    Args:
      x: images [B, H, W, in_channels].
      train: BatchNorm uses batch statistics (and updates `batch_stats`).

    Returns:
      dict with `conv1` (stem output, stride 2), `conv2`..`conv5` (stage
      outputs, strides 4..32, or capped at `output_stride`), `regions`
      (= conv5, [B, h, w, C]) and
      `global` (average-pooled conv5, [B, C]).
    """
    if self.depth not in STAGES and self.stage_sizes is None:
      raise ValueError(f"unknown ResNet depth {self.depth}; expected one of "
                       f"{sorted(STAGES)} or explicit stage_sizes")
    if self.output_stride not in (8, 16, 32):
      raise ValueError(f"output_stride must be 8, 16 or 32, got "
                       f"{self.output_stride}")
    if x.shape[-1] != self.in_channels:
      raise ValueError(f"expected {self.in_channels} input channel(s), got "
                       f"image shape {x.shape}")
    conv = functools.partial(common.Conv, conv_impl=self.conv_impl,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(common.norm_layer, self.norm, train=train,
                             dtype=self.dtype, param_dtype=self.param_dtype,
                             groups=self.norm_groups)
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
    # Stages from this index on keep their resolution (output_stride < 32).
    full_res_from = len(sizes) - {32: 0, 16: 1, 8: 2}[self.output_stride]
    for s, n in enumerate(sizes):
      for i in range(n):
        stride = 2 if (0 < s < full_res_from and i == 0) else 1
        y = block_cls(self.width * 2 ** s, stride, conv, norm,
                      self.zero_init_residual, name=f"layer{s + 1}_{i}")(y)
      out[f"conv{s + 2}"] = y
    out["regions"] = y
    out["global"] = jnp.mean(y, axis=(1, 2))
    return out


def Model(**kw) -> ResNet:  # pylint: disable=invalid-name
  """Factory used by the two-tower model (`image_model="resnet"`).

  Args:
    **kw: `ResNet` attributes.

  Returns:
    The unbound module.
  """
  return ResNet(**kw)
