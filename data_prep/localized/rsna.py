r"""RSNA pneumonia: stage_2_train_labels.csv + DICOMs -> opacity boxes + masks.

    python -m data_prep.localized.rsna --input_dir=RSNA --output_dir=O

One CSV row per box (`patientId,x,y,width,height,Target`; negatives have
empty coordinates and Target 0; DATA_FORMATS.md A3.2); images
`stage_2_train_images/<patientId>.dcm`. Boxes are also rasterised into a
mask (LoVT evaluates RSNA as segmentation too). One image per patient, so
the seeded 60/20/20 split is by patientId, with 1% / 10% label fractions.

Skips: invalid_id (empty or path-like patientId), bad_box (unparsable
coordinates), missing_image, unreadable_image.
"""

import csv
import os
import re
import sys
from typing import Sequence

from data_prep import writer
from data_prep.localized import common

NAME = "rsna"
CLASSES = ("opacity",)
# patientIds are UUIDs; they become file names, so nothing path-like.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def build_items(input_dir: str) -> tuple[list[dict], list[writer.Skip]]:
  """Items (one per patientId) and the skips found while reading.

  Raises:
    ConversionError: the label CSV is missing or lacks columns.
  """
  csv_path = os.path.join(input_dir, "stage_2_train_labels.csv")
  if not os.path.exists(csv_path):
    raise writer.ConversionError(f"{csv_path}: file not found")
  boxes: dict[str, list] = {}
  skips = []
  with open(csv_path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    need = {"patientId", "x", "y", "width", "height", "Target"}
    if not need <= set(reader.fieldnames or ()):
      raise writer.ConversionError(f"{csv_path}: expected columns "
                                   f"{sorted(need)}")
    for i, row in enumerate(reader, start=2):
      pid = (row.get("patientId") or "").strip()
      if not _ID.match(pid) or ".." in pid:
        skips.append(writer.Skip("invalid_id", f"row {i}"))
        continue
      boxes.setdefault(pid, [])
      if (row.get("Target") or "").strip() == "1":
        try:
          boxes[pid].append((float(row["x"]), float(row["y"]),
                             float(row["width"]), float(row["height"]), 0))
        except (TypeError, ValueError):
          skips.append(writer.Skip("bad_box", f"{pid} (row {i})"))
  items = []
  for pid in sorted(boxes):
    path = os.path.join(input_dir, "stage_2_train_images", f"{pid}.dcm")
    if not os.path.exists(path):
      skips.append(writer.Skip("missing_image", pid))
      continue
    items.append({"id": pid, "subject": pid, "image": ("dicom", path),
                  "boxes": boxes[pid], "mask": None})
  return items, skips


def convert(*, input_dir: str, output_dir: str, image_size: int = 256,
            seed: int = 0, num_workers: int = 1,
            image_encoding: str = common.DEFAULT_IMAGE_ENCODING,
            equalize: bool = True, examples_per_shard: int = 512,
            overwrite: bool = False, progress: bool = True) -> dict:
  """Converts RSNA pneumonia; returns the manifest (see common.convert)."""
  items, skips = build_items(input_dir)
  return common.convert(
      name=NAME, items=items, skips=skips, output_dir=output_dir,
      class_names=CLASSES, image_size=image_size, num_workers=num_workers,
      seed=seed, args={"input_dir": os.path.abspath(input_dir)},
      image_encoding=image_encoding, equalize=equalize,
      examples_per_shard=examples_per_shard, progress=progress,
      overwrite=overwrite,
      description="RSNA pneumonia opacity boxes and box masks "
      "(data_prep.localized.rsna).")


def main(argv: Sequence[str]) -> int:
  """CLI entry point; returns the exit status."""
  return common.cli(argv, convert, __doc__)


if __name__ == "__main__":
  sys.exit(main(sys.argv))
