"""Building blocks shared by the towers: partitioned dense/conv, norms, pools.

Parameters carry logical axis names (`embed`, `mlp`, `heads`, `kv`,
`vocab`, `conv_in`, `conv_out`, `norm`) through `nn.with_logical_partitioning`;
`jointcxr.sharding` maps them to mesh axes. Without a rules context the
annotations are inert: `nn.meta.unbox(params)` gives plain arrays.

`Conv` has two lowerings with one parameter layout (`kernel [kh, kw, cin,
cout]`): XLA's native convolution (`conv_impl="xla"`, right for TPU/GPU)
and im2col (`"im2col"`: shifted slices concatenated on channels and one
matmul; 1x1 convolutions are plain matmuls). On XLA:CPU the backward pass of
native convolutions is slow and im2col is several times faster
(ENVIRONMENT.md, bench/train_step.py), so configs pick it per backend:
`"cpu"` is im2col with `cpu_kernels.matmul`'s explicit 2-D backward, and
`"auto"` resolves to "cpu" on the CPU backend and "xla" elsewhere.
BatchNorm and the 3x3/s2 max-pool likewise take `impl="auto"`: the fused
`cpu_kernels` versions on CPU (same function, parameters and statistics),
Flax/XLA's own elsewhere.
"""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jointcxr.models import cpu_kernels

Dtype = Any
default_kernel_init = nn.initializers.lecun_normal()


def partitioned(init: Callable[..., jax.Array],
                names: Sequence[str | None]) -> Callable[..., Any]:
  """Wraps an initializer so its parameter carries logical axis names.

  Args:
    init: a Flax initializer.
    names: one logical axis name (or None) per parameter dimension.

  Returns:
    The boxed initializer (`nn.LogicallyPartitioned` values; unbox with
    `nn.meta.unbox`, or let `Module.param` unbox them inside modules).
  """
  return nn.with_logical_partitioning(init, tuple(names))


def dense(features: int, names: tuple[str | None, str | None], *,
          dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
          use_bias: bool = True, kernel_init=default_kernel_init,
          name: str | None = None) -> nn.Dense:
  """nn.Dense whose kernel and bias carry logical axis names.

  Args:
    features: output width.
    names: logical names of the kernel's (input, output) axes; the bias
      takes the output name.
    dtype: compute dtype.
    param_dtype: parameter dtype (float32 throughout the project).
    use_bias: whether to add a bias.
    kernel_init: kernel initializer (before partitioning).
    name: module name.

  Returns:
    The unbound `nn.Dense`.
  """
  bias_names = (names[1],)
  return nn.Dense(
      features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
      kernel_init=partitioned(kernel_init, names),
      bias_init=partitioned(nn.initializers.zeros, bias_names), name=name)


def norm_layer(kind: str, *, train: bool, dtype: Dtype, param_dtype: Dtype,
               name: str | None = None, groups: int = 32,
               scale_init=nn.initializers.ones,
               impl: str = "auto") -> nn.Module:
  """BatchNorm (PyTorch-equivalent momentum/eps) or GroupNorm.

  PyTorch's BatchNorm momentum 0.1 is Flax's 0.9 (Flax weighs the old
  running value). Statistics live in the `batch_stats` collection.

  Args:
    kind: "batch" or "group".
    train: batch statistics (True) or running averages (False).
    dtype: compute dtype.
    param_dtype: parameter dtype.
    name: module name.
    groups: GroupNorm groups (torchvision-style GN uses 32).
    scale_init: initializer of the scale (zeros for zero-init residuals).
    impl: BatchNorm lowering, "flax", "fused" (`cpu_kernels.BatchNorm`)
      or "auto" (fused on CPU); the same function either way.

  Returns:
    The unbound norm module.

  Raises:
    ValueError: on an unknown `kind`.
  """
  kw = dict(dtype=dtype, param_dtype=param_dtype, name=name,
            scale_init=partitioned(scale_init, ("norm",)),
            bias_init=partitioned(nn.initializers.zeros, ("norm",)))
  if kind == "batch" and cpu_kernels.resolve_norm(impl) == "fused":
    return cpu_kernels.BatchNorm(use_running_average=not train, momentum=0.9,
                                 epsilon=1e-5, **kw)
  if kind == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                        epsilon=1e-5, **kw)
  if kind == "group":
    return nn.GroupNorm(num_groups=groups, epsilon=1e-5, **kw)
  raise ValueError(f"unknown norm {kind!r}; expected 'batch' or 'group'")


