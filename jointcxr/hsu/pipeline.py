"""Hsu et al.'s alignment pipeline on feature arrays (no I/O).

Steps (METHODS.md §1.3 reconstruction; every choice configurable):

1. Preprocess each modality with statistics of the training split only:
   mean-centre, PCA to a common d (`align.dim`, clipped to what the data
   supports; the clipped value is reported as `meta/dim`), L2-normalise.
   PCA signs are fixed so each component's projections are positively
   skewed (the largest loading decides for symmetric axes).
2. Paired subset: round(fraction * N_train) training pairs (at least one
   when fraction > 0) sampled with the seed; the rest are the unpaired pool,
   images and reports shuffled independently so no pairing survives.
3. Regimes (source = image by default: W maps image features into the
   report space):
   - `ea`: W = Procrustes on the paired subset (needs fraction > 0).
   - `adv`: the adversarial game on *all* training images and reports as
     unpaired sets (pairs are never used, so the fraction does not matter),
     then Procrustes refinement on CSLS mutual nearest neighbours.
   - `ea_adv`: the adversarial game on the unpaired pool (`unpaired_pool`:
     "rest" = the studies outside the paired subset, "all" = every study),
     then refinement where every dictionary also holds the known pairs
     (weight `pair_weight`). `semi_mode` picks the game's start:
     "best_start" (default) plays from the EA solution and from the
     identity and keeps the run with the better unsupervised criterion;
     "ea_init" only from EA; "dictionary" only from the identity, so the
     pairs act through the refinement dictionaries alone. (On synthetic
     data neither single start wins everywhere: EA from a handful of pairs
     in d dimensions is rank-deficient, while a poor adversarial start
     outweighs the few pairs in the dictionary.) With nothing unpaired
     (fraction 1 and pool "rest") it reduces to EA, reported as
     `adv/skipped`.
4. Evaluate on the evaluation split with `jointcxr.evaluators.retrieval`:
   mean cosine of true pairs, R@K / MRR both ways over the full pool, and
   text->image nDCG@1/@100 and label precision@10 with graded relevance =
   number of shared positive CheXpert labels (gain 2^rel - 1). The same
   metrics under a random orthogonal map are reported as `random_map/...`.
"""

import dataclasses
import types
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from jointcxr.hsu import alignment
from jointcxr.evaluators import retrieval
from jointcxr.hsu import adversary

REGIMES = ("ea", "adv", "ea_adv")
SEMI_MODES = ("best_start", "ea_init", "dictionary")


@dataclasses.dataclass
class Preprocessor:
  """Centre -> PCA -> L2-normalise, fitted on training features.

  Attributes:
    mean: [D] training mean.
    components: [D, d] principal axes.
  """
  mean: np.ndarray
  components: np.ndarray

  def __call__(self, x: np.ndarray) -> np.ndarray:
    z = (np.asarray(x, np.float64) - self.mean) @ self.components
    n = np.linalg.norm(z, axis=1, keepdims=True)
    return (z / np.maximum(n, 1e-12)).astype(np.float32)


def fit_preprocessor(x: np.ndarray, dim: int) -> Preprocessor:
  """PCA by eigen-decomposition of the D x D covariance (float64).

  Args:
    x: [N, D] training features.
    dim: components kept (<= D).

  Returns:
    The fitted preprocessor.
  """
  x = np.asarray(x, np.float64)
  mean = x.mean(0)
  xc = x - mean
  vals, vecs = np.linalg.eigh(xc.T @ xc)
  comp = vecs[:, np.argsort(vals)[::-1][:dim]]
  # PCA signs are arbitrary. Orient each axis so the projections have
  # positive skewness (Bro et al. 2008): unlike a loading-based rule this
  # survives an orthogonal map between the modalities, so when image and
  # report spaces are related by one, the identity start of the adversarial
  # game is already close. Symmetric axes fall back to the largest loading.
  proj = xc @ comp
  skew = np.mean(proj ** 3, axis=0) / np.maximum(np.mean(
      proj ** 2, axis=0), 1e-30) ** 1.5
  loading = np.sign(comp[np.argmax(np.abs(comp), axis=0), np.arange(dim)])
  sign = np.where(np.abs(skew) > 1e-6, np.sign(skew), loading)
  return Preprocessor(mean, comp * np.where(sign == 0, 1.0, sign))


