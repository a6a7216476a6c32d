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
  """Exposure at working resolution, resize, then noise at output size."""
  img = ndimage.gaussian_filter(img, max(0.6, img.shape[0] / 220))
  x = np.clip(img / 255.0, 0, 1) ** p.exposure * 255.0 + p.brightness
  x = np.clip(x, 0, 255).astype(np.float32)
  if x.shape != (height, width):
    x = np.asarray(Image.fromarray(x, mode="F").resize(
        (width, height), Image.BILINEAR))
  x = x + rng.normal(0, p.noise, size=x.shape).astype(np.float32)
  return np.clip(np.round(x), 0, 255).astype(np.uint8)
