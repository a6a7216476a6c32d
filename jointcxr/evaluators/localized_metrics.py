"""Metrics of the localized tasks: Dice, RSNA-style mAP, fROC, grounding.

All functions are NumPy, operate on whole evaluation sets, and follow the
definitions of LoVT's evaluation framework (METHODS.md §3.5) and of MS-CXR
phrase grounding (pointing game, CNR, IoU).
"""

from typing import Sequence

import numpy as np

RSNA_IOU_THRESHOLDS = tuple(np.round(np.arange(0.40, 0.751, 0.05), 2))
FROC_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def dice(pred: np.ndarray, target: np.ndarray, *,
         empty_score: float = 1.0) -> np.ndarray:
  """Per-example, per-class Dice of binary masks.

  Args:
    pred: [N, H, W, C] binary predictions (bool or {0,1}).
    target: [N, H, W, C] binary targets.
    empty_score: Dice when both prediction and target are empty.

  Returns:
    [N, C] Dice scores.
  """
  p = np.asarray(pred).astype(bool)
  t = np.asarray(target).astype(bool)
  inter = np.sum(p & t, axis=(1, 2)).astype(np.float64)
  total = np.sum(p, axis=(1, 2)) + np.sum(t, axis=(1, 2))
  return np.where(total > 0, 2 * inter / np.maximum(total, 1), empty_score)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU between [N,4] and [M,4] boxes given as (y0, x0, y1, x1)."""
  a = np.asarray(a, np.float64).reshape(-1, 4)
  b = np.asarray(b, np.float64).reshape(-1, 4)
  y0 = np.maximum(a[:, None, 0], b[None, :, 0])
  x0 = np.maximum(a[:, None, 1], b[None, :, 1])
  y1 = np.minimum(a[:, None, 2], b[None, :, 2])
  x1 = np.minimum(a[:, None, 3], b[None, :, 3])
  inter = np.clip(y1 - y0, 0, None) * np.clip(x1 - x0, 0, None)
  area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
  area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  union = area_a[:, None] + area_b[None, :] - inter
  return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _match(pred_boxes, scores, gt_boxes, thr):
  """Greedy matching by decreasing score: (tp flags in score order, #fp)."""
  order = np.argsort(-np.asarray(scores), kind="stable")
  ious = box_iou(np.asarray(pred_boxes)[order], gt_boxes) if len(
      gt_boxes) else np.zeros((len(order), 0))
  used = np.zeros(len(gt_boxes), bool)
  tp = np.zeros(len(order), bool)
  for i in range(len(order)):
    if ious.shape[1] == 0:
      break
    cand = np.where(~used & (ious[i] > thr))[0]
    if cand.size:
      j = cand[np.argmax(ious[i, cand])]
      used[j] = True
      tp[i] = True
  return tp


def rsna_map(preds: Sequence[tuple[np.ndarray, np.ndarray]],
             gts: Sequence[np.ndarray],
             thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS) -> float:
  """Kaggle RSNA-pneumonia mean average precision.

  For each image and IoU threshold t the score is TP / (TP + FP + FN) after
  greedy matching by confidence (IoU > t); it is averaged over thresholds,
  then over images. Images with neither predictions nor ground truth are
  skipped (as in the challenge metric); images with predictions but no
  ground truth score 0.

  Args:
    preds: per image (boxes [K,4] as (y0,x0,y1,x1), scores [K]).
    gts: per image ground-truth boxes [M,4].
    thresholds: IoU thresholds (default 0.40 … 0.75 step 0.05).

  Returns:
    The mean over scored images.
  """
  per_image = []
  for (boxes, scores), gt in zip(preds, gts):
    boxes = np.asarray(boxes).reshape(-1, 4)
    gt = np.asarray(gt).reshape(-1, 4)
    if len(boxes) == 0 and len(gt) == 0:
      continue
    vals = []
    for t in thresholds:
      tp = int(_match(boxes, scores, gt, t).sum())
      fp = len(boxes) - tp
      fn = len(gt) - tp
      vals.append(tp / (tp + fp + fn))
    per_image.append(np.mean(vals))
  return float(np.mean(per_image)) if per_image else float("nan")


def froc(preds: Sequence[tuple[np.ndarray, np.ndarray]],
         gts: Sequence[np.ndarray], *,
         fp_rates: Sequence[float] = FROC_FP_RATES,
         hit: str = "center") -> float:
  """Object-CXR fROC: mean sensitivity at the given FPs per image.

  A prediction hits a ground-truth object when its centre lies inside the
  object's box (`hit="center"`, the challenge rule) or IoU > 0.5
  (`hit="iou"`). Each object is counted once.
  """
  n_images = len(gts)
  n_obj = sum(len(np.asarray(g).reshape(-1, 4)) for g in gts)
  if n_obj == 0:
    return float("nan")
  records = []  # (score, is_tp)
  for (boxes, scores), gt in zip(preds, gts):
    boxes = np.asarray(boxes).reshape(-1, 4)
    gt = np.asarray(gt).reshape(-1, 4)
    used = np.zeros(len(gt), bool)
    for i in np.argsort(-np.asarray(scores), kind="stable"):
      if hit == "center":
        cy = (boxes[i, 0] + boxes[i, 2]) / 2
        cx = (boxes[i, 1] + boxes[i, 3]) / 2
        inside = ((gt[:, 0] <= cy) & (cy <= gt[:, 2]) & (gt[:, 1] <= cx) &
                  (cx <= gt[:, 3]))
      else:
        inside = box_iou(boxes[i:i + 1], gt)[0] > 0.5
      cand = np.where(inside & ~used)[0]
      if cand.size:
        used[cand[0]] = True
      records.append((float(scores[i]), bool(cand.size)))
  records.sort(key=lambda r: -r[0])
  tps = np.cumsum([r[1] for r in records])
  fps = np.cumsum([not r[1] for r in records])
  sens = []
  for rate in fp_rates:
    allowed = rate * n_images
    ok = np.where(fps <= allowed)[0]
    sens.append(tps[ok[-1]] / n_obj if ok.size else 0.0)
  return float(np.mean(sens))


def boxes_to_mask(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
  """Rasterise normalised (y0,x0,y1,x1) boxes into one [H, W] bool mask."""
  m = np.zeros((height, width), bool)
  for y0, x0, y1, x1 in np.asarray(boxes).reshape(-1, 4):
    r0, r1 = int(np.floor(y0 * height)), int(np.ceil(y1 * height))
    c0, c1 = int(np.floor(x0 * width)), int(np.ceil(x1 * width))
    m[max(r0, 0):max(r1, 0), max(c0, 0):max(c1, 0)] = True
  return m


def pointing_game(heatmap: np.ndarray, target_mask: np.ndarray) -> float:
  """1.0 when the heatmap's maximum falls inside the target region."""
  idx = np.unravel_index(np.argmax(heatmap), heatmap.shape)
  return float(bool(np.asarray(target_mask)[idx]))


def _cell_hits(grid_shape: tuple[int, int], target_mask: np.ndarray
               ) -> np.ndarray:
  """[h, w] bool: which cells of an h x w region grid overlap the target."""
  h, w = grid_shape
  t = np.asarray(target_mask, bool)
  big_h, big_w = t.shape
  ys = np.linspace(0, big_h, h + 1).round().astype(int)
  xs = np.linspace(0, big_w, w + 1).round().astype(int)
  return np.array([[t[ys[r]:max(ys[r + 1], ys[r] + 1),
                      xs[c]:max(xs[c + 1], xs[c] + 1)].any()
                    for c in range(w)] for r in range(h)])


def grid_pointing_game(grid_map: np.ndarray, target_mask: np.ndarray
                       ) -> float:
  """Pointing game of a region-level map: 1.0 when its maximal region
  overlaps the target (ties: the fraction of tied maxima that do).

  A model's grounding map has one value per region, so the region is what
  it points at. Scoring a pixel instead is wrong both ways: upsampled
  bilinearly, a maximal edge region becomes a plateau whose argmax (its
  first pixel) is the image corner, and the cell centre misses boxes
  smaller than a cell (MS-CXR-like boxes at 64 px with 16-px regions) that
  the region covers. A constant map (no model) scores the fraction of
  regions touching the target, as random pointing does: see
  `grid_pointing_chance`.

  Args:
    grid_map: [h, w] region-level heatmap (higher = more relevant).
    target_mask: [H, W] bool target region of the image.
  """
  g = np.asarray(grid_map, np.float64)
  hits = _cell_hits(g.shape, target_mask)
  top = g >= g.max() - 1e-6 * max(1.0, abs(float(g.max())))
  return float(hits[top].mean())


def grid_pointing_chance(grid_shape: tuple[int, int],
                         target_mask: np.ndarray) -> float:
  """The pointing game of a uniformly random region (the chance level)."""
  return float(_cell_hits(grid_shape, target_mask).mean())


def cnr(heatmap: np.ndarray, target_mask: np.ndarray) -> float:
  """Contrast-to-noise ratio of a heatmap between inside and outside a box.

  CNR = |mean_in - mean_out| / sqrt(var_in + var_out) (BioViL's definition on
  the similarity map). Returns NaN when either region is empty.
  """
  h = np.asarray(heatmap, np.float64)
  m = np.asarray(target_mask, bool)
  if m.all() or not m.any():
    return float("nan")
  a, b = h[m], h[~m]
  denom = np.sqrt(a.var() + b.var())
  return float(abs(a.mean() - b.mean()) / denom) if denom > 0 else 0.0


def heatmap_iou(heatmap: np.ndarray, target_mask: np.ndarray,
                quantile: float | None = None) -> float:
  """IoU of a thresholded heatmap with the target region.

  The heatmap is min-max scaled; the threshold is the mean by default, or the
  given quantile.
  """
  h = np.asarray(heatmap, np.float64)
  h = (h - h.min()) / max(h.max() - h.min(), 1e-12)
  thr = h.mean() if quantile is None else np.quantile(h, quantile)
  p = h > thr
  t = np.asarray(target_mask, bool)
  union = np.sum(p | t)
  return float(np.sum(p & t) / union) if union else float("nan")


def mean_std_ci(values: Sequence[float]) -> dict:
  """Mean, population std (ddof=0, as the LoVT tables) and a 95% t-CI."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  v = np.asarray(values, np.float64)
  n = len(v)
  mean = float(v.mean())
  out = {"mean": mean, "std": float(v.std(ddof=0)), "n": n}
  if n > 1:
    half = stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / np.sqrt(n)
    out["ci95"] = (mean - float(half), mean + float(half))
  else:
    out["ci95"] = (mean, mean)
  return out