def common_dim(requested: int, *arrays: np.ndarray) -> int:
  """The PCA dimension the data supports: <= every width and N - 1."""
  n = min(len(a) for a in arrays)
  return max(1, min([requested, n - 1] + [a.shape[1] for a in arrays]))


def sample_pairs(n: int, fraction: float, seed: int
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Seeded paired subset and the rest (both sorted).

  Args:
    n: training pairs.
    fraction: share used as pairs, in [0, 1].
    seed: sampling seed.

  Returns:
    (paired indices, unpaired indices).
  """
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"supervision fraction {fraction} is not in [0, 1]")
  k = 0 if fraction == 0 else min(n, max(1, int(round(fraction * n))))
  perm = np.random.default_rng(seed).permutation(n)
  return np.sort(perm[:k]), np.sort(perm[k:])


def _adv_config(cfg: mlc.ConfigDict) -> mlc.ConfigDict:
  a = mlc.ConfigDict(cfg.adv.to_dict())
  a.batch_size = cfg.batch_size
  a.epoch_steps = cfg.log_every_steps
  a.epochs = max(1, -(-cfg.total_steps // cfg.log_every_steps))
  return a


def align(x: np.ndarray, y: np.ndarray, cfg: mlc.ConfigDict, *,
          regime: str, fraction: float, seed: int,
          log_fn: Callable[[int, dict], None] | None = None
          ) -> tuple[np.ndarray, dict, dict | None]:
  """Learns W (x W ~ y) on preprocessed training features.

  Args:
    x: [N, d] sources, row i paired with y row i (the pairing is used only
      for the sampled paired subset).
    y: [N, d] targets.
    cfg: the Hsu config (`align`, `adv`, `total_steps`, `batch_size`,
      `log_every_steps`).
    regime: "ea", "adv" or "ea_adv".
    fraction: supervision fraction.
    seed: seed of the pair sample, the shuffles and the game.
    log_fn: adversarial progress callback(epoch, metrics).

  Returns:
    (W [d, d], info dict of floats, discriminator params or None).
  """
  if regime not in REGIMES:
    raise ValueError(f"unknown regime {regime!r}; expected one of {REGIMES}")
  a = cfg.align
  paired, rest = sample_pairs(len(x), fraction, seed)
  info = {"meta/n_pairs": float(len(paired)), "adv/skipped": 0.0}
  w_ea = None
  if len(paired):
    w_ea = np.asarray(alignment.procrustes(jnp.asarray(x[paired]),
                                           jnp.asarray(y[paired])))
  if regime == "ea":
    if w_ea is None:
      raise ValueError("regime ea needs supervision: fraction must be > 0")
    info["meta/n_unpaired"] = 0.0
    return w_ea, info, None
  if a.unpaired_pool not in ("rest", "all"):
    raise ValueError(f"unknown unpaired_pool {a.unpaired_pool!r}; expected "
                     "'rest' or 'all'")
  pool = np.arange(len(x)) if (regime == "adv" or a.unpaired_pool == "all"
                               ) else rest
  info["meta/n_unpaired"] = float(len(pool))
  if len(pool) == 0:
    info["adv/skipped"] = 1.0
    return w_ea, info, None
  rng = np.random.default_rng(seed + 1)
  xu = x[pool[rng.permutation(len(pool))]]
  yu = y[pool[rng.permutation(len(pool))]]  # independent shuffle
  if a.semi_mode not in SEMI_MODES:
    raise ValueError(f"unknown semi_mode {a.semi_mode!r}; expected one of "
                     f"{SEMI_MODES}")
  eye = np.eye(x.shape[1], dtype=np.float32)
  starts = [eye]
  if regime == "ea_adv" and w_ea is not None:
    starts = {"dictionary": [eye], "ea_init": [w_ea],
              "best_start": [w_ea, eye]}[a.semi_mode]
  res = adversary.train_adversarial(xu, yu, _adv_config(cfg),
                                    jax.random.PRNGKey(seed), starts=starts,
                                    log_fn=log_fn)
  w = res.w
  info["adv/criterion"] = res.criterion
  info["adv/orthogonality_error"] = float(np.linalg.norm(
      w.T @ w - np.eye(len(w))))
  if a.refine_iters:
    px = py = None
    if regime == "ea_adv" and len(paired):
      px, py = jnp.asarray(x[paired]), jnp.asarray(y[paired])
    w = np.asarray(alignment.procrustes_refinement(
        jnp.asarray(xu), jnp.asarray(yu), jnp.asarray(w),
        n_iter=a.refine_iters, k=min(a.csls_k, len(yu)), mode=a.dictionary,
        pairs_x=px, pairs_y=py, pair_weight=a.pair_weight,
        chunk_size=a.chunk_size))
    info["refine/criterion"] = float(alignment.mean_csls_cosine(
        jnp.asarray(xu @ w), jnp.asarray(yu), min(a.csls_k, len(yu)),
        min(cfg.adv.criterion_items, len(xu)), a.chunk_size))
  return w, info, res.discriminator


def evaluate(img: np.ndarray, txt: np.ndarray, labels: np.ndarray,
             pool_size: int = 0, chunk_size: int = 1024) -> dict:
  """Retrieval metrics of aligned embeddings (row i of each is a pair).

  Args:
    img: [N, d] image embeddings in the shared space.
    txt: [N, d] report embeddings.
    labels: [N, 14] labels (1 / 0 / -1 / NaN); relevance uses positives.
    pool_size: also report metrics over disjoint pools of this size (0:
      full pool only, as in Hsu et al.).
    chunk_size: query rows per similarity block.

  Returns:
    Flat dict (`retrieval/t2i/MRR`, `retrieval/t2i/nDCG@100`, ...).
  """
  present = ~np.isnan(labels)
  emb = types.SimpleNamespace(img=img, txt=txt, labels_present=present,
                              labels=np.where(present, labels, 0.0))
  return retrieval.metrics(emb, pool_size=pool_size or None,
                           chunk_size=chunk_size)


def run(train_img: np.ndarray, train_txt: np.ndarray, eval_img: np.ndarray,
        eval_txt: np.ndarray, eval_labels: np.ndarray, cfg: mlc.ConfigDict,
        *, regime: str, fraction: float, seed: int,
        log_fn: Callable[[int, dict], None] | None = None
        ) -> tuple[dict, dict]:
  """Preprocess, align, evaluate. Returns (metrics, artefacts).

  Artefacts hold `w`, the two preprocessors' arrays and the discriminator
  (for the checkpoint).
  """
  a = cfg.align
  if a.source not in ("image", "text"):
    raise ValueError(f"align.source must be 'image' or 'text', got "
                     f"{a.source!r}")
  d = common_dim(a.dim, train_img, train_txt)
  p_img = fit_preprocessor(train_img, d)
  p_txt = fit_preprocessor(train_txt, d)
  tr_i, tr_t = p_img(train_img), p_txt(train_txt)
  ev_i, ev_t = p_img(eval_img), p_txt(eval_txt)
  src_tr, tgt_tr = (tr_i, tr_t) if a.source == "image" else (tr_t, tr_i)
  w, info, disc = align(src_tr, tgt_tr, cfg, regime=regime,
                        fraction=fraction, seed=seed, log_fn=log_fn)
  w_rand = adversary.random_orthogonal(jax.random.PRNGKey(seed + 7), d)
  out = {}
  for prefix, m in (("", w), ("random_map/", w_rand)):
    img, txt = (ev_i @ m, ev_t) if a.source == "image" else (ev_i,
                                                             ev_t @ m)
    out.update({f"{prefix}{k}": v for k, v in evaluate(
        img, txt, eval_labels, cfg.eval.pool_size,
        cfg.eval.chunk_size).items()})
  out.update(info)
  out.update({"meta/dim": float(d), "meta/n_train": float(len(train_img)),
              "meta/n_eval": float(len(eval_img)),
              "meta/fraction": float(fraction)})
  art = {"w": w, "img_mean": p_img.mean, "img_components": p_img.components,
         "txt_mean": p_txt.mean, "txt_components": p_txt.components}
  if disc is not None:
    art["discriminator"] = disc
  return out, art
