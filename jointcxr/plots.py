"""Pictures a person would rather look at than read.

Attention/similarity heatmaps over the X-ray for phrases, retrieval top-k
grids with report snippets, segmentation overlays and learning curves, as
PNG files (matplotlib, Agg backend); `to_tensorboard` also logs a PNG as a
TensorBoard image through a clu writer.
"""

import json
import os
import textwrap
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path


def heatmaps(images: np.ndarray, maps: np.ndarray, titles: Sequence[str],
             path: str, boxes: Sequence[np.ndarray] | None = None) -> str:
  """Image + heatmap overlay (+ target boxes) per phrase."""
  n = len(images)
  fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.6), squeeze=False)
  for i, ax in enumerate(axes[0]):
    ax.imshow(images[i][..., 0], cmap="gray")
    hm = maps[i]
    hm = (hm - hm.min()) / max(hm.max() - hm.min(), 1e-9)
    ax.imshow(hm, cmap="jet", alpha=0.4,
              extent=(0, images[i].shape[1], images[i].shape[0], 0))
    if boxes is not None:
      s = images[i].shape[0]
      for y0, x0, y1, x1 in boxes[i]:
        ax.add_patch(plt.Rectangle((x0 * s, y0 * s), (x1 - x0) * s,
                                   (y1 - y0) * s, fill=False, lw=1.5,
                                   ec="lime"))
    ax.set_title("\n".join(textwrap.wrap(titles[i], 28)), fontsize=8)
    ax.axis("off")
  return _save(fig, path)


def retrieval_grid(query_texts: Sequence[str], topk_images: np.ndarray,
                   hits: np.ndarray, path: str) -> str:
  """Rows: a report query and its top-k retrieved images (true match green)."""
  q, k = topk_images.shape[:2]
  fig, axes = plt.subplots(q, k + 1, figsize=(2.2 * (k + 1), 2.3 * q),
                           squeeze=False)
  for r in range(q):
    axes[r][0].text(0, 0.5, "\n".join(textwrap.wrap(query_texts[r], 30)[:8]),
                    fontsize=7, va="center")
    axes[r][0].axis("off")
    for c in range(k):
      ax = axes[r][c + 1]
      ax.imshow(topk_images[r, c][..., 0], cmap="gray")
      if hits[r, c]:
        for side in ax.spines.values():
          side.set_edgecolor("lime")
          side.set_linewidth(3)
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(f"#{c + 1}", fontsize=7)
  return _save(fig, path)


def segmentation_overlay(images: np.ndarray, truth: np.ndarray,
                         pred: np.ndarray, path: str, title: str = "") -> str:
  """Ground truth (green contour) and prediction (red fill) per image."""
  n = len(images)
  fig, axes = plt.subplots(1, n, figsize=(3 * n, 3.2), squeeze=False)
  for i, ax in enumerate(axes[0]):
    ax.imshow(images[i][..., 0], cmap="gray")
    ax.imshow(np.ma.masked_where(pred[i][..., 0] <= 0, pred[i][..., 0]),
              cmap="autumn", alpha=0.45)
    if truth[i][..., 0].any():
      ax.contour(truth[i][..., 0], levels=[0.5], colors="lime",
                 linewidths=1)
    ax.axis("off")
  fig.suptitle(title, fontsize=9)
  return _save(fig, path)


def learning_curves(runs: Mapping[str, str], path: str,
                    keys: Sequence[str] = ("loss",)) -> str:
  """Curves of `keys` from each run's `metrics.jsonl` (name -> workdir)."""
  fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.2),
                           squeeze=False)
  for name, workdir in runs.items():
    f = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(f):
      continue
    with open(f) as fh:
      rows = [json.loads(line) for line in fh if line.strip()]
    for ax, key in zip(axes[0], keys):
      pts = [(r["step"], r[key]) for r in rows if key in r]
      if pts:
        ax.plot(*zip(*pts), label=name)
        ax.set_title(key)
        ax.set_xlabel("step")
  for ax in axes[0]:
    ax.legend(fontsize=8)
  return _save(fig, path)


def to_tensorboard(writer, step: int, name: str, png_path: str) -> None:
  """Logs a PNG file as a TensorBoard image through a clu writer."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  img = np.asarray(Image.open(png_path).convert("RGB"))
  writer.write_images(step, {name: img[None]})
