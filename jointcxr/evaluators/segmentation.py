"""Segmentation probes: linear on frozen region features, and a U-Net.

Linear (LoVT): a 1x1 convolution on the frozen conv5 (region) map,
bilinearly upsampled to the mask size, trained with a soft Dice loss. U-Net
(LoVT's ResUNet idea): a new decoder over conv5 -> conv1 skip connections of
a ResNet encoder, frozen or fine-tuned. Metric: Dice (%) of the 0.5
thresholded sigmoid, averaged over images and classes (NIH: over its 8
classes).
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np



class LinearSegHead(nn.Module):
  num_classes: int

  @nn.compact
  def __call__(self, feats: dict, size, *, train: bool = False):
    del train
    r = feats["regions"]
    logits = nn.Conv(self.num_classes, (1, 1), name="conv")(r)
    return jax.image.resize(logits, (r.shape[0], *size, self.num_classes),
                            "bilinear")


class UNetHead(nn.Module):
  """Decoder over a ResNet's conv1..conv5 maps."""
  num_classes: int
  widths: Sequence[int] = (256, 128, 64, 32)

  @nn.compact
  def __call__(self, feats: dict, size, *, train: bool = False):
    for k in ("conv1", "conv2", "conv3", "conv4", "conv5"):
      if k not in feats:
        raise ValueError("the U-Net probe needs a ResNet-style encoder with "
                         "conv1..conv5 outputs")
    y = feats["conv5"]
    for skip, w in zip(("conv4", "conv3", "conv2", "conv1"), self.widths):
      s = feats[skip]
      y = jax.image.resize(y, (y.shape[0], *s.shape[1:3], y.shape[-1]),
                           "bilinear")
      y = jnp.concatenate([y, s], axis=-1)
      for i in range(2):
        y = nn.Conv(w, (3, 3), name=f"{skip}_conv{i}")(y)
        y = nn.GroupNorm(num_groups=min(8, w), name=f"{skip}_gn{i}")(y)
        y = nn.relu(y)
    y = jax.image.resize(y, (y.shape[0], *size, y.shape[-1]), "bilinear")
    return nn.Conv(self.num_classes, (1, 1), name="out")(y)


def dice_loss(logits: jax.Array, masks: jax.Array, eps: float = 1.0):
  """Soft Dice loss averaged over images and classes."""
  p = jax.nn.sigmoid(logits.astype(jnp.float32))
  inter = jnp.sum(p * masks, axis=(1, 2))
  denom = jnp.sum(p, axis=(1, 2)) + jnp.sum(masks, axis=(1, 2))
  return 1.0 - jnp.mean((2 * inter + eps) / (denom + eps))


def seg_targets(y: np.ndarray, idx, flip: bool) -> jax.Array:
  m = y[idx].astype(np.float32)
  return jnp.asarray(m[:, :, ::-1] if flip else m)


def evaluate_dice(predict, x: np.ndarray, y: np.ndarray, batch: int = 32
                  ) -> float:
  """Dataset-level Dice (%) of thresholded predictions, mean over classes.

  Intersections and areas are summed over the whole split before dividing,
  so predicting nothing on a set with many empty masks scores 0, not the
  share of empty images (per-image Dice with empty = 1 rewards that).
  Classes without any positive pixel in the split are left out.
  """
  inter = np.zeros(y.shape[-1])
  total = np.zeros(y.shape[-1])
  for s in range(0, len(x), batch):
    p = predict(x[s:s + batch]) > 0
    t = y[s:s + batch] > 0
    inter += np.sum(p & t, axis=(0, 1, 2))
    total += np.sum(p, axis=(0, 1, 2)) + np.sum(t, axis=(0, 1, 2))
  has = np.sum(y > 0, axis=(0, 1, 2)) > 0
  if not has.any():
    return float("nan")
  return float(np.mean(2 * inter[has] / np.maximum(total[has], 1)) * 100.0)
