"""A YOLOv3-style detection probe on conv3 / conv4 / conv5 (LoVT's framework).

Three scales, three anchors each (k-means with an IoU distance on the
training boxes, smallest anchors on the finest scale). Each cell predicts,
per anchor, objectness, box offsets (sigmoid x/y within the cell, log w/h
relative to the anchor) and class scores. A ground-truth box is assigned to
its best-IoU anchor at the cell holding its centre. Loss: BCE objectness
over all cells, MSE on offsets and BCE on classes at assigned cells.
Decoding keeps score > 0.05 and applies per-class NMS (IoU 0.5). Metrics:
RSNA-style mAP over IoU 0.40-0.75 (`localized_metrics.rsna_map`) or fROC
for foreign objects.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jointcxr.evaluators import localized_metrics

SCALES = ("conv3", "conv4", "conv5")
DEFAULT_ANCHORS = np.array([[0.04, 0.04], [0.07, 0.05], [0.05, 0.09],
                            [0.1, 0.12], [0.15, 0.1], [0.12, 0.2],
                            [0.25, 0.2], [0.2, 0.35], [0.4, 0.4]],
                           np.float32)  # (w, h), normalised


def kmeans_anchors(wh: np.ndarray, k: int = 9, seed: int = 0,
                   iters: int = 50) -> np.ndarray:
  """Anchors by k-means with d = 1 - IoU (sorted by area)."""
  if len(wh) < k:
    return DEFAULT_ANCHORS
  rng = np.random.default_rng(seed)
  c = wh[rng.choice(len(wh), k, replace=False)]
  for _ in range(iters):
    inter = np.minimum(wh[:, None, 0], c[None, :, 0]) * np.minimum(
        wh[:, None, 1], c[None, :, 1])
    iou = inter / (wh[:, 0:1] * wh[:, 1:2] + (c[:, 0] * c[:, 1])[None] - inter)
    assign = iou.argmax(1)
    new = np.array([np.median(wh[assign == j], 0) if (assign == j).any()
                    else c[j] for j in range(k)])
    if np.allclose(new, c):
      break
    c = new
  return c[np.argsort(c[:, 0] * c[:, 1])].astype(np.float32)


class YoloHead(nn.Module):
  num_classes: int
  anchors_per_scale: int = 3
  width: int = 64

  @nn.compact
  def __call__(self, feats: dict, size, *, train: bool = False):
    del size, train
    out = []
    for s in SCALES:
      if s not in feats:
        raise ValueError("the detection probe needs a ResNet-style encoder "
                         "with conv3..conv5 outputs")
      y = nn.relu(nn.Conv(self.width, (3, 3), name=f"{s}_conv")(feats[s]))
      y = nn.Conv(self.anchors_per_scale * (5 + self.num_classes), (1, 1),
                  name=f"{s}_out")(y)
      b, h, w, _ = y.shape
      out.append(y.reshape(b, h, w, self.anchors_per_scale,
                           5 + self.num_classes))
    return tuple(out)


def build_targets(boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                  grid_sizes: Sequence[int], anchors: np.ndarray,
                  num_classes: int) -> tuple[np.ndarray, ...]:
  """Per scale [B, G, G, 3, 5 + C] targets (obj, tx, ty, tw, th, classes)."""
  out = [np.zeros((len(boxes), g, g, 3, 5 + num_classes), np.float32)
         for g in grid_sizes]
  for b, (bx, lab) in enumerate(zip(boxes, labels)):
    for (y0, x0, y1, x1), c in zip(bx, lab):
      w, h = x1 - x0, y1 - y0
      if w <= 0 or h <= 0:
        continue
      inter = np.minimum(w, anchors[:, 0]) * np.minimum(h, anchors[:, 1])
      iou = inter / (w * h + anchors[:, 0] * anchors[:, 1] - inter)
      a = int(iou.argmax())
      s, ai = a // 3, a % 3
      g = grid_sizes[s]
      cx, cy = (x0 + x1) / 2 * g, (y0 + y1) / 2 * g
      j, i = min(int(cx), g - 1), min(int(cy), g - 1)
      t = out[s][b, i, j, ai]
      t[0] = 1.0
      t[1:5] = [cx - j, cy - i, np.log(w / anchors[a, 0]),
                np.log(h / anchors[a, 1])]
      t[5 + int(c)] = 1.0
  return tuple(out)


def yolo_loss(preds, targets) -> jax.Array:
  total = 0.0
  for p, t in zip(preds, targets):
    obj = t[..., 0]
    total += jnp.mean(optax_bce(p[..., 0], obj)) * 5.0
    pos = obj[..., None]
    n = jnp.maximum(obj.sum(), 1.0)
    xy = jax.nn.sigmoid(p[..., 1:3])
    total += jnp.sum(pos * (xy - t[..., 1:3]) ** 2) / n
    total += jnp.sum(pos * (p[..., 3:5] - t[..., 3:5]) ** 2) / n
    total += jnp.sum(pos * optax_bce(p[..., 5:], t[..., 5:])) / n
  return total


def optax_bce(logits, labels):
  return jnp.maximum(logits, 0) - logits * labels + jnp.log1p(
      jnp.exp(-jnp.abs(logits)))


def _nms(boxes, scores, iou_thr=0.5, top_k=50):
  order = np.argsort(-scores)[:top_k * 4]
  keep = []
  while order.size and len(keep) < top_k:
    i = order[0]
    keep.append(i)
    if order.size == 1:
      break
    ious = localized_metrics.box_iou(boxes[i:i + 1], boxes[order[1:]])[0]
    order = order[1:][ious <= iou_thr]
  return np.array(keep, int)


def decode(preds: Sequence[np.ndarray], anchors: np.ndarray,
           score_thr: float = 0.05) -> list[list[tuple]]:
  """Per image, per class: (boxes [K, 4] y0x0y1x1 normalised, scores [K])."""
  b = preds[0].shape[0]
  c = preds[0].shape[-1] - 5
  results = [[] for _ in range(b)]
  sig = lambda x: 1 / (1 + np.exp(-x))
  for img in range(b):
    allb, alls, allc = [], [], []
    for s, p in enumerate(preds):
      g = p.shape[1]
      q = p[img]
      obj = sig(q[..., 0])
      cls = sig(q[..., 5:])
      ii, jj = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
      cx = (jj[..., None] + sig(q[..., 1])) / g
      cy = (ii[..., None] + sig(q[..., 2])) / g
      anc = anchors[s * 3:(s + 1) * 3]
      w = np.exp(np.clip(q[..., 3], -6, 4)) * anc[:, 0]
      h = np.exp(np.clip(q[..., 4], -6, 4)) * anc[:, 1]
      bx = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], -1)
      for k in range(c):
        sc = (obj * cls[..., k]).reshape(-1)
        sel = sc > score_thr
        allb.append(np.clip(bx.reshape(-1, 4)[sel], 0, 1))
        alls.append(sc[sel])
        allc.append(np.full(sel.sum(), k))
    bxs, scs, cls_ = (np.concatenate(a) for a in (allb, alls, allc))
    for k in range(c):
      m = cls_ == k
      keep = _nms(bxs[m], scs[m]) if m.any() else np.zeros(0, int)
      results[img].append((bxs[m][keep], scs[m][keep]))
  return results


def evaluate(predict, x, y, anchors, metric: str = "map",
             batch: int = 32) -> float:
  """mAP (%) over IoU 0.4-0.75 or fROC (%), classes pooled per image."""
  boxes, labels = y
  preds, gts = [], []
  for s in range(0, len(x), batch):
    out = decode([np.asarray(p) for p in predict(x[s:s + batch])], anchors)
    for i, per_class in enumerate(out):
      bx = np.concatenate([p[0] for p in per_class]) if per_class else \
          np.zeros((0, 4))
      sc = np.concatenate([p[1] for p in per_class]) if per_class else \
          np.zeros(0)
      preds.append((bx, sc))
      gts.append(boxes[s + i])
  if metric == "froc":
    return localized_metrics.froc(preds, gts) * 100.0
  return localized_metrics.rsna_map(preds, gts) * 100.0
