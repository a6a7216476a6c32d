"""Cheap concrete variables for tests and smoke runs, built on the host.

On XLA:CPU, compiling a model's `init` costs far more than its forward pass:
every parameter shape gets its own threefry sampler (about 1 s of compile
each on the 2-core dev box, so ~20 s for a tiny two-tower model). Tests that
do not check the initial distribution can trace `init` abstractly and fill
the leaves with NumPy instead:

    abstract = jax.eval_shape(lambda: model.init(rngs, batch))
    variables = testing.fill_variables(abstract)

The result keeps the `nn.LogicallyPartitioned` boxes (so
`nn.get_partition_spec` still works) and has sensible magnitudes: kernels
and embeddings ~ N(0, 1/fan_in), scales and running variances 1, running
means 0, biases and other vectors ~ N(0, 0.1^2), scalars 0.5.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _leaf_name(path: tuple[Any, ...]) -> str:
  keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
  return str(keys[-1]) if keys else ""


def fill_variables(abstract: Any, seed: int = 0) -> Any:
  """Concrete arrays for an abstract variable tree (e.g. from eval_shape).

  Args:
    abstract: pytree of `jax.ShapeDtypeStruct` (boxes allowed).
    seed: NumPy seed; the same seed and tree give the same values.

  Returns:
    The same tree with `jax.Array` leaves of the abstract shapes and dtypes.
  """
  rng = np.random.default_rng(seed)

  def leaf(path, x):
    name = _leaf_name(path)
    if name in ("scale", "var") and x.ndim == 1:
      a = np.ones(x.shape)
    elif name == "mean":
      a = np.zeros(x.shape)
    elif x.ndim == 0:
      a = np.full(x.shape, 0.5)
    elif x.ndim == 1:
      a = 0.1 * rng.normal(size=x.shape)
    else:
      a = rng.normal(size=x.shape) / np.sqrt(np.prod(x.shape[:-1]))
    return jnp.asarray(a, x.dtype)

  return jax.tree_util.tree_map_with_path(leaf, abstract)
