"""CPU-fast lowerings of the convolutional towers' hot ops (XLA:CPU only).

On XLA:CPU the backward pass of native convolutions, of autodiffed
BatchNorm and of `reduce_window` max-pooling is several times slower than
the same arithmetic written as plain matrix products and elementwise loops
(ENVIRONMENT.md "closing the CPU convolution gap"; `python -m
bench.train_step --ablation` measures each lowering, README "Closing the
CPU gap" has the table). This module provides those lowerings; each computes exactly
the function (and the gradient) of the reference op, which
tests/test_cpu_kernels.py checks in float64:

* `matmul`: `x @ w` on `[..., K] x [K, N]` with a `custom_vjp` whose
  backward is two explicit 2-D products, dX = G W^T and dW = X^T G (XLA's
  own transpose of a dot over 4-D activations contracts three dimensions
  at once, which XLA:CPU runs slowly);
* `conv2d`: im2col (shifted strided slices concatenated on channels, in
  the kernel's (i, j, c) order) + `matmul`; 1x1 convolutions are a strided
  slice + `matmul`, non-overlapping k/k patches a reshape + `matmul`;
* `batch_norm_train`: batch statistics and normalisation with a
  `custom_vjp` implementing the closed-form BatchNorm backward (one
  reduction pass and one elementwise pass), and `BatchNorm`, a drop-in for
  `nn.BatchNorm` with the same parameters, statistics and update rule;
* `max_pool_3x3_s2`: PyTorch's MaxPool2d(3, 2, padding=1) with a
  `custom_vjp` that routes each output gradient to the first maximum of its
  window (XLA's `select_and_scatter` tie rule) in one pass.

`resolve(impl)` turns "auto" into "cpu" on the CPU backend and "xla"
elsewhere: on TPU/GPU the native ops are the right choice and stay the
default there.
"""

import contextlib
import functools
from typing import Any, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
IMPLS = ("xla", "im2col", "cpu", "auto")
NORM_IMPLS = ("flax", "fused", "auto")
POOL_IMPLS = ("xla", "cpu", "auto")

# What "auto" means for BatchNorm and max-pooling. `lowering(...)` changes it
# while a model is traced (bench/train_step.py uses it for its ablation);
# a concrete impl passed by the caller always wins.
_AUTO = {"norm": "auto", "pool": "auto"}


@contextlib.contextmanager
def lowering(norm: str = "auto", pool: str = "auto") -> Iterator[None]:
  """Temporarily fixes what `impl="auto"` means for BatchNorm / max-pool.

  Only affects models traced inside the block (jit traces at first call).

  Args:
    norm: "flax", "fused" or "auto" (by backend).
    pool: "xla", "cpu" or "auto" (by backend).

  Yields:
    Nothing.
  """
  if norm not in NORM_IMPLS or pool not in POOL_IMPLS:
    raise ValueError(f"lowering(norm={norm!r}, pool={pool!r}): expected "
                     f"norm in {NORM_IMPLS}, pool in {POOL_IMPLS}")
  old = dict(_AUTO)
  _AUTO.update(norm=norm, pool=pool)
  try:
    yield
  finally:
    _AUTO.update(old)


def _on_cpu(backend: str | None) -> bool:
  return (jax.default_backend() if backend is None else backend) == "cpu"


def resolve_norm(impl: str = "auto", backend: str | None = None) -> str:
  """BatchNorm lowering: "fused" or "flax" ("auto": fused on CPU).

  Raises:
    ValueError: on an unknown `impl`.
  """
  if impl not in NORM_IMPLS:
    raise ValueError(f"unknown norm impl {impl!r}; expected one of "
                     f"{NORM_IMPLS}")
  impl = _AUTO["norm"] if impl == "auto" else impl
  if impl == "auto":
    return "fused" if _on_cpu(backend) else "flax"
  return impl


def resolve_pool(impl: str = "auto", backend: str | None = None) -> str:
  """Max-pool lowering: "cpu" or "xla" ("auto": cpu on CPU).

  Raises:
    ValueError: on an unknown `impl`.
  """
  if impl not in POOL_IMPLS:
    raise ValueError(f"unknown pool impl {impl!r}; expected one of "
                     f"{POOL_IMPLS}")
  impl = _AUTO["pool"] if impl == "auto" else impl
  if impl == "auto":
    return "cpu" if _on_cpu(backend) else "xla"
  return impl


def resolve(impl: str, backend: str | None = None) -> str:
  """The concrete lowering of `impl` on `backend` (default: JAX's).

  Args:
    impl: "xla", "im2col", "cpu" or "auto".
    backend: a JAX backend name; None asks `jax.default_backend()`.

  Returns:
    `impl` itself, or for "auto": "cpu" on the CPU backend, else "xla".

  Raises:
    ValueError: on an unknown `impl`.
  """
  if impl not in IMPLS:
    raise ValueError(f"unknown conv_impl {impl!r}; expected one of {IMPLS}")
  if impl != "auto":
    return impl
  return "cpu" if _on_cpu(backend) else "xla"


