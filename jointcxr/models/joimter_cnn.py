"""JoImTeRNet's image encoder: a small grayscale ResNet with soft attention.

METHODS.md §2.1 and the authors' `JoImTeR/model_img.py`: a 7x7/4 stem with
8 channels (BN, ReLU, no max-pool); six stages of two BasicBlocks, each
stage halving the resolution, with 16, 32, 64, 128, 256, 512 channels; a
SoftAttention block after stages 4 and 5. Regions: the stage-5 output ->
1x1 conv (no bias) to `region_dim` (16x16 = 256 regions at 2048 px);
global: stage 6 -> adaptive average pool 2x2 -> flatten -> Linear
`global_dim`. Any input size works: each stride-2 stage maps h to
ceil(h / 2) as in PyTorch (a multiple of 4 * 2**6 = 256 halves exactly;
the paper uses 2048 px, the tests 256 and 224).

SoftAttention, as in the code: a Conv3d with kernel (C, 1, 1) over the
channel axis (= a 1x1 convolution from C channels to 16 heads, with bias),
LeakyReLU(0.01), a softmax of each head over the h*w positions, the heads
summed into one map A [B, h, w, 1], and output x + s * (x * A) with a
learned scalar s (initialised U[0, 1) like `torch.rand(1)`). Its kernel is
stored as a dense `attention{s}/conv/kernel [C, heads]` (torch's Conv3d
weight [heads, 1, C, 1, 1] squeezed and transposed).

Initialisation follows the code: kaiming_normal(fan_out) for the 2-D convs,
BN scale 1 / bias 0, PyTorch's default uniform(+-1/sqrt(fan_in)) kernels for
the Conv3d and the global Linear. Their biases start at zero (PyTorch draws
them uniformly too; the difference washes out in training).
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jointcxr.models import common
from jointcxr.models import resnet

# PyTorch's default Linear/ConvNd init: kaiming_uniform(a=sqrt(5)) is
# U(+-1/sqrt(fan_in)), i.e. variance_scaling(1/3, fan_in, uniform).
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in",
                                                      "uniform")


class SoftAttention(nn.Module):
  """Multi-head spatial soft attention: x + s * (x * sum_h softmax_hw(.)).

  Attributes:
    heads: number of attention maps summed into one (16 in the code).
    dtype: compute dtype (the softmax runs in float32).
    param_dtype: parameter dtype.
  """
  heads: int = 16
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Applies the block.

    Args:
      x: [B, h, w, C].

    Returns:
      (output [B, h, w, C], attention map A [B, h, w] whose values sum to
      `heads` over the positions of each image).
    """
    b, h, w, _ = x.shape
    logits = common.dense(self.heads, ("conv_in", "conv_out"),
                          dtype=self.dtype, param_dtype=self.param_dtype,
                          kernel_init=torch_default_init, name="conv")(x)
    logits = nn.leaky_relu(logits.astype(jnp.float32), 0.01)
    a = jax.nn.softmax(logits.reshape(b, h * w, self.heads), axis=1)
    a = a.sum(-1).reshape(b, h, w)
    s = self.param("scale", nn.initializers.uniform(1.0), (),
                   self.param_dtype)
    y = x + jnp.asarray(s, self.dtype) * (x * a[..., None].astype(self.dtype))
    return y, a


class JoImTerCNN(nn.Module):
  """JoImTeRNet image tower.

  Attributes:
    channels: output channels of the six stages.
    stem_channels: channels of the 7x7/4 stem.
    region_dim: width of the 1x1-projected regions.
    global_dim: width of the global vector.
    attention_after: stages (1-based) followed by a SoftAttention block.
    attention_heads: heads of each SoftAttention block.
    in_channels: input channels (1, grayscale).
    conv_impl: "xla" or "im2col" (see `common.Conv`).
    remat: rematerialise each BasicBlock in the backward pass.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """
  channels: Sequence[int] = (16, 32, 64, 128, 256, 512)
  stem_channels: int = 8
  region_dim: int = 512
  global_dim: int = 512
  attention_after: Sequence[int] = (4, 5)
  attention_heads: int = 16
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
      dict with `stage1`..`stage6` maps, `attention{s}` maps [B, h, w] of
      the SoftAttention blocks, `regions` [B, h5, w5, region_dim] (stage 5
      -> 1x1 conv) and `global` [B, global_dim].
    """
    if x.shape[-1] != self.in_channels:
      raise ValueError(f"expected {self.in_channels} input channel(s), got "
                       f"image shape {x.shape}")
    n = len(self.channels)
    conv = functools.partial(common.Conv, conv_impl=self.conv_impl,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(common.norm_layer, "batch", train=train,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    block = nn.remat(resnet.BasicBlock) if self.remat else resnet.BasicBlock
    x = nn.with_logical_constraint(x, ("act_batch", None, None, None))
    y = nn.relu(norm(name="bn1")(conv(self.stem_channels, 7, 4, padding=3,
                                      name="conv1")(x)))
    out = {}
    for s, c in enumerate(self.channels, start=1):
      y = block(c, 2, conv, norm, name=f"stage{s}_0")(y)
      y = block(c, 1, conv, norm, name=f"stage{s}_1")(y)
      if s in self.attention_after:
        y, out[f"attention{s}"] = SoftAttention(
            self.attention_heads, dtype=self.dtype,
            param_dtype=self.param_dtype, name=f"attention{s}")(y)
      out[f"stage{s}"] = y
    out["regions"] = conv(self.region_dim, 1, 1, padding=0,
                          name="region_proj")(out[f"stage{n - 1}"])
    pooled = common.adaptive_avg_pool(out[f"stage{n}"], 2, 2)
    fan_in = 4 * self.channels[-1]
    out["global"] = common.dense(
        self.global_dim, ("embed", "mlp"), dtype=self.dtype,
        param_dtype=self.param_dtype, kernel_init=torch_default_init,
        name="global_proj")(pooled.reshape(pooled.shape[0], fan_in))
    return out


def Model(**kw) -> JoImTerCNN:  # pylint: disable=invalid-name
  """Factory used by the two-tower model (`image_model="joimter_cnn"`).

  Args:
    **kw: `JoImTerCNN` attributes.

  Returns:
    The unbound module.
  """
  return JoImTerCNN(**kw)
