"""Whole radiographs: anatomy + findings + exposure, at any output size.

The phantom is rendered at a working resolution of at most `WORK_RES` rows
(findings stay visible at 224 px) and resized to the requested size, with
quantum noise added at the output resolution; that keeps 1,000 subjects at
512 px to about a minute and full MIMIC size (3056 x 2544) affordable.
"""

from typing import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from data_prep.synthetic import anatomy
from data_prep.synthetic import findings as fnd

WORK_RES = 320


def output_shape(image_size: int | str, aspect: float = 2544 / 3056,
                 square: bool = False) -> tuple[int, int]:
  """(height, width) for `image_size` (an int height or "full")."""
  if image_size == "full":
    return (3056, 3056) if square else (3056, 2544)
  h = int(image_size)
  return (h, h) if square else (h, int(round(h * aspect)))


def _resize(a: np.ndarray, height: int, width: int,
            nearest: bool) -> np.ndarray:
  if a.shape == (height, width):
    return a
  im = Image.fromarray(a)
  im = im.resize((width, height),
                 Image.NEAREST if nearest else Image.BILINEAR)
  return np.asarray(im)


def render_frontal(p: anatomy.Patient, found: Sequence[fnd.Finding],
                   height: int, width: int, seed: int
                   ) -> tuple[np.ndarray, list[np.ndarray]]:
  """A frontal radiograph and one mask per finding (same size as the image).

  The noise stream depends only on `seed`, so the same subject rendered with
  and without a finding differs only where the finding is drawn.
  """
  scale = min(1.0, WORK_RES / height)
  wh, ww = max(8, int(round(height * scale))), max(8, int(round(width *
                                                                 scale)))
  rib = next((fnd.rib_break(f) for f in found if f.type == "rib_fracture"),
             None)
  img, geom = anatomy.render_anatomy(p, wh, ww, rib_break=rib)
  masks = [fnd.render(img, geom, f, p) for f in found]
  rng = np.random.default_rng(seed)
  out = _expose_at(img, p, rng, height, width)
  masks = [_resize(m.astype(np.uint8), height, width, True).astype(bool)
           for m in masks]
  return out, masks


def render_lateral(p: anatomy.Patient, height: int, width: int,
                   seed: int) -> np.ndarray:
  """A lateral radiograph."""
  scale = min(1.0, WORK_RES / height)
  wh, ww = max(8, int(round(height * scale))), max(8, int(round(width *
                                                                 scale)))
  img = anatomy.render_lateral(p, wh, ww)
  return _expose_at(img, p, np.random.default_rng(seed), height, width)


def _expose_at(img: np.ndarray, p: anatomy.Patient,
               rng: np.random.Generator, height: int,
               width: int) -> np.ndarray:
  """Exposure at working resolution, resize, then noise at output size.

  Order as in an acquisition chain: detector blur, exposure curve and its
  tilt across the field, display window, resampling, quantum noise; collimator edges and the side marker
  are burnt in last (they are not part of the anatomy).
  """
  sigma = max(0.6, img.shape[0] / 220) + p.blur * img.shape[0]
  img = ndimage.gaussian_filter(img, sigma)
  x = np.clip(img / 255.0, 0, 1) ** p.exposure * 255.0 + p.brightness
  # Uneven exposure across the field (anode heel effect, positioning).
  gy = np.linspace(-0.5, 0.5, x.shape[0], dtype=np.float32)[:, None]
  gx = np.linspace(-0.5, 0.5, x.shape[1], dtype=np.float32)[None, :]
  x = x * (1.0 + p.gradient[0] * gx + p.gradient[1] * gy)
  lo, hi = p.window
  x = (x - lo) * (255.0 / (hi - lo))
  x = np.clip(x, 0, 255).astype(np.float32)
  if x.shape != (height, width):
    x = np.asarray(Image.fromarray(x, mode="F").resize(
        (width, height), Image.BILINEAR))
  x = x + rng.normal(0, p.noise, size=x.shape).astype(np.float32)
  x = _collimate(x, p)
  _draw_marker(x, p)
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _collimate(x: np.ndarray, p: anatomy.Patient) -> np.ndarray:
  """Replaces the strips outside the collimated field (top, left, right,
  bottom fractions) by the collimator's flat value."""
  h, w = x.shape
  top, left, right, bottom = p.collimation
  rows = np.arange(h)[:, None] / h
  cols = np.arange(w)[None, :] / w
  outside = (rows < top) | (rows >= 1 - bottom) | (cols < left) | (
      cols >= 1 - right)
  return np.where(outside, p.collimator_value, x)


def _draw_marker(x: np.ndarray, p: anatomy.Patient) -> None:
  """Burns a lead side marker ("L"-shaped strokes) into one corner."""
  if p.marker < 0:
    return
  h, w = x.shape
  s = max(3, int(round(0.045 * h)))
  t = max(1, s // 4)
  top, left, right, bottom = p.collimation
  r0 = int((top + 0.03) * h) if p.marker < 2 else int(
      (1 - bottom - 0.03) * h) - s
  c0 = int((left + 0.04) * w) if p.marker % 2 == 0 else int(
      (1 - right - 0.04) * w) - s
  r0, c0 = max(0, r0), max(0, c0)
  x[r0:r0 + s, c0:c0 + t] = 245.0
  x[r0 + s - t:r0 + s, c0:c0 + (s * 2) // 3] = 245.0
