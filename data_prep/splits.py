"""Seeded, subject-level splits and LoVT-style label fractions.

Where a dataset ships no official split, examples are split by subject so
no patient appears in two splits; the order is a seeded permutation of the
sorted subject ids, hence identical on every machine. Label fractions
(1% / 10% of the training split) are the first N training examples of a
seeded order, as in LoVT ("first N"), with at least one example.
"""

import hashlib
from typing import Callable, Sequence, TypeVar

import numpy as np

T = TypeVar("T")
DEFAULT_FRACTIONS = (("train", 0.6), ("validation", 0.2), ("test", 0.2))
LABEL_FRACTIONS = (("train_1pct", 0.01), ("train_10pct", 0.10))


def _rng(seed: int, salt: str) -> np.random.Generator:
  digest = hashlib.sha256(f"{seed}:{salt}".encode()).digest()
  return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def split_by_subject(items: Sequence[T], subject_of: Callable[[T], str], *,
                     seed: int, fractions=DEFAULT_FRACTIONS,
                     label_fractions=LABEL_FRACTIONS) -> dict[str, list[T]]:
  """Assigns whole subjects to splits (sizes follow `fractions`).

  Returns:
    split name -> items (in input order), plus the label-fraction subsets of
    "train" (nested: the 1% subset is inside the 10% one).
  """
  subjects = sorted({subject_of(it) for it in items})
  order = _rng(seed, "subjects").permutation(len(subjects))
  names = [n for n, _ in fractions]
  cuts = np.cumsum([f for _, f in fractions])
  cuts = cuts / cuts[-1]
  assign = {}
  for rank, idx in enumerate(order):
    pos = (rank + 0.5) / max(len(subjects), 1)
    assign[subjects[idx]] = names[int(np.searchsorted(cuts, pos))]
  out = {n: [it for it in items if assign[subject_of(it)] == n]
         for n in names}
  if "train" in out:
    out.update(label_fraction_splits(out["train"], seed=seed,
                                     label_fractions=label_fractions))
  return out


def label_fraction_splits(train: Sequence[T], *, seed: int,
                          label_fractions=LABEL_FRACTIONS
                          ) -> dict[str, list[T]]:
  """The first N of a seeded order of `train`, for each fraction."""
  order = _rng(seed, "fractions").permutation(len(train))
  out = {}
  for name, frac in label_fractions:
    n = max(1, int(round(frac * len(train)))) if len(train) else 0
    keep = sorted(order[:n])
    out[name] = [train[i] for i in keep]
  return out
