"""DICOM -> 8-bit grayscale, the MIMIC-CXR-JPG way.

Order: modality LUT (rescale slope/intercept), then the VOI LUT or the
window centre/width when the file carries one (else min-max over the
pixels), then MONOCHROME1 inversion (so air is dark), then optional
histogram equalisation (MIMIC-CXR-JPG equalised its JPEGs).
"""

import numpy as np


class DicomError(ValueError):
  """A file that cannot be turned into an 8-bit image."""


def _read(path_or_dataset):
  import pydicom  # pylint: disable=g-import-not-at-top
  if not isinstance(path_or_dataset, (str, bytes)) and hasattr(
      path_or_dataset, "PixelData"):
    return path_or_dataset, "<dataset>"
  name = str(path_or_dataset)
  try:
    return pydicom.dcmread(name), name
  except Exception as e:  # pydicom raises several types on bad input
    raise DicomError(f"{name}: not a readable DICOM file "
                     f"({type(e).__name__}: {e})") from None


def equalize(img: np.ndarray) -> np.ndarray:
  """Histogram equalisation of a uint8 image."""
  hist = np.bincount(img.ravel(), minlength=256)
  cdf = hist.cumsum()
  nz = cdf[cdf > 0]
  if nz.size == 0 or cdf[-1] == nz[0]:
    return img
  lut = np.round((cdf - nz[0]) / (cdf[-1] - nz[0]) * 255)
  return np.clip(lut, 0, 255).astype(np.uint8)[img]


def dicom_to_uint8(path_or_dataset, *, equalize_hist: bool = False,
                   equalize: bool | None = None) -> np.ndarray:
  """Reads a DICOM and returns [H, W] uint8 (dark air, bright bone).

  Args:
    path_or_dataset: a file path or a pydicom Dataset.
    equalize_hist: apply histogram equalisation at the end.
    equalize: alias of `equalize_hist`.

  Raises:
    DicomError: unreadable file, no pixel data, or pixel data this
      environment cannot decode (e.g. JPEG 2000 without a decoder plugin).
  """
  from pydicom.pixels import apply_modality_lut, apply_voi_lut  # pylint: disable=g-import-not-at-top
  if equalize is not None:
    equalize_hist = equalize
  ds, name = _read(path_or_dataset)
  if "PixelData" not in ds:
    raise DicomError(f"{name}: DICOM has no pixel data")
  try:
    arr = ds.pixel_array
  except Exception as e:  # missing decoder plugins raise various errors
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
    raise DicomError(f"{name}: cannot decode pixel data (transfer syntax "
                     f"{ts}): {e}") from None
  if arr.ndim == 3 and arr.shape[-1] in (3, 4):
    arr = arr[..., :3].mean(-1)
  if arr.ndim != 2:
    raise DicomError(f"{name}: expected a 2-D image, got shape {arr.shape}")
  x = apply_modality_lut(arr, ds).astype(np.float64)
  has_voi = "VOILUTSequence" in ds or "WindowCenter" in ds
  if has_voi:
    x = apply_voi_lut(x, ds, index=0).astype(np.float64)
  lo, hi = float(np.min(x)), float(np.max(x))
  x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
  if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
    x = 1.0 - x
  out = np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
  return globals()["equalize"](out) if equalize_hist else out
