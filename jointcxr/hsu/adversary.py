"""Hsu et al.'s "Adv" regime: MUSE's adversarial game for the linear map W.

A discriminator D tells mapped sources xW from real targets y; W is trained
to fool it, and after every mapping update W is pulled back towards
orthogonality (`alignment.orthogonalize`). Defaults follow MUSE (Conneau et
al. 2018), the toolkit Hsu et al.'s group used (METHODS.md §1.3,
unverified for this paper):

- discriminator: input dropout 0.1, 2 hidden layers of 2048 units with
  LeakyReLU(0.2), no hidden dropout, one logit;
- SGD with lr 0.1 for both players, 5 discriminator steps per mapping step,
  batch 32, label smoothing 0.1, beta 0.001, W initialised to identity;
- the mapping's lr decays by 0.98 per epoch and is halved whenever the
  unsupervised criterion (`alignment.mean_csls_cosine`) drops, from the
  second drop on; the epoch with the best criterion is kept.

Batches are sampled uniformly from the unpaired pools (MUSE samples from the
75k most frequent words; reports and images have no frequency order). An
epoch is `epoch_steps` mapping steps run as one `lax.scan` under `jit`.
`restarts` > 1 re-runs the game and keeps the run with the best criterion
(an addition to MUSE, off by default): the first runs start from the given
`starts` (the identity by default; EA+Adv also passes the EA solution),
later ones from the first start again (`restart_init="same"`) or from a
random orthogonal matrix (`"random"`, Haar measure, either determinant). Random
starts matter here because W moves continuously and stays near-orthogonal,
so a run from the identity can never reach a map with determinant -1, and
the signs of PCA axes (hence the determinant of the right map) are
arbitrary.
"""

import dataclasses
import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax

from jointcxr.hsu import alignment


def default_config() -> mlc.ConfigDict:
  """MUSE's adversarial defaults (see the module docstring)."""
  return mlc.ConfigDict(dict(
      epochs=5, epoch_steps=1000, batch_size=32, dis_steps=5, map_lr=0.1,
      dis_lr=0.1, optimizer="sgd", lr_decay=0.98, lr_shrink=0.5,
      min_lr=1e-6, smoothing=0.1, beta=0.001, hidden=2048, layers=2,
      input_dropout=0.1, dropout=0.0, leaky_slope=0.2, csls_k=10,
      criterion_items=10000, restarts=1, restart_init="random",
      chunk_size=1024))


class Discriminator(nn.Module):
  """MUSE's discriminator MLP; returns one logit per row.

  Attributes:
    hidden: width of the hidden layers.
    layers: number of hidden layers.
    input_dropout: dropout on the input vectors (train only).
    dropout: dropout after each hidden layer (train only).
    leaky_slope: LeakyReLU negative slope.
  """
  hidden: int = 2048
  layers: int = 2
  input_dropout: float = 0.1
  dropout: float = 0.0
  leaky_slope: float = 0.2

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool = False) -> jax.Array:
    """Logits [B] that each row of z [B, d] is a real target vector."""
    h = nn.Dropout(self.input_dropout, deterministic=not train)(z)
    for i in range(self.layers):
      h = nn.Dense(self.hidden, name=f"hidden_{i}")(h)
      h = nn.leaky_relu(h, self.leaky_slope)
      if self.dropout:
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return nn.Dense(1, name="logit")(h)[:, 0]


@dataclasses.dataclass
class Result:
  """Outcome of `train_adversarial`.

  Attributes:
    w: [d, d] best mapping (by the unsupervised criterion).
    discriminator: the discriminator parameters of that run's end.
    criterion: best `mean_csls_cosine` value.
    history: one dict per epoch (losses, criterion, lr, restart).
  """
  w: np.ndarray
  discriminator: dict
  criterion: float
  history: list[dict]


def _optimizer(name: str) -> optax.GradientTransformation:
  if name == "sgd":
    return optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
  if name == "adam":
    return optax.inject_hyperparams(optax.adam)(learning_rate=0.0)
  raise ValueError(f"unknown adversarial optimizer {name!r}; expected "
                   "'sgd' or 'adam'")


def _set_lr(opt_state, lr: float):
  opt_state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
  return opt_state


# The settings the compiled epoch depends on (`make_epoch_fn`'s cache key).
_EPOCH_KEYS = ("optimizer", "batch_size", "smoothing", "dis_steps",
               "epoch_steps", "beta")


