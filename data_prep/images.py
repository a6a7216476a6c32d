"""Image reading for the converters: fast reduced-scale decode, 8-bit gray.

JPEGs are decoded with PIL's `draft` mode, which lets libjpeg scale by 1/2,
1/4 or 1/8 during decoding: converting a 3056x2544 MIMIC JPEG to 256 px
then costs a fraction of a full decode (see bench/data_prep.py). Every
failure is an `ImageError` whose `reason` is a short manifest key.
"""

import os

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageError(ValueError):
  """An image that cannot be used; `reason` names it for the manifest."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


def resize_short_side(img: Image.Image, size: int) -> Image.Image:
  """Resize so the shorter side is `size` (never upsamples)."""
  w, h = img.size
  scale = size / min(w, h)
  if scale >= 1.0:
    return img
  return img.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                    Image.BILINEAR, reducing_gap=2.0)


def to_uint8_gray(img: Image.Image) -> tuple[np.ndarray, dict]:
  """Any PIL mode -> [H, W] uint8; 16-bit images are rescaled (noted)."""
  notes = {}
  if img.mode in ("I;16", "I;16B", "I;16L", "I"):
    a = np.asarray(img, dtype=np.float64)
    hi = a.max()
    a = a / hi * 255.0 if hi > 0 else a
    notes["converted_16bit"] = 1
    return np.clip(np.round(a), 0, 255).astype(np.uint8), notes
  if img.mode == "F":
    a = np.asarray(img, dtype=np.float64)
    lo, hi = a.min(), a.max()
    a = (a - lo) / (hi - lo) * 255 if hi > lo else a * 0
    return a.astype(np.uint8), notes
  if img.mode != "L":
    img = img.convert("L")
  return np.asarray(img, dtype=np.uint8), notes


def load_gray(path: str, short_side: int | None) -> tuple[np.ndarray, dict]:
  """Reads an image file as [H, W] uint8, shorter side <= short_side.

  Raises:
    ImageError: missing_image, empty_image_file or unreadable_image.
  """
  if not os.path.exists(path):
    raise ImageError("missing_image", f"{path}: file not found")
  if os.path.getsize(path) == 0:
    raise ImageError("empty_image_file", f"{path}: zero-byte file")
  try:
    with Image.open(path) as im:
      if short_side and im.format == "JPEG":
        w, h = im.size
        scale = short_side / min(w, h)
        im.draft("L", (max(1, int(w * scale)), max(1, int(h * scale))))
      im.load()
      arr, notes = to_uint8_gray(im)
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise ImageError("unreadable_image", f"{path}: cannot decode image "
                     f"({type(e).__name__}: {e})") from None
  if short_side:
    img = resize_short_side(Image.fromarray(arr), short_side)
    arr = np.asarray(img, dtype=np.uint8)
  return arr[..., None], notes