# ---------------------------------------------------------------- matmul ---
@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """`x @ w` for x `[..., K]`, w `[K, N]`, differentiated as 2-D products.

  Args:
    x: activations `[..., K]`.
    w: weights `[K, N]`.

  Returns:
    `[..., N]`.
  """
  k, n = w.shape
  return (x.reshape(-1, k) @ w).reshape(*x.shape[:-1], n)


def _matmul_fwd(x, w):
  return matmul(x, w), (x, w)


def _matmul_bwd(res, g):
  x, w = res
  k, n = w.shape
  x2 = x.reshape(-1, k)
  g2 = g.reshape(-1, n)
  dx = (g2 @ w.T).reshape(x.shape)
  # X^T G with X^T materialised: a [K, M] x [M, N] product in the layout
  # XLA:CPU's GEMM prefers (measured faster than contracting dim 0 of both).
  dw = jnp.transpose(x2) @ g2
  return dx, dw.astype(w.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


# ------------------------------------------------------------------ conv ---
def im2col(x: jax.Array, k: int, stride: int, padding: int) -> jax.Array:
  """`[B, H, W, C]` -> `[B, Ho, Wo, k*k*C]` patches in (i, j, c) order.

  Args:
    x: input, NHWC.
    k: square kernel size.
    stride: spatial stride.
    padding: symmetric zero padding.

  Returns:
    The patches, matching a `[k, k, C, F]` kernel reshaped to `[k*k*C, F]`.
  """
  if padding:
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  h, w = x.shape[1], x.shape[2]
  ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
  cols = [x[:, i:i + stride * (ho - 1) + 1:stride,
            j:j + stride * (wo - 1) + 1:stride, :]
          for i in range(k) for j in range(k)]
  return jnp.concatenate(cols, axis=-1) if len(cols) > 1 else cols[0]


def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1,
           padding: int = 0) -> jax.Array:
  """2-D convolution (PyTorch semantics) as im2col + `matmul`.

  Args:
    x: `[B, H, W, C]`.
    kernel: `[k, k, C, F]` (HWIO).
    stride: spatial stride.
    padding: symmetric zero padding.

  Returns:
    `[B, Ho, Wo, F]`, equal to `lax.conv_general_dilated` with NHWC/HWIO.
  """
  k, cin, f = kernel.shape[0], kernel.shape[2], kernel.shape[3]
  if kernel.shape[1] != k or x.shape[-1] != cin:
    raise ValueError(f"conv2d wants a square [k, k, {x.shape[-1]}, F] "
                     f"kernel, got {kernel.shape}")
  h, w = x.shape[1], x.shape[2]
  if k == 1 and padding == 0:
    return matmul(x[:, ::stride, ::stride, :], kernel[0, 0])
  if k == stride and padding == 0 and h % k == 0 and w % k == 0:
    # Non-overlapping patches (ViT's patch embedding): one reshape.
    b = x.shape[0]
    p = x.reshape(b, h // k, k, w // k, k, cin).transpose(
        0, 1, 3, 2, 4, 5).reshape(b, h // k, w // k, k * k * cin)
    return matmul(p, kernel.reshape(-1, f))
  return matmul(im2col(x, k, stride, padding), kernel.reshape(-1, f))


# ------------------------------------------------------------- max pool ---
def _pool_windows(x: jax.Array) -> list[jax.Array]:
  """The 9 strided views of a 3x3/s2/pad-1 max-pool, padded with -inf."""
  h, w = x.shape[1], x.shape[2]
  ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
  neg = jnp.array(-jnp.inf, x.dtype)
  # Pad to 2*ho + 1 rows so every window's rows exist (PyTorch pads 1 and
  # lets the last window run past the edge, which -inf makes harmless).
  xp = jax.lax.pad(x, neg, ((0, 0, 0), (1, 2 * ho - h, 0),
                            (1, 2 * wo - w, 0), (0, 0, 0)))
  return [xp[:, i:i + 2 * ho - 1:2, j:j + 2 * wo - 1:2, :]
          for i in range(3) for j in range(3)]


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """PyTorch `MaxPool2d(3, stride=2, padding=1)` on NHWC.

  Args:
    x: `[B, H, W, C]`.

  Returns:
    `[B, ceil(H/2), ceil(W/2), C]`.
  """
  return _max_pool(x, (x.shape[1], x.shape[2]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool(x: jax.Array, hw: tuple[int, int]) -> jax.Array:
  del hw  # the static input size, used by the backward only
  views = _pool_windows(x)
  y = views[0]
  for v in views[1:]:
    y = jnp.maximum(y, v)
  return y


def _pool_fwd(x, hw):
  del hw
  views = _pool_windows(x)
  # Running max and the index of the first maximum of each window (row-major
  # window order: the element XLA's select_and_scatter picks on ties).
  y, idx = views[0], jnp.zeros(views[0].shape, jnp.int8)
  for k, v in enumerate(views[1:], start=1):
    better = v > y
    y = jnp.where(better, v, y)
    idx = jnp.where(better, jnp.int8(k), idx)
  return y, idx


def _pool_bwd(hw, idx, g):
  h, w = hw
  zero = jnp.array(0, g.dtype)
  total = None
  for k in range(9):
    i, j = divmod(k, 3)
    gk = jnp.where(idx == k, g, zero)
    # Window position (i, j) of output (r, s) is padded input row 2r + i,
    # column 2s + j: interior padding 1 places the strided rows.
    placed = jax.lax.pad(gk, zero, ((0, 0, 0), (i, 2 - i, 1), (j, 2 - j, 1),
                                    (0, 0, 0)))
    total = placed if total is None else total + placed
  # `placed` spans padded rows 0 .. 2*ho; the input sits at rows 1 .. h.
  return (total[:, 1:h + 1, 1:w + 1, :],)


_max_pool.defvjp(_pool_fwd, _pool_bwd)


# ------------------------------------------------------------ BatchNorm ---
def _bn_shape(x: jax.Array) -> tuple[tuple[int, ...], int]:
  axes = tuple(range(x.ndim - 1))
  n = 1
  for a in axes:
    n *= x.shape[a]
  return axes, n


@jax.custom_vjp
def _bn_core(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float
             ) -> tuple[jax.Array, jax.Array, jax.Array]:
  axes, _ = _bn_shape(x)
  mean = jnp.mean(x, axes)
  var = jnp.maximum(0.0, jnp.mean(x * x, axes) - mean * mean)
  inv = jax.lax.rsqrt(var + eps)
  return (x - mean) * (inv * scale) + bias, mean, var


def _bn_fwd(x, scale, bias, eps):
  y, mean, var = _bn_core(x, scale, bias, eps)
  inv = jax.lax.rsqrt(var + eps)
  return (y, mean, var), (x, mean, inv, scale)


def _bn_bwd(res, cts):
  # The statistics outputs are stop-gradient'ed by `batch_norm_train`, so
  # their cotangents are zero and only dy matters.
  x, mean, inv, scale = res
  g = cts[0]
  axes, n = _bn_shape(x)
  xhat = (x - mean) * inv
  dbias = jnp.sum(g, axes)
  dscale = jnp.sum(g * xhat, axes)
  dx = (scale * inv) * (g - (dbias + xhat * dscale) / n)
  return dx, dscale, dbias, None


_bn_core.defvjp(_bn_fwd, _bn_bwd)


def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array,
                     eps: float = 1e-5
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Train-mode BatchNorm over all axes but the last, closed-form backward.

  Same arithmetic as Flax's `nn.BatchNorm` (`use_fast_variance`: var =
  max(0, E[x^2] - E[x]^2), the biased batch variance).

  Args:
    x: `[..., C]` in the statistics dtype (float32 or float64).
    scale: `[C]`.
    bias: `[C]`.
    eps: added to the variance.

  Returns:
    (normalised `[..., C]`, batch mean `[C]`, batch variance `[C]`); the
    statistics carry no gradient (they only feed the running averages).
  """
  y, mean, var = _bn_core(x, scale, bias, eps)
  return y, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)


class BatchNorm(nn.Module):
  """`nn.BatchNorm` over all axes but the last, with the fused kernel.

  Same parameters (`scale`, `bias`), statistics (`batch_stats/mean`,
  `batch_stats/var`, float32), momentum rule (Flax's: new = momentum * old
  + (1 - momentum) * batch) and output dtype as `nn.BatchNorm`, so the two
  are interchangeable on one checkpoint. No mask / axis_name support (the
  convolutional towers need neither; GSPMD partitions the mean itself).

  Attributes:
    use_running_average: normalise with the running statistics.
    momentum: Flax momentum (0.9 = PyTorch's 0.1).
    epsilon: added to the variance.
    dtype: output (compute) dtype.
    param_dtype: parameter dtype.
    scale_init: scale initializer.
    bias_init: bias initializer.
  """
  use_running_average: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  scale_init: Any = nn.initializers.ones
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Normalises `x` `[..., C]`; see the class docstring."""
    c = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean",
                            lambda s: jnp.zeros(s, jnp.float32), (c,))
    ra_var = self.variable("batch_stats", "var",
                           lambda s: jnp.ones(s, jnp.float32), (c,))
    scale = self.param("scale", self.scale_init, (c,), self.param_dtype)
    bias = self.param("bias", self.bias_init, (c,), self.param_dtype)
    # Statistics in at least float32, as Flax computes them.
    stat_dtype = jnp.promote_types(self.dtype or x.dtype, jnp.float32)
    out_dtype = self.dtype or jnp.result_type(x, scale, bias)
    xs = x.astype(stat_dtype)
    scale = jnp.asarray(scale, stat_dtype)
    bias = jnp.asarray(bias, stat_dtype)
    if self.use_running_average:
      # Flax's order of operations (rsqrt in the statistics' float32).
      inv = jax.lax.rsqrt(ra_var.value + self.epsilon)
      y = (xs - ra_mean.value) * (inv * scale) + bias
      return y.astype(out_dtype)
    y, mean, var = batch_norm_train(xs, scale, bias, self.epsilon)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y.astype(out_dtype)
