"""Localized metrics on small hand-computed cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm  # noqa: F401  (sanity: sklearn importable)

from jointcxr.evaluators import localized_metrics as lm


def test_dice_hand_computed():
  p = np.zeros((2, 4, 4, 1), bool)
  t = np.zeros((2, 4, 4, 1), bool)
  p[0, :2, :2] = True        # 4 px
  t[0, :2, :] = True         # 8 px, overlap 4 -> 2*4/12
  # Example 1: both empty -> empty_score.
  d = lm.dice(p, t)
  assert d[0, 0] == pytest.approx(8 / 12)
  assert d[1, 0] == 1.0
  assert lm.dice(p, t, empty_score=0.0)[1, 0] == 0.0


def test_box_iou():
  a = np.array([[0, 0, 2, 2]])
  b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]])
  np.testing.assert_allclose(lm.box_iou(a, b), [[1 / 7, 1.0, 0.0]])


def test_rsna_map_hand_computed():
  gt = np.array([[0, 0, 10, 10]])
  # Perfect box -> 1 at every threshold.
  assert lm.rsna_map([(gt, np.array([0.9]))], [gt]) == 1.0
  # Box with IoU 0.5 (0,0,10,5)... IoU = 50/100 = 0.5: hits t in {0.40, 0.45}
  half = np.array([[0, 0, 10, 5]])
  assert lm.rsna_map([(half, np.array([0.9]))], [gt]) == pytest.approx(2 / 8)
  # Extra low-score FP on the perfect case: TP/(TP+FP) = 1/2 at all t.
  two = np.array([[0, 0, 10, 10], [50, 50, 60, 60]])
  assert lm.rsna_map([(two, np.array([0.9, 0.1]))], [gt]) == 0.5
  # An image with predictions but no GT scores 0; empty/empty is skipped.
  preds = [(gt, np.array([0.9])), (gt, np.array([0.5])),
           (np.zeros((0, 4)), np.zeros(0))]
  gts = [gt, np.zeros((0, 4)), np.zeros((0, 4))]
  assert lm.rsna_map(preds, gts) == 0.5


def test_froc_hand_computed():
  gts = [np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10]])]
  preds = [(np.array([[2, 2, 4, 4], [50, 50, 60, 60]]), np.array([0.9, 0.8])),
           (np.array([[70, 70, 80, 80]]), np.array([0.95]))]
  # Sorted: 0.95 FP, 0.9 TP, 0.8 FP. 2 images.
  # fp budget 0.25 -> 0 FPs allowed -> tp before first FP = 0.
  # 0.5/1.0 -> 1 FP (record 1 index 1) -> 1 TP -> 0.5; >= 1 (2 FPs) -> 0.5.
  expected = np.mean([0, 0, 0.5, 0.5, 0.5, 0.5, 0.5])
  assert lm.froc(preds, gts) == pytest.approx(expected)


def test_grounding_metrics():
  h = np.zeros((8, 8))
  h[2, 3] = 5.0
  m = np.zeros((8, 8), bool)
  m[1:4, 2:5] = True
  assert lm.pointing_game(h, m) == 1.0
  assert lm.pointing_game(h, ~m) == 0.0
  assert lm.cnr(h, m) > 0
  assert np.isnan(lm.cnr(h, np.ones((8, 8), bool)))
  g = np.zeros((8, 8))
  g[m] = 1.0
  assert lm.heatmap_iou(g, m) == 1.0
  mask = lm.boxes_to_mask(np.array([[0.25, 0.25, 0.5, 0.75]]), 8, 8)
  assert mask.sum() == 2 * 4 and mask[2, 2] and not mask[4, 2]


def test_grounding_metric_values_hand_computed():
  h = np.zeros((4, 4))
  h[0, 0], h[0, 1] = 4.0, 2.0
  m = np.zeros((4, 4), bool)
  m[:2, :2] = True
  # Inside (4, 2, 0, 0): mean 1.5, var 2.75; outside all 0.
  assert lm.cnr(h, m) == pytest.approx(1.5 / np.sqrt(2.75))
  assert lm.cnr(np.ones((4, 4)), m) == 0.0       # no contrast, no noise
  # Min-max scaled (1, .5, 0 ...); above its mean 0.09375: 2 of 4 pixels.
  assert lm.heatmap_iou(h, m) == pytest.approx(0.5)
  # 0.95-quantile of 14 zeros, .5, 1 is .625: only the maximum is kept.
  assert lm.heatmap_iou(h, m, quantile=0.95) == pytest.approx(0.25)
  assert lm.heatmap_iou(h, np.zeros((4, 4), bool)) == 0.0
  # The argmax is looked up at (row 0, col 3), not transposed.
  g = np.zeros((4, 4))
  g[0, 3] = 1.0
  assert lm.pointing_game(g, m) == 0.0
  corner = np.zeros((4, 4), bool)
  corner[0, 3] = True
  assert lm.pointing_game(g, corner) == 1.0
  assert lm.pointing_game(g.T, corner) == 0.0


def test_mean_std_ci():
  out = lm.mean_std_ci([1.0, 2.0, 3.0, 4.0, 5.0])
  assert out["mean"] == 3.0
  assert out["std"] == pytest.approx(np.std([1, 2, 3, 4, 5]))
  lo, hi = out["ci95"]
  assert lo < 3.0 < hi and hi - lo == pytest.approx(
      2 * 2.7764451 * np.std([1, 2, 3, 4, 5], ddof=1) / np.sqrt(5), rel=1e-5)


def test_grid_pointing_game_scores_the_region_the_model_points_at():
  # A 2 x 2 map whose maximum is the top-left region: bilinear upsampling
  # makes a plateau reaching the image corner, so the pixel argmax lands at
  # (0, 0), outside a box inside that region of a 64-px image; the grid
  # version scores the region.
  grid = np.array([[1.0, 0.0], [0.0, 0.0]])
  target = np.zeros((64, 64), bool)
  target[10:22, 10:22] = True
  up = np.asarray(jax.image.resize(jnp.asarray(grid), (64, 64), "bilinear"))
  assert lm.pointing_game(up, target) == 0.0
  assert lm.grid_pointing_game(grid, target) == 1.0
  assert lm.grid_pointing_game(grid[::-1], target) == 0.0
  # A box smaller than a region, away from its centre, still counts: the
  # region covers it.
  small = np.zeros((64, 64), bool)
  small[2:5, 26:30] = True
  assert lm.grid_pointing_game(grid, small) == 1.0
  # A box on the border of two regions overlaps both.
  edge = np.zeros((64, 64), bool)
  edge[10:14, 30:34] = True
  assert lm.grid_pointing_game(np.array([[0.0, 1.0], [0.0, 0.0]]),
                               edge) == 1.0
  # Non-square image and grid: cell (2, 2) of a 4 x 3 grid spans rows
  # 32-48 and columns 67-100 of a [64, 100] image.
  g = np.zeros((4, 3))
  g[2, 2] = 1.0
  t = np.zeros((64, 100), bool)
  t[40, 83] = True
  assert lm.grid_pointing_game(g, t) == 1.0
  t2 = np.zeros((64, 100), bool)
  t2[40, 60] = True
  assert lm.grid_pointing_game(g, t2) == 0.0


def test_grid_pointing_ties_and_chance_are_those_of_random_pointing():
  target = np.zeros((64, 64), bool)
  target[0:20, 0:20] = True  # overlaps 4 of 16 regions (rows/cols 0-1)
  flat = np.zeros((4, 4))
  # A constant map points nowhere in particular: the expected hit of a
  # random tie-break, not the first cell's.
  assert lm.grid_pointing_game(flat, target) == pytest.approx(4 / 16)
  assert lm.grid_pointing_chance((4, 4), target) == pytest.approx(4 / 16)
  two = np.zeros((4, 4))
  two[0, 0] = two[3, 3] = 1.0
  assert lm.grid_pointing_game(two, target) == pytest.approx(0.5)
  # Monte Carlo over random maps agrees with the chance level.
  rng = np.random.default_rng(0)
  hits = [lm.grid_pointing_game(rng.random((4, 4)), target)
          for _ in range(4000)]
  assert np.mean(hits) == pytest.approx(0.25, abs=0.02)
