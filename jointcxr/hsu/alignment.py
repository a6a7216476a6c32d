"""Linear alignment of two embedding spaces (Hsu et al. 2018's EA / Adv).

Hsu et al. map image features into the report-feature space with one
linear map W (METHODS.md §1.3; the formulation is a reconstruction from the
group's MUSE-based toolkit, Conneau et al. 2018, and is marked unverified
there). Everything here is a pure `jnp` function, jit-friendly (static
shapes, sizes as static arguments), and chunked where a pool is large.

Convention: row vectors. `x [n, d] @ W [d, d] ≈ y [n, d]`; W is (nearly)
orthogonal.

- `procrustes`: the supervised "EA" solution, closed form by SVD.
- `discriminator_loss` / `mapping_loss`: MUSE's adversarial game with label
  smoothing. D(z) = sigmoid(logit) is the probability that z is a *real
  target* vector (METHODS.md's notation; MUSE's code predicts "is source",
  which is the same game with the labels swapped).
- `orthogonalize`: MUSE's update W <- (1 + b) W - b (W W^T) W after each
  mapping step (b = 0.001). The formula reads the same in the row- and the
  column-vector convention.
- `csls` / `csls_topk` / `knn_mean_similarity`: cross-domain similarity
  local scaling, CSLS(x, y) = 2 cos(xW, y) - r_T(xW) - r_S(y), where r is
  the mean cosine to the k = 10 nearest neighbours in the other space.
- `build_dictionary`: CSLS nearest-neighbour pairs (mutual by default,
  MUSE's "S2T&T2S").
- `procrustes_refinement`: iterate dictionary -> Procrustes (MUSE: 5).
- `mean_csls_cosine`: MUSE's unsupervised model-selection criterion
  ("mean_cosine-csls_knn_10-S2T-10000").
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax

DICTIONARY_MODES = ("mutual", "s2t", "t2s", "union")


def _normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def procrustes(x: jax.Array, y: jax.Array,
               weights: jax.Array | None = None) -> jax.Array:
  """Orthogonal W minimising sum_i w_i ||x_i W - y_i||^2.

  With M = x^T diag(w) y = U S V^T, the minimiser is W = U V^T
  (Schönemann 1966). Rows with weight 0 are ignored, which keeps shapes
  static when a dictionary has invalid entries.

  Args:
    x: [n, d] source rows.
    y: [n, d] target rows, row i paired with x row i.
    weights: optional [n] non-negative row weights (default all 1).

  Returns:
    [d, d] orthogonal W (float32 or the inputs' dtype).
  """
  if x.shape != y.shape:
    raise ValueError(f"procrustes needs paired rows of equal shape, got "
                     f"{x.shape} and {y.shape}")
  if weights is not None:
    y = y * weights[:, None].astype(y.dtype)
  u, _, vt = jnp.linalg.svd(x.T @ y, full_matrices=False)
  return u @ vt


def orthogonalize(w: jax.Array, beta: float = 0.001) -> jax.Array:
  """One step of W <- (1 + beta) W - beta (W W^T) W (MUSE's map_beta).

  A fixed point is any orthogonal W; repeated steps pull W^T W towards I.

  Args:
    w: [d, d] mapping.
    beta: step size (MUSE 0.001).

  Returns:
    The updated mapping.
  """
  return (1.0 + beta) * w - beta * (w @ w.T) @ w


def _bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))


def discriminator_loss(logits_mapped: jax.Array, logits_target: jax.Array,
                       smoothing: float = 0.1) -> jax.Array:
  """Discriminator's BCE: mapped sources are fake, targets are real.

  L_D = -E_x log(1 - D(xW)) - E_y log D(y) with labels smoothed to
  (s, 1 - s) instead of (0, 1); averaged over the concatenated 2B logits
  as in MUSE (so it is half the sum of the two expectations).

  Args:
    logits_mapped: [B] discriminator logits of mapped source vectors xW.
    logits_target: [B'] logits of target vectors y.
    smoothing: MUSE's dis_smooth (0.1).

  Returns:
    Scalar loss.
  """
  logits = jnp.concatenate([logits_mapped, logits_target])
  labels = jnp.concatenate([jnp.full(logits_mapped.shape, smoothing),
                            jnp.full(logits_target.shape, 1.0 - smoothing)])
  return _bce(logits, labels)


def mapping_loss(logits_mapped: jax.Array, logits_target: jax.Array,
                 smoothing: float = 0.1) -> jax.Array:
  """The mapping's BCE: the discriminator's labels flipped.

  L_W = -E_x log D(xW) - E_y log(1 - D(y)) with the same smoothing; the
  target term carries no gradient to W but is kept so the value matches
  MUSE's logged loss.

  Args:
    logits_mapped: [B] discriminator logits of xW.
    logits_target: [B'] logits of y.
    smoothing: label smoothing.

  Returns:
    Scalar loss.
  """
  logits = jnp.concatenate([logits_mapped, logits_target])
  labels = jnp.concatenate([jnp.full(logits_mapped.shape, 1.0 - smoothing),
                            jnp.full(logits_target.shape, smoothing)])
  return _bce(logits, labels)


def _map_chunks(fn: Callable[[jax.Array], object], x: jax.Array,
                chunk_size: int):
  """`lax.map` of fn over row chunks of x (last chunk zero-padded)."""
  n = x.shape[0]
  c = max(1, min(chunk_size, n))
  nc = -(-n // c)
  xp = jnp.pad(x, ((0, nc * c - n),) + ((0, 0),) * (x.ndim - 1))
  out = jax.lax.map(fn, xp.reshape(nc, c, *x.shape[1:]))
  return jax.tree.map(lambda o: o.reshape(nc * c, *o.shape[2:])[:n], out)


@functools.partial(jax.jit, static_argnames=("k", "chunk_size"))
def knn_mean_similarity(a: jax.Array, b: jax.Array, k: int = 10,
                        chunk_size: int = 1024) -> jax.Array:
  """Mean cosine of each row of a to its k nearest rows of b.

  Args:
    a: [n_a, d] queries.
    b: [n_b, d] pool (k is clipped to n_b).
    k: neighbours.
    chunk_size: query rows per step; memory is O(chunk_size * n_b).

  Returns:
    [n_a] mean similarities (r_T or r_S of CSLS).
  """
  a, b = _normalize(a), _normalize(b)
  k = min(k, b.shape[0])
  return _map_chunks(lambda q: jax.lax.top_k(q @ b.T, k)[0].mean(-1), a,
                     chunk_size)


@functools.partial(jax.jit, static_argnames=("k", "chunk_size"))
def csls(xw: jax.Array, y: jax.Array, k: int = 10,
         chunk_size: int = 1024) -> jax.Array:
  """The full CSLS matrix 2 cos(xW_i, y_j) - r_T(xW_i) - r_S(y_j).

  The neighbourhood radii are computed chunk by chunk; the returned matrix
  itself is [n_x, n_y], so for 100k x 100k pools use `csls_topk` or
  `build_dictionary`, which never materialise it.

  Args:
    xw: [n_x, d] mapped sources.
    y: [n_y, d] targets.
    k: neighbourhood size (MUSE 10).
    chunk_size: rows per step of the radius computation.

  Returns:
    [n_x, n_y] CSLS scores.
  """
  r_t = knn_mean_similarity(xw, y, k, chunk_size)
  r_s = knn_mean_similarity(y, xw, k, chunk_size)
  return 2 * _normalize(xw) @ _normalize(y).T - r_t[:, None] - r_s[None, :]


@functools.partial(jax.jit, static_argnames=("k", "topk", "chunk_size"))
def csls_topk(xw: jax.Array, y: jax.Array, k: int = 10, topk: int = 1,
              chunk_size: int = 1024) -> tuple[jax.Array, jax.Array]:
  """Top-`topk` CSLS targets of every source, chunk by chunk.

  Args:
    xw: [n_x, d] mapped sources.
    y: [n_y, d] targets.
    k: CSLS neighbourhood size.
    topk: how many best targets to return.
    chunk_size: sources per step; memory is O(chunk_size * n_y).

  Returns:
    (scores [n_x, topk], indices [n_x, topk]) in decreasing score order.
  """
  r_t = knn_mean_similarity(xw, y, k, chunk_size)
  r_s = knn_mean_similarity(y, xw, k, chunk_size)
  yn = _normalize(y)
  xn = _normalize(xw)

  def one(rows):
    q, rt = rows[:, :-1], rows[:, -1]
    return jax.lax.top_k(2 * q @ yn.T - rt[:, None] - r_s[None, :], topk)

  return _map_chunks(one, jnp.concatenate([xn, r_t[:, None]], axis=1),
                     chunk_size)


@functools.partial(jax.jit, static_argnames=("k", "mode", "chunk_size"))
def build_dictionary(xw: jax.Array, y: jax.Array, k: int = 10,
                     mode: str = "mutual", chunk_size: int = 1024
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Synthetic dictionary of CSLS nearest neighbours (fixed-shape output).

  Candidates are every source's best target (S2T, first n_x rows) and
  every target's best source (T2S, last n_y rows); `valid` marks which of
  them belong to the dictionary:

  - "mutual" (MUSE's S2T&T2S): S2T pairs that are also T2S pairs;
  - "s2t" / "t2s": one direction only;
  - "union" (S2T|T2S): both, without counting a mutual pair twice.

  Args:
    xw: [n_x, d] mapped sources.
    y: [n_y, d] targets.
    k: CSLS neighbourhood size.
    mode: one of `DICTIONARY_MODES`.
    chunk_size: rows per step.

  Returns:
    (src [n_x + n_y] int32, tgt [n_x + n_y] int32, valid [n_x + n_y] bool).
  """
  if mode not in DICTIONARY_MODES:
    raise ValueError(f"unknown dictionary mode {mode!r}; expected one of "
                     f"{DICTIONARY_MODES}")
  s2t = csls_topk(xw, y, k, 1, chunk_size)[1][:, 0].astype(jnp.int32)
  t2s = csls_topk(y, xw, k, 1, chunk_size)[1][:, 0].astype(jnp.int32)
  n_x, n_y = xw.shape[0], y.shape[0]
  src = jnp.concatenate([jnp.arange(n_x, dtype=jnp.int32), t2s])
  tgt = jnp.concatenate([s2t, jnp.arange(n_y, dtype=jnp.int32)])
  mutual_s = t2s[s2t] == jnp.arange(n_x)
  mutual_t = s2t[t2s] == jnp.arange(n_y)
  ones_x, ones_y = jnp.ones((n_x,), bool), jnp.ones((n_y,), bool)
  valid = {
      "mutual": (mutual_s, ~ones_y),
      "s2t": (ones_x, ~ones_y),
      "t2s": (~ones_x, ones_y),
      "union": (ones_x, ~mutual_t),
  }[mode]
  return src, tgt, jnp.concatenate(valid)


@functools.partial(jax.jit, static_argnames=("n_iter", "k", "mode",
                                             "chunk_size"))
def procrustes_refinement(
    x: jax.Array, y: jax.Array, w: jax.Array, *, n_iter: int = 5,
    k: int = 10, mode: str = "mutual", pairs_x: jax.Array | None = None,
    pairs_y: jax.Array | None = None, pair_weight: float = 1.0,
    chunk_size: int = 1024) -> jax.Array:
  """MUSE refinement: n_iter times, CSLS dictionary -> Procrustes.

  Known pairs (EA+Adv) are added to every dictionary with weight
  `pair_weight`, so supervision and the synthetic dictionary are solved
  jointly.

  Args:
    x: [n_x, d] unpaired sources.
    y: [n_y, d] unpaired targets.
    w: [d, d] initial mapping (e.g. from the adversarial game).
    n_iter: refinement iterations (MUSE 5).
    k: CSLS neighbourhood size.
    mode: dictionary mode (see `build_dictionary`).
    pairs_x: optional [p, d] supervised sources.
    pairs_y: optional [p, d] their targets.
    pair_weight: weight of each supervised pair relative to a dictionary
      pair.
    chunk_size: rows per step of the CSLS search.

  Returns:
    The refined [d, d] orthogonal mapping.
  """

  def body(_, w):
    src, tgt, valid = build_dictionary(x @ w, y, k, mode, chunk_size)
    xs, ys, ws = x[src], y[tgt], valid.astype(x.dtype)
    if pairs_x is not None:
      xs = jnp.concatenate([xs, pairs_x])
      ys = jnp.concatenate([ys, pairs_y])
      ws = jnp.concatenate([ws, jnp.full((pairs_x.shape[0],), pair_weight,
                                         x.dtype)])
    return procrustes(xs, ys, ws)

  return jax.lax.fori_loop(0, n_iter, body, w)


@functools.partial(jax.jit, static_argnames=("k", "max_items",
                                             "chunk_size"))
def mean_csls_cosine(xw: jax.Array, y: jax.Array, k: int = 10,
                     max_items: int = 10000, chunk_size: int = 1024
                     ) -> jax.Array:
  """MUSE's unsupervised criterion: mean cosine of CSLS translations.

  For the first `max_items` sources, take the CSLS-best target and average
  cos(xW_i, y_best). Higher means a better-aligned mapping; MUSE keeps the
  epoch that maximises it.

  Args:
    xw: [n_x, d] mapped sources.
    y: [n_y, d] targets.
    k: CSLS neighbourhood size.
    max_items: sources scored.
    chunk_size: rows per step.

  Returns:
    Scalar criterion.
  """
  q = xw[:max_items]
  # r_T(xW_i) is constant along a query's row, so the CSLS argmax needs only
  # r_S(y_j), computed against all sources as in MUSE.
  r_s = knn_mean_similarity(y, xw, k, chunk_size)
  yn, qn = _normalize(y), _normalize(q)

  def one(rows):
    s = rows @ yn.T
    best = jnp.argmax(2 * s - r_s[None, :], axis=1)
    return jnp.take_along_axis(s, best[:, None], axis=1)[:, 0]

  return _map_chunks(one, qn, chunk_size).mean()