def make_epoch_fn(disc: Discriminator, cfg: mlc.ConfigDict) -> Callable:
  """A jitted function running `cfg.epoch_steps` mapping steps.

  The function is shared by every call with the same discriminator and
  settings: a fresh jit closure per game would recompile the epoch (a few
  CPU seconds) for every restart, regime and seed of a sweep.

  Args:
    disc: the discriminator module.
    cfg: adversarial config (see `default_config`).

  Returns:
    fn(state, x, y) -> (state, metrics), state = dict(w, d_params, d_opt,
    w_opt, rng); metrics are per-epoch means of the two losses.
  """
  fields = (disc.hidden, disc.layers, disc.input_dropout, disc.dropout,
            disc.leaky_slope)
  return _epoch_fn(fields, tuple(cfg[k] for k in _EPOCH_KEYS))


@functools.lru_cache(maxsize=16)
def _epoch_fn(disc_fields: tuple, settings: tuple) -> Callable:
  """`make_epoch_fn`'s jitted epoch for hashable settings."""
  disc = Discriminator(*disc_fields)
  cfg = mlc.ConfigDict(dict(zip(_EPOCH_KEYS, settings)))
  tx_d, tx_w = _optimizer(cfg.optimizer), _optimizer(cfg.optimizer)
  bs, s = cfg.batch_size, cfg.smoothing

  def epoch(state, x, y):

    def sample(rng):
      kx, ky = jax.random.split(rng)
      return (x[jax.random.randint(kx, (bs,), 0, x.shape[0])],
              y[jax.random.randint(ky, (bs,), 0, y.shape[0])])

    def dis_step(carry, rng):
      w, p, opt = carry
      k1, k2 = jax.random.split(rng)
      xb, yb = sample(k1)
      z = jnp.concatenate([jax.lax.stop_gradient(xb @ w), yb])

      def loss_fn(p):
        logits = disc.apply({"params": p}, z, train=True,
                            rngs={"dropout": k2})
        return alignment.discriminator_loss(logits[:bs], logits[bs:], s)

      loss, g = jax.value_and_grad(loss_fn)(p)
      upd, opt = tx_d.update(g, opt, p)
      return (w, optax.apply_updates(p, upd), opt), loss

    def map_step(state, rng):
      kd, km = jax.random.split(rng)
      (_, p, d_opt), d_loss = jax.lax.scan(
          dis_step, (state["w"], state["d_params"], state["d_opt"]),
          jax.random.split(kd, cfg.dis_steps))
      xb, yb = sample(km)

      def loss_fn(w):
        # MUSE runs the discriminator in eval mode for the mapping step.
        logits = disc.apply({"params": p}, jnp.concatenate([xb @ w, yb]))
        return alignment.mapping_loss(logits[:bs], logits[bs:], s)

      m_loss, g = jax.value_and_grad(loss_fn)(state["w"])
      upd, w_opt = tx_w.update(g, state["w_opt"], state["w"])
      w = alignment.orthogonalize(optax.apply_updates(state["w"], upd),
                                  cfg.beta)
      new = dict(state, w=w, d_params=p, d_opt=d_opt, w_opt=w_opt)
      return new, (d_loss.mean(), m_loss)

    rng, sub = jax.random.split(state["rng"])
    state = dict(state, rng=rng)
    state, (d_loss, m_loss) = jax.lax.scan(
        map_step, state, jax.random.split(sub, cfg.epoch_steps))
    return state, {"dis_loss": d_loss.mean(), "map_loss": m_loss.mean()}

  return jax.jit(epoch)


def init_state(disc: Discriminator, cfg: mlc.ConfigDict, w0: jax.Array,
               rng: jax.Array) -> dict:
  """Initial game state: W = w0, a fresh discriminator, both optimizers.

  Args:
    disc: the discriminator module.
    cfg: adversarial config.
    w0: [d, d] initial mapping (identity in MUSE).
    rng: PRNG key.

  Returns:
    The state dict consumed by `make_epoch_fn`'s function.
  """
  k_init, k_run = jax.random.split(rng)
  p = disc.init(k_init, jnp.zeros((2, w0.shape[1]), jnp.float32))["params"]
  tx_d, tx_w = _optimizer(cfg.optimizer), _optimizer(cfg.optimizer)
  return dict(w=jnp.asarray(w0, jnp.float32), d_params=p,
              d_opt=_set_lr(tx_d.init(p), cfg.dis_lr),
              w_opt=_set_lr(tx_w.init(w0), cfg.map_lr), rng=k_run)


