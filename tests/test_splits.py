"""Subject-level seeded splits and nested LoVT label fractions."""

import random

import numpy as np

from data_prep import splits

MAIN = ("train", "validation", "test")


def _items(n_subjects, per_subject=3):
  return [{"id": f"i{s}_{k}", "s": f"p{s:04d}"} for s in range(n_subjects)
          for k in range(per_subject)]


def _subject(it):
  return it["s"]


def test_whole_subjects_per_split_sizes_follow_fractions():
  items = _items(250)
  out = splits.split_by_subject(items, _subject, seed=1)
  subj = {n: {it["s"] for it in out[n]} for n in MAIN}
  assert not (subj["train"] & subj["validation"] or
              subj["train"] & subj["test"] or
              subj["validation"] & subj["test"])
  assert sorted(i["id"] for n in MAIN for i in out[n]) == sorted(
      i["id"] for i in items)
  for name, frac in splits.DEFAULT_FRACTIONS:
    assert abs(len(subj[name]) - frac * 250) <= 1
  assert splits.subjects_in_several_splits({n: out[n] for n in MAIN},
                                           _subject) == set()


def test_split_is_deterministic_order_independent_and_seeded():
  items = _items(60)
  a = splits.split_by_subject(items, _subject, seed=3)
  shuffled = list(items)
  random.Random(0).shuffle(shuffled)
  b = splits.split_by_subject(shuffled, _subject, seed=3)
  for name in MAIN:
    assert {i["id"] for i in a[name]} == {i["id"] for i in b[name]}
    # items keep their input order within a split
    assert [i["id"] for i in b[name]] == [i["id"] for i in shuffled
                                          if i in b[name]]
  c = splits.split_by_subject(items, _subject, seed=4)
  assert {i["s"] for i in a["test"]} != {i["s"] for i in c["test"]}


def test_label_fractions_are_first_n_of_a_seeded_order_and_nested():
  train = [f"t{i}" for i in range(437)]
  out = splits.label_fraction_splits(train, seed=5)
  assert len(out["train_1pct"]) == 4  # round(4.37)
  assert len(out["train_10pct"]) == 44  # round(43.7)
  assert set(out["train_1pct"]) <= set(out["train_10pct"]) <= set(train)
  # "first N" of one seeded permutation, reported in train order
  order = splits.seeded_rng(5, "fractions").permutation(len(train))
  assert out["train_10pct"] == [train[i] for i in sorted(order[:44])]
  assert out == splits.label_fraction_splits(train, seed=5)
  assert out != splits.label_fraction_splits(train, seed=6)
  tiny = splits.label_fraction_splits(["a", "b"], seed=0)
  assert len(tiny["train_1pct"]) == 1 and len(tiny["train_10pct"]) == 1
  assert splits.label_fraction_splits([], seed=0)["train_1pct"] == []


def test_split_by_subject_adds_fractions_of_its_train_split():
  out = splits.split_by_subject(_items(300, 1), _subject, seed=1)
  assert len(out["train"]) == 180
  assert len(out["train_1pct"]) == 2 and len(out["train_10pct"]) == 18
  assert {i["id"] for i in out["train_10pct"]} <= {i["id"] for i in
                                                   out["train"]}
  two = splits.split_by_subject(_items(40, 1), _subject, seed=1,
                                fractions=(("train", 0.8), ("dev", 0.2)),
                                label_fractions=())
  assert sorted(two) == ["dev", "train"] and len(two["dev"]) == 8


def test_subjects_in_several_splits_names_the_leaks():
  by_split = {"train": [{"s": "a"}, {"s": "b"}], "test": [{"s": "b"}],
              "validation": [{"s": "c"}, {"s": "a"}]}
  assert splits.subjects_in_several_splits(by_split, _subject) == {"a", "b"}


def test_seeded_rng_depends_on_seed_and_purpose_only():
  a = splits.seeded_rng(1, "x").integers(0, 1 << 30, 4)
  np.testing.assert_array_equal(a, splits.seeded_rng(1, "x").integers(
      0, 1 << 30, 4))
  assert not np.array_equal(a, splits.seeded_rng(1, "y").integers(
      0, 1 << 30, 4))
