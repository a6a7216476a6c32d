r"""SIIM-ACR pneumothorax: train-rle.csv + DICOMs -> segmentation masks.

    python -m data_prep.localized.siim --input_dir=SIIM --output_dir=O

`train-rle.csv` (`ImageId`, ` EncodedPixels`: note the leading space) has
one row per region (column-major relative RLE, `-1` for an empty mask;
DATA_FORMATS.md A3.1). DICOMs are found anywhere under
`dicom-images-train/` as `<ImageId>.dcm` (the Kaggle mirror nests them in
two UID folders). Subjects are the DICOM PatientID (else the ImageId); the
split is seeded by subject (60/20/20, LoVT's proportions) with 1% / 10%
label fractions of train.

Skips: missing_image, unreadable_image, bad_rle, short_row (a CSV row with
fewer than 2 fields), duplicate_dicom (two files with one ImageId).
"""

import csv
import os
import sys
from typing import Sequence

from data_prep import writer
from data_prep.localized import common

NAME = "siim"
CLASSES = ("pneumothorax",)


def _patient_id(path: str, default: str) -> str:
  import pydicom  # pylint: disable=g-import-not-at-top
  try:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(getattr(ds, "PatientID", "") or default)
  except Exception:  # pylint: disable=broad-except
    # An unreadable header is reported when the pixels fail to decode.
    return default


def read_rles(csv_path: str, skips: list[writer.Skip]
              ) -> dict[str, list[str]]:
  """ImageId -> its non-empty RLE strings (an empty list: no pneumothorax).

  Raises:
    ConversionError: missing file or unexpected header.
  """
  if not os.path.exists(csv_path):
    raise writer.ConversionError(f"{csv_path}: file not found")
  rles: dict[str, list[str]] = {}
  with open(csv_path, newline="", encoding="utf-8-sig") as f:
    reader = csv.reader(f)
    header = [h.strip() for h in next(reader, [])]
    if header[:2] != ["ImageId", "EncodedPixels"]:
      raise writer.ConversionError(f"{csv_path}: expected header ImageId, "
                                   f"EncodedPixels, got {header}")
    for i, row in enumerate(reader, start=2):
      if len(row) < 2 or not row[0].strip():
        skips.append(writer.Skip("short_row", f"row {i}"))
        continue
      image_id, enc = row[0].strip(), row[1].strip()
      rles.setdefault(image_id, [])
      if enc not in ("-1", ""):
        rles[image_id].append(enc)
  return rles


def build_items(input_dir: str) -> tuple[list[dict], list[writer.Skip]]:
  """Items (one per ImageId) and the skips found while reading."""
  skips: list[writer.Skip] = []
  rles = read_rles(os.path.join(input_dir, "train-rle.csv"), skips)
  files: dict[str, str] = {}
  dupes = set()
  for dirpath, _, names in sorted(os.walk(os.path.join(
      input_dir, "dicom-images-train"))):
    for n in sorted(names):
      if n.endswith(".dcm"):
        if n[:-4] in files:
          dupes.add(n[:-4])
        files[n[:-4]] = os.path.join(dirpath, n)
  items = []
  for image_id in sorted(rles):
    path = files.get(image_id)
    if image_id in dupes:
      skips.append(writer.Skip("duplicate_dicom", image_id))
    elif path is None:
      skips.append(writer.Skip("missing_image", image_id))
    else:
      items.append({"id": image_id, "subject": _patient_id(path, image_id),
                    "image": ("dicom", path), "boxes": [],
                    "mask": ("rle", rles[image_id])})
  return items, skips


def convert(*, input_dir: str, output_dir: str, image_size: int = 256,
            seed: int = 0, num_workers: int = 1,
            image_encoding: str = common.DEFAULT_IMAGE_ENCODING,
            equalize: bool = True, examples_per_shard: int = 512,
            overwrite: bool = False, progress: bool = True) -> dict:
  """Converts SIIM-ACR; returns the manifest (arguments: common.convert)."""
  items, skips = build_items(input_dir)
  return common.convert(
      name=NAME, items=items, skips=skips, output_dir=output_dir,
      class_names=CLASSES, image_size=image_size, num_workers=num_workers,
      seed=seed, args={"input_dir": os.path.abspath(input_dir)},
      image_encoding=image_encoding, equalize=equalize,
      examples_per_shard=examples_per_shard, progress=progress,
      overwrite=overwrite,
      description="SIIM-ACR pneumothorax masks (data_prep.localized.siim).")


def main(argv: Sequence[str]) -> int:
  """CLI entry point; returns the exit status."""
  return common.cli(argv, convert, __doc__)


if __name__ == "__main__":
  sys.exit(main(sys.argv))
