"""SIIM-ACR pneumothorax: train-rle.csv + DICOMs -> masks.

    python -m data_prep.localized.siim --input_dir=SIIM --output_dir=O

`train-rle.csv` (`ImageId`, ` EncodedPixels` — note the leading space) has
one row per region (column-major relative RLE; `-1` empty). DICOMs are
found under `dicom-images-train/*/*/<ImageId>.dcm`. Subjects are the DICOM
PatientID (falling back to the ImageId).
"""

import csv
import os
import sys

from data_prep import writer
from data_prep.localized import common

CLASSES = ("pneumothorax",)


def _patient_id(path: str, default: str) -> str:
  import pydicom  # pylint: disable=g-import-not-at-top
  try:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(getattr(ds, "PatientID", "") or default)
  except Exception:  # unreadable header: counted later when decoding
    return default


def build_items(input_dir: str) -> tuple[list[dict], list[writer.Skip]]:
  csv_path = os.path.join(input_dir, "train-rle.csv")
  if not os.path.exists(csv_path):
    raise writer.ConversionError(f"{csv_path}: file not found")
  rles: dict[str, list[str]] = {}
  with open(csv_path, newline="") as f:
    reader = csv.reader(f)
    header = [h.strip() for h in next(reader, [])]
    if header[:2] != ["ImageId", "EncodedPixels"]:
      raise writer.ConversionError(f"{csv_path}: expected header ImageId, "
                                   f"EncodedPixels, got {header}")
    for row in reader:
      if len(row) < 2:
        continue
      enc = row[1].strip()
      rles.setdefault(row[0].strip(), [])
      if enc not in ("-1", ""):
        rles[row[0].strip()].append(enc)
  files = {}
  for dirpath, _, names in os.walk(os.path.join(input_dir,
                                                "dicom-images-train")):
    for n in names:
      if n.endswith(".dcm"):
        files[n[:-4]] = os.path.join(dirpath, n)
  items, skips = [], []
  for image_id in sorted(rles):
    path = files.get(image_id)
    if path is None:
      skips.append(writer.Skip("missing_image", image_id))
      continue
    items.append({"id": image_id, "subject": _patient_id(path, image_id),
                  "image": ("dicom", path), "boxes": [],
                  "mask": ("rle", rles[image_id])})
  return items, skips


def convert(*, input_dir: str, output_dir: str, image_size: int = 256,
            seed: int = 0, num_workers: int = 1, overwrite: bool = False,
            progress: bool = True, **_) -> dict:
  items, skips = build_items(input_dir)
  return common.convert(name="siim", items=items, skips=skips,
                        output_dir=output_dir, class_names=CLASSES,
                        image_size=image_size, num_workers=num_workers,
                        seed=seed, args={"input_dir": os.path.abspath(
                            input_dir)}, progress=progress,
                        overwrite=overwrite)


if __name__ == "__main__":
  sys.exit(common.run_cli(sys.argv, convert, __doc__))