class Conv(nn.Module):
  """2-D convolution with symmetric explicit padding (PyTorch semantics).

  Attributes:
    features: output channels.
    kernel_size: square kernel size k (kernel `[k, k, cin, features]`).
    stride: spatial stride.
    padding: zero padding on each side; None means `kernel_size // 2`.
    use_bias: add a bias `[features]`.
    conv_impl: "xla" (native convolution), "im2col" (matmul lowering),
      "cpu" (im2col with `cpu_kernels`' 2-D matmul backward) or "auto"
      ("cpu" on the CPU backend, else "xla"); all give the same function
      of the same parameters.
    dtype: compute dtype; parameters are cast to it.
    param_dtype: parameter dtype.
    kernel_init: torchvision's kaiming_normal(fan_out, relu) by default.
  """
  features: int
  kernel_size: int = 3
  stride: int = 1
  padding: int | None = None  # default kernel_size // 2
  use_bias: bool = False
  conv_impl: str = "xla"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = nn.initializers.variance_scaling(2.0, "fan_out",
                                                      "normal")

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, cin = self.kernel_size, x.shape[-1]
    pad = k // 2 if self.padding is None else self.padding
    kernel = self.param("kernel", partitioned(
        self.kernel_init, (None, None, "conv_in", "conv_out")),
                        (k, k, cin, self.features), self.param_dtype)
    x = x.astype(self.dtype)
    kernel = jnp.asarray(kernel, self.dtype)
    h, w = x.shape[1], x.shape[2]
    impl = cpu_kernels.resolve(self.conv_impl)
    if impl == "cpu":
      y = cpu_kernels.conv2d(x, kernel, self.stride, pad)
    elif impl == "xla":
      y = jax.lax.conv_general_dilated(
          x, kernel, (self.stride, self.stride), [(pad, pad), (pad, pad)],
          dimension_numbers=("NHWC", "HWIO", "NHWC"))
    elif impl == "im2col":
      if k == 1 and pad == 0:
        y = x[:, ::self.stride, ::self.stride, :] @ kernel[0, 0]
      elif k == self.stride and pad == 0 and h % k == 0 and w % k == 0:
        # Non-overlapping patches (ViT's patch embedding): one reshape
        # instead of k*k slices.
        b = x.shape[0]
        y = x.reshape(b, h // k, k, w // k, k, cin).transpose(
            0, 1, 3, 2, 4, 5).reshape(b, h // k, w // k, k * k * cin)
        y = y @ kernel.reshape(-1, self.features)
      else:
        y = cpu_kernels.im2col(x, k, self.stride, pad) @ kernel.reshape(
            -1, self.features)
    else:
      raise ValueError(f"unknown conv_impl {self.conv_impl!r}; expected "
                       "'xla' or 'im2col'")
    if self.use_bias:
      bias = self.param("bias", partitioned(nn.initializers.zeros,
                                            ("conv_out",)),
                        (self.features,), self.param_dtype)
      y = y + jnp.asarray(bias, self.dtype)
    return y


def max_pool_3x3_s2(x: jax.Array, impl: str = "auto") -> jax.Array:
  """PyTorch MaxPool2d(3, stride=2, padding=1) on NHWC.

  Args:
    x: [B, H, W, C].
    impl: "xla" (`nn.max_pool`), "cpu" (`cpu_kernels.max_pool_3x3_s2`, a
      one-pass gradient routing) or "auto" ("cpu" on CPU).

  Returns:
    [B, ceil(H/2), ceil(W/2), C].
  """
  if cpu_kernels.resolve_pool(impl) == "cpu":
    return cpu_kernels.max_pool_3x3_s2(x)
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def adaptive_avg_pool(x: jax.Array, out_h: int, out_w: int) -> jax.Array:
  """PyTorch AdaptiveAvgPool2d on NHWC.

  Bin i covers rows floor(i*H/o) .. ceil((i+1)*H/o) - 1 (bins overlap when
  H is not a multiple of o, exactly as in PyTorch).

  Args:
    x: [B, H, W, C].
    out_h: output rows.
    out_w: output columns.

  Returns:
    [B, out_h, out_w, C].
  """
  h, w = x.shape[1], x.shape[2]
  rows = []
  for i in range(out_h):
    r0, r1 = (i * h) // out_h, -(-((i + 1) * h) // out_h)
    cols = []
    for j in range(out_w):
      c0, c1 = (j * w) // out_w, -(-((j + 1) * w) // out_w)
      cols.append(x[:, r0:r1, c0:c1, :].mean(axis=(1, 2)))
    rows.append(jnp.stack(cols, axis=1))
  return jnp.stack(rows, axis=1)


def masked_mean(x: jax.Array, mask: jax.Array, axis: int = 1) -> jax.Array:
  """Mean over `axis` of the entries where mask is True (0 if none).

  Args:
    x: [..., N, D] with N at `axis`.
    mask: boolean mask of x's shape without the last axis.
    axis: the axis to average.

  Returns:
    x averaged over `axis`.
  """
  m = mask.astype(x.dtype)[..., None]
  return (x * m).sum(axis) / jnp.maximum(m.sum(axis), 1.0)


def segment_pool(x: jax.Array, segment_ids: jax.Array, num_segments: int,
                 kind: str = "max") -> tuple[jax.Array, jax.Array]:
  """Pools tokens [B, T, D] into segments [B, S, D] by per-token segment ids.

  Tokens with id < 0 ([CLS], [SEP], padding) belong to no segment. Ids
  >= num_segments are ignored too: the input pipeline caps a report at
  `max_sentences` sentences (and counts what it truncates), so none should
  arrive here. Empty segments give zeros and a False mask. Memory is
  O(B*T*D) (segment ops), not O(B*T*S*D).

  Args:
    x: token features [B, T, D].
    segment_ids: [B, T] int, the segment (sentence) index of each token.
    num_segments: S, static.
    kind: "max" or "mean" over each segment's tokens.

  Returns:
    (pooled [B, S, D], segment mask [B, S]).

  Raises:
    ValueError: on an unknown `kind`.
  """
  b, t, d = x.shape
  valid = (segment_ids >= 0) & (segment_ids < num_segments)
  flat_ids = jnp.where(valid, segment_ids + num_segments *
                       jnp.arange(b)[:, None], b * num_segments)
  flat_ids = flat_ids.reshape(-1)
  xf = x.reshape(b * t, d)
  counts = jax.ops.segment_sum(valid.reshape(-1).astype(jnp.int32), flat_ids,
                               b * num_segments + 1)[:-1]
  if kind == "max":
    pooled = jax.ops.segment_max(xf, flat_ids, b * num_segments + 1)[:-1]
  elif kind == "mean":
    pooled = jax.ops.segment_sum(xf, flat_ids, b * num_segments + 1)[:-1]
    pooled = pooled / jnp.maximum(counts, 1)[:, None].astype(x.dtype)
  else:
    raise ValueError(f"unknown pooling {kind!r}; expected 'max' or 'mean'")
  present = counts > 0
  pooled = jnp.where(present[:, None], pooled, 0.0)
  return pooled.reshape(b, num_segments, d), present.reshape(b, num_segments)