def random_orthogonal(rng: jax.Array, d: int) -> np.ndarray:
  """A Haar-random [d, d] orthogonal matrix (QR of a Gaussian, sign-fixed).

  Args:
    rng: PRNG key.
    d: dimension.

  Returns:
    float32 orthogonal matrix; its determinant is +1 or -1 with equal odds.
  """
  g = np.asarray(jax.random.normal(rng, (d, d)), np.float64)
  q, r = np.linalg.qr(g)
  return (q * np.sign(np.diag(r))[None, :]).astype(np.float32)


def train_adversarial(x: np.ndarray, y: np.ndarray, cfg: mlc.ConfigDict,
                      rng: jax.Array,
                      starts: Sequence[np.ndarray] | None = None,
                      log_fn: Callable[[int, dict], None] | None = None
                      ) -> Result:
  """Runs the adversarial game (with restarts), keeping the best epoch.

  Args:
    x: [n_x, d] unpaired sources (rows L2-normalised by the caller).
    y: [n_y, d] unpaired targets.
    cfg: adversarial config (see `default_config`).
    rng: PRNG key.
    starts: initial mappings of the first runs (default: the identity, as
      in MUSE); max(cfg.restarts, len(starts)) runs are made, later ones
      start per `cfg.restart_init`.
    log_fn: optional callback(global_epoch, metrics) for logging.

  Returns:
    The `Result` of the best restart.
  """
  if len(x) == 0 or len(y) == 0:
    raise ValueError(f"adversarial alignment needs unpaired sources and "
                     f"targets, got {len(x)} and {len(y)}")
  d = x.shape[1]
  if y.shape[1] != d:
    raise ValueError(f"source and target dimensions differ: {d} vs "
                     f"{y.shape[1]}")
  disc = Discriminator(cfg.hidden, cfg.layers, cfg.input_dropout,
                       cfg.dropout, cfg.leaky_slope)
  epoch_fn = make_epoch_fn(disc, cfg)
  xj, yj = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  starts = [np.asarray(w, np.float32) for w in (
      starts or [np.eye(d, dtype=np.float32)])]
  items = min(cfg.criterion_items, len(x))
  criterion = lambda w: float(alignment.mean_csls_cosine(
      xj @ w, yj, min(cfg.csls_k, len(y)), items, cfg.chunk_size))
  best, history = None, []
  if cfg.restart_init not in ("random", "same"):
    raise ValueError(f"unknown restart_init {cfg.restart_init!r}; expected "
                     "'random' or 'same'")
  epochs = cfg.epochs
  for r in range(max(cfg.restarts, len(starts))):
    if r < len(starts):
      start = starts[r]
    elif cfg.restart_init == "random":
      start = random_orthogonal(jax.random.fold_in(rng, 10_000 + r), d)
    else:
      start = starts[0]
    state = init_state(disc, cfg, start, jax.random.fold_in(rng, r))
    lr = cfg.map_lr
    run_best, run_w, decreased = criterion(state["w"]), state["w"], False
    for e in range(cfg.epochs):
      state, m = epoch_fn(state, xj, yj)
      crit = criterion(state["w"])
      row = {"restart": r, "epoch": e, "criterion": crit, "map_lr": lr,
             **{k: float(v) for k, v in m.items()}}
      history.append(row)
      if log_fn is not None:
        log_fn(r * epochs + e + 1, row)
      if crit > run_best:
        run_best, run_w = crit, state["w"]
      elif cfg.optimizer == "sgd" and cfg.lr_shrink < 1:
        # MUSE shrinks only from the second time the criterion drops.
        if decreased:
          lr *= cfg.lr_shrink
        decreased = True
      if cfg.optimizer == "sgd":
        lr = max(cfg.min_lr, lr * cfg.lr_decay)
        state["w_opt"] = _set_lr(state["w_opt"], lr)
    if best is None or run_best > best.criterion:
      best = Result(np.asarray(run_w), jax.device_get(state["d_params"]),
                    run_best, [])
  best.history = history
  return best
