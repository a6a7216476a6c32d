"""bench.validity's verdicts, bench.ceilings' raw-pixel features and
bench.localized_floors' content-free Dice floors, by value.

The full benchmarks take tens of minutes; what decides their tables (the
paired-seed statistics, which claim compares what, the PCA of the pixels)
is checked here on planted numbers against references.
"""

import math

import numpy as np
import pytest
from scipy import stats

from bench import ceilings
from bench import localized_floors
from bench import validity


def test_paired_claim_is_a_t_interval_on_seed_differences():
  c = validity.paired_claim([0.30, 0.34, 0.35], [0.20, 0.25, 0.24])
  d = np.array([0.10, 0.09, 0.11])
  half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
  assert c["mean_diff"] == pytest.approx(d.mean())
  assert c["ci95"] == pytest.approx([d.mean() - half, d.mean() + half])
  assert c["n"] == 3 and c["verdict"] == "holds"
  # Mean above 0 but the interval reaches below it.
  assert validity.paired_claim([0.5, 0.1, 0.6], [0.2, 0.3, 0.2])[
      "verdict"] == "direction only"
  assert validity.paired_claim([0.1, 0.2], [0.2, 0.3])[
      "verdict"] == "does not hold"
  # One seed has no interval: never "holds".
  assert validity.paired_claim([0.5], [0.2])["verdict"] == (
      "direction only (1 seed)")


def test_task_keys_match_eval_localized():
  assert validity.task_key("rsna/linear/frozen/100") == (
      "seg/rsna/linear-frozen-100")
  assert validity.task_key("rsna/detection/frozen/100") == (
      "det/rsna/detection-frozen-100")


def test_claims_compare_the_right_runs():
  tasks = ("rsna/linear/frozen/100", "rsna/detection/frozen/100")
  seg, det = (validity.task_key(t) for t in tasks)

  def run(auroc, dice, ap, r10=0.1, pg=0.2):
    return {"probe/auroc_mean": auroc, f"{seg}/dice_mean": dice,
            f"{det}/map_mean": ap, "retrieval/i2t/R@10": r10,
            "retrieval/t2i/R@10": r10,
            "grounding/ms_cxr/pointing_game": pg}

  results = {
      "LoVT": [run(0.70, 10.0, 2.0), run(0.71, 11.0, 2.5)],
      "ConVIRT": [run(0.72, 8.0, 1.0), run(0.73, 9.0, 1.5)],
      "JoImTeRNet": [run(0.6, 5, 1, r10=0.3, pg=0.5),
                     run(0.6, 5, 1, r10=0.35, pg=0.6)],
      "JoImTeRNet global-only": [run(0.6, 5, 1, r10=0.2, pg=0.1),
                                 run(0.6, 5, 1, r10=0.25, pg=0.1)],
      "random init": [run(0.65, 9.0, 1.2), run(0.66, 9.5, 1.2)],
  }
  c = validity.claims(results, tasks)
  lovt_vs_convirt = c["LoVT > ConVIRT (localized probes, mean over tasks)"]
  # Per seed, the mean over the two tasks: (10 + 2) / 2 vs (8 + 1) / 2 ...
  assert lovt_vs_convirt["a"] == [6.0, 6.75]
  assert lovt_vs_convirt["b"] == [4.5, 5.25]
  assert lovt_vs_convirt["verdict"] == "holds"
  assert c["JoImTeRNet: global+local >= global-only (R->I R@10)"][
      "mean_diff"] == pytest.approx(0.1)
  assert c["LoVT > random init (linear-probe AUROC)"]["verdict"] == "holds"
  assert c[f"ConVIRT > random init ({tasks[0]})"]["a"] == [8.0, 9.0]
  assert c[f"ConVIRT > random init ({tasks[0]})"][
      "verdict"] == "does not hold"
  assert not any(k.startswith("random init >") for k in c)


def test_pca_pixels_are_train_principal_components():
  rng = np.random.default_rng(0)
  # Low-rank images plus noise: 3 directions carry almost all variance.
  basis = rng.normal(size=(3, 16 * 16))
  make = lambda n: (rng.normal(size=(n, 3)) * [9.0, 4.0, 2.0] @ basis +
                    0.01 * rng.normal(size=(n, 256))).reshape(n, 16, 16, 1)
  train, test = make(200), make(50)
  # Pixels are 2 x 2 pooled first: a [32, 32] image -> 256 values.
  up = lambda a: a.repeat(2, 1).repeat(2, 2)
  tr, te = ceilings.pca_pixels(up(train), up(test), dim=5)
  assert tr.shape == (200, 5) and te.shape == (50, 5)
  np.testing.assert_allclose(tr.mean(0), 0.0, atol=1e-9)
  var = tr.var(0)
  assert np.all(np.diff(var) <= 0) and var[3] < 1e-3 * var[0]
  # Same as scikit-learn's PCA up to each component's sign.
  from sklearn import decomposition  # pylint: disable=g-import-not-at-top
  ref = decomposition.PCA(5).fit(train.reshape(200, -1))
  want = ref.transform(test.reshape(50, -1))
  np.testing.assert_allclose(np.abs(te[:, :3]), np.abs(want[:, :3]),
                             rtol=1e-6, atol=1e-6)


def _masks(n, rng, fixed):
  m = np.zeros((n, 16, 16, 2), np.uint8)
  for k in range(n):
    y, x = (4, 4) if fixed else rng.integers(0, 12, size=2)
    m[k, y:y + 4, x:x + 4, 0] = 1  # class 1 never present
  return m


def test_all_positive_dice_is_2p_over_n_plus_p():
  m = _masks(10, np.random.default_rng(0), fixed=False)
  p, n = m[..., 0].sum(), m[..., 0].size
  assert localized_floors.all_positive_dice(m) == pytest.approx(
      100 * 2 * p / (n + p))


def test_location_prior_finds_a_fixed_lesion_and_not_a_moving_one():
  rng = np.random.default_rng(0)
  fixed = [_masks(20, rng, True) for _ in range(3)]
  assert localized_floors.location_prior_dice(*fixed)["dice"] == (
      pytest.approx(100.0))
  moving = [_masks(200, rng, False) for _ in range(3)]
  d = localized_floors.location_prior_dice(*moving)["dice"]
  # Better than all-positive (it learns the lesion-free border), far from
  # what seeing the image would give.
  assert localized_floors.all_positive_dice(moving[2]) < d < 40.0
