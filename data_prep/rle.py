"""SIIM-ACR pneumothorax run-length encoding (column-major, relative starts).

The Kaggle stage-1 `train-rle.csv` stores masks as whitespace-separated
(start, length) pairs over the column-major flattened image, where each start
is the gap from the end of the previous run (the first from pixel 0). The
stage-2 file is reported to use absolute starts (DATA_FORMATS.md A3.1). The
two readings are ambiguous for some strings, so `decode` defaults to the
stage-1 (relative) reading and falls back to absolute only when the relative
reading would run past the image; pass `relative=` to force one.
"-1" (or an empty string) is the empty mask.
"""

import numpy as np


class RLEError(ValueError):
  """An RLE string that cannot describe a mask of the given size."""


def encode(mask: np.ndarray, *, relative: bool = True) -> str:
  """Encodes a [H, W] binary mask; "-1" for an empty mask."""
  flat = np.asarray(mask).astype(bool).T.reshape(-1)  # column-major
  padded = np.concatenate([[False], flat, [False]])
  edges = np.flatnonzero(padded[1:] != padded[:-1])
  if edges.size == 0:
    return "-1"
  starts, ends = edges[0::2], edges[1::2]
  lengths = ends - starts
  if relative:
    prev_end = np.concatenate([[0], ends[:-1]])
    starts = starts - prev_end
  return " ".join(f"{s} {l}" for s, l in zip(starts, lengths))


def _pairs(rle: str) -> np.ndarray:
  try:
    nums = np.array([int(t) for t in rle.split()], np.int64)
  except ValueError as e:
    raise RLEError(f"non-integer token in RLE: {e}") from None
  if nums.size % 2:
    raise RLEError(f"RLE has an odd number of integers ({nums.size})")
  return nums.reshape(-1, 2)


def decode(rle: str, height: int, width: int, *,
           relative: bool | None = None) -> np.ndarray:
  """Decodes to a [H, W] uint8 mask of {0, 1}.

  Args:
    rle: the EncodedPixels string ("-1" or "" for an empty mask).
    height: mask height.
    width: mask width.
    relative: force relative (True) or absolute (False) starts; None reads
      relative and falls back to absolute when that overflows the image.

  Returns:
    The mask.

  Raises:
    RLEError: malformed string or runs outside the image.
  """
  rle = (rle or "").strip()
  flat = np.zeros(height * width, np.uint8)
  if rle in ("", "-1"):
    return flat.reshape(width, height).T
  pairs = _pairs(rle)
  if np.any(pairs[:, 1] < 0) or np.any(pairs[:, 0] < 0):
    raise RLEError("negative start or length in RLE")
  if relative is None:
    try:
      return decode(rle, height, width, relative=True)
    except RLEError:
      return decode(rle, height, width, relative=False)
  pos = 0
  for start, length in pairs:
    begin = pos + start if relative else start
    end = begin + length
    if end > flat.size:
      raise RLEError(f"RLE run ends at pixel {end}, beyond the "
                     f"{height}x{width} image")
    flat[begin:end] = 1
    pos = end
  return flat.reshape(width, height).T
