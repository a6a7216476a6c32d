"""CPU lowerings == the reference ops in float64 (values and gradients)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jointcxr.models import common
from jointcxr.models import cpu_kernels
from jointcxr.models import resnet
from jointcxr.models import testing

TOL = 1e-10


def _rand(seed: int, shape: tuple[int, ...]) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=shape)


def _close(a, b, tol: float = TOL) -> None:
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    assert x.shape == y.shape
    scale = max(1.0, float(np.max(np.abs(y))))
    np.testing.assert_allclose(x, y, rtol=0, atol=tol * scale)


def _value_and_grads(fn, args, seed: int):
  """f(args) and the gradient of <f(args), random cotangent> per argument."""
  out = fn(*args)
  ct = jnp.asarray(_rand(seed, out.shape))
  grads = jax.grad(lambda *a: jnp.sum(fn(*a) * ct),
                   argnums=tuple(range(len(args))))(*args)
  return out, grads


def test_matmul_value_and_gradients_equal_jnp_matmul():
  with jax.enable_x64(True):
    x = jnp.asarray(_rand(0, (2, 5, 3, 6)))
    w = jnp.asarray(_rand(1, (6, 4)))
    got = _value_and_grads(cpu_kernels.matmul, (x, w), 2)
    want = _value_and_grads(jnp.matmul, (x, w), 2)
    _close(got, want)


@pytest.mark.parametrize("k,stride,pad,size", [
    (3, 1, 1, 9), (3, 2, 1, 9), (3, 2, 1, 8), (7, 2, 3, 11), (7, 4, 3, 13),
    (1, 1, 0, 6), (1, 2, 0, 7), (4, 4, 0, 8)])
def test_conv2d_equals_lax_conv_in_float64(k, stride, pad, size):
  with jax.enable_x64(True):
    x = jnp.asarray(_rand(k + size, (2, size, size, 3)))
    w = jnp.asarray(_rand(stride, (k, k, 3, 5)))
    ref = lambda x_, w_: jax.lax.conv_general_dilated(
        x_, w_, (stride, stride), [(pad, pad), (pad, pad)],
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    fast = lambda x_, w_: cpu_kernels.conv2d(x_, w_, stride, pad)
    _close(_value_and_grads(fast, (x, w), 7), _value_and_grads(ref, (x, w), 7))


@pytest.mark.parametrize("size", [8, 9, 14])
def test_max_pool_equals_flax_with_ties(size):
  with jax.enable_x64(True):
    # ReLU'd, rounded values: many windows have tied maxima (zeros and
    # repeated values), where the gradient's routing must match XLA's.
    x = jnp.asarray(np.maximum(np.round(_rand(size, (2, size, size, 3))),
                               0.0))
    ref = lambda a: nn.max_pool(a, (3, 3), strides=(2, 2),
                                padding=((1, 1), (1, 1)))
    got = _value_and_grads(cpu_kernels.max_pool_3x3_s2, (x,), 3)
    want = _value_and_grads(ref, (x,), 3)
    assert got[0].shape == (2, (size + 1) // 2, (size + 1) // 2, 3)
    _close(got, want)  # routing errors would be O(1), not rounding


def test_batch_norm_equals_flax_batch_norm():
  with jax.enable_x64(True):
    x = jnp.asarray(_rand(0, (3, 5, 4, 6)) * 2.0 + 1.5)
    kw = dict(momentum=0.9, epsilon=1e-5, dtype=jnp.float64,
              param_dtype=jnp.float64)
    ref_mod = nn.BatchNorm(use_running_average=False, **kw)
    fast_mod = cpu_kernels.BatchNorm(use_running_average=False, **kw)
    variables = ref_mod.init(jax.random.key(0), x)
    params = {"scale": jnp.asarray(_rand(1, (6,))),
              "bias": jnp.asarray(_rand(2, (6,)))}
    stats = {"mean": jnp.asarray(_rand(3, (6,)), jnp.float32),
             "var": jnp.asarray(np.abs(_rand(4, (6,))) + 0.5, jnp.float32)}
    assert jax.tree.map(jnp.shape, fast_mod.init(jax.random.key(0), x)) == (
        jax.tree.map(jnp.shape, variables))

    def run(mod, x_, p):
      y, upd = mod.apply({"params": p, "batch_stats": stats}, x_,
                         mutable=["batch_stats"])
      return y, upd["batch_stats"]

    ct = jnp.asarray(_rand(5, x.shape))
    for mod in (ref_mod, fast_mod):
      y, new_stats = run(mod, x, params)
      grads = jax.grad(lambda x_, p: jnp.sum(run(mod, x_, p)[0] * ct),
                       argnums=(0, 1))(x, params)
      if mod is ref_mod:
        want = (y, new_stats, grads)
      else:
        _close((y, new_stats, grads), want)
    # Running-average mode uses the stored statistics.
    eval_kw = dict(kw, use_running_average=True)
    y_ref = nn.BatchNorm(**eval_kw).apply(
        {"params": params, "batch_stats": stats}, x)
    y_fast = cpu_kernels.BatchNorm(**eval_kw).apply(
        {"params": params, "batch_stats": stats}, x)
    _close(y_fast, y_ref)


def _resnet_loss_and_grads(conv_impl: str, norm: str, pool: str, x,
                           variables):
  model = resnet.ResNet(depth=50, width=4, stage_sizes=(1, 1, 1, 1),
                        conv_impl=conv_impl, dtype=jnp.float64,
                        param_dtype=jnp.float64)

  def loss(p):
    with cpu_kernels.lowering(norm=norm, pool=pool):
      out, upd = model.apply(
          {"params": p, "batch_stats": variables["batch_stats"]}, x,
          train=True, mutable=["batch_stats"])
    return jnp.sum(out["global"] ** 2) + jnp.sum(out["conv2"]), upd

  (value, upd), grads = jax.value_and_grad(loss, has_aux=True)(
      variables["params"])
  return value, upd, grads


def test_whole_resnet_cpu_lowering_equals_reference_in_float64():
  with jax.enable_x64(True):
    x = jnp.asarray(_rand(0, (2, 32, 32, 1)))
    model = resnet.ResNet(depth=50, width=4, stage_sizes=(1, 1, 1, 1),
                          dtype=jnp.float64, param_dtype=jnp.float64)
    variables = testing.fill_variables(jax.eval_shape(
        lambda: model.init(jax.random.key(0), x)))
    variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64),
                             nn.meta.unbox(variables))
    want = _resnet_loss_and_grads("xla", "flax", "xla", x, variables)
    got = _resnet_loss_and_grads("cpu", "fused", "cpu", x, variables)
    _close(got, want)


def test_resolve_picks_the_lowering_per_backend():
  assert cpu_kernels.resolve("auto", "cpu") == "cpu"
  assert cpu_kernels.resolve("auto", "tpu") == "xla"
  assert cpu_kernels.resolve("auto", "gpu") == "xla"
  assert cpu_kernels.resolve("im2col", "tpu") == "im2col"
  assert cpu_kernels.resolve_norm("auto", "gpu") == "flax"
  assert cpu_kernels.resolve_norm("auto", "cpu") == "fused"
  assert cpu_kernels.resolve_pool("auto", "tpu") == "xla"
  assert cpu_kernels.resolve_pool("auto", "cpu") == "cpu"
  with cpu_kernels.lowering(norm="flax", pool="xla"):
    assert cpu_kernels.resolve_norm("auto", "cpu") == "flax"
    assert cpu_kernels.resolve_pool("auto", "cpu") == "xla"
    assert cpu_kernels.resolve_norm("fused", "cpu") == "fused"
  assert cpu_kernels.resolve_norm("auto", "cpu") == "fused"
  with pytest.raises(ValueError, match="unknown conv_impl 'cuda'"):
    cpu_kernels.resolve("cuda")
  with pytest.raises(ValueError, match="unknown norm impl 'fast'"):
    common.norm_layer("batch", train=True, dtype=jnp.float32,
                      param_dtype=jnp.float32, impl="fast")
