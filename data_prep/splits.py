"""Seeded, subject-level splits and LoVT-style label fractions.

Where a dataset ships no official split, examples are split by subject so no
patient appears in two splits. The subjects are sorted, then permuted with a
generator seeded from sha256(seed, purpose), so the split is identical on
every machine and independent of input order; split sizes follow the given
fractions of *subjects* (60/20/20 by default, the proportions of LoVT's split
files). Label fractions (1% / 10% of the training split) are the first N
training examples of another seeded order, as in LoVT, with at least one
example; the 1% subset is therefore inside the 10% one.
"""

import hashlib
from typing import Callable, Mapping, Sequence, TypeVar

import numpy as np

T = TypeVar("T")
DEFAULT_FRACTIONS = (("train", 0.6), ("validation", 0.2), ("test", 0.2))
LABEL_FRACTIONS = (("train_1pct", 0.01), ("train_10pct", 0.10))


def seeded_rng(seed: int, purpose: str) -> np.random.Generator:
  """A numpy Generator that depends only on (seed, purpose)."""
  digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
  return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def split_by_subject(items: Sequence[T], subject_of: Callable[[T], str], *,
                     seed: int,
                     fractions: Sequence[tuple[str, float]] =
                     DEFAULT_FRACTIONS,
                     label_fractions: Sequence[tuple[str, float]] =
                     LABEL_FRACTIONS) -> dict[str, list[T]]:
  """Assigns whole subjects to splits.

  Args:
    items: the examples.
    subject_of: item -> subject id.
    seed: the split seed.
    fractions: (split name, weight) pairs; weights are normalised. The
      subject at permuted rank r goes to the split whose cumulative weight
      interval holds (r + 0.5) / n_subjects.
    label_fractions: (name, fraction) subsets of "train" to add.

  Returns:
    split name -> items (in input order), plus the label-fraction subsets of
    "train".
  """
  subjects = sorted({subject_of(it) for it in items})
  order = seeded_rng(seed, "subjects").permutation(len(subjects))
  names = [n for n, _ in fractions]
  cuts = np.cumsum([f for _, f in fractions], dtype=np.float64)
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
                          label_fractions: Sequence[tuple[str, float]] =
                          LABEL_FRACTIONS) -> dict[str, list[T]]:
  """The first N = max(1, round(f * len(train))) of a seeded order.

  Args:
    train: the training split.
    seed: the fraction seed.
    label_fractions: (name, fraction) pairs.

  Returns:
    name -> the chosen items, in their order within `train` (nested: a
    smaller fraction is a subset of a larger one).
  """
  order = seeded_rng(seed, "fractions").permutation(len(train))
  out = {}
  for name, frac in label_fractions:
    n = max(1, int(round(frac * len(train)))) if len(train) else 0
    out[name] = [train[i] for i in sorted(order[:n])]
  return out


def subjects_in_several_splits(by_split: Mapping[str, Sequence[T]],
                               subject_of: Callable[[T], str]) -> set[str]:
  """Subjects that occur in more than one of the given splits.

  Args:
    by_split: split name -> items (pass only the disjoint splits, not the
      label-fraction subsets of train).
    subject_of: item -> subject id.

  Returns:
    The offending subject ids (empty when the splits are subject-disjoint).
  """
  first: dict[str, str] = {}
  leaks = set()
  for split, items in by_split.items():
    for it in items:
      s = subject_of(it)
      if first.setdefault(s, split) != split:
        leaks.add(s)
  return leaks
