"""RSNA pneumonia: stage_2_train_labels.csv + DICOMs -> opacity boxes (+ masks).

    python -m data_prep.localized.rsna --input_dir=RSNA --output_dir=O

One row per box (`patientId,x,y,width,height,Target`; negatives have empty
coordinates and Target 0); images `stage_2_train_images/<patientId>.dcm`.
"""

import csv
import os
import sys

from data_prep import writer
from data_prep.localized import common

CLASSES = ("opacity",)


def build_items(input_dir: str) -> tuple[list[dict], list[writer.Skip]]:
  csv_path = os.path.join(input_dir, "stage_2_train_labels.csv")
  if not os.path.exists(csv_path):
    raise writer.ConversionError(f"{csv_path}: file not found")
  boxes: dict[str, list] = {}
  skips = []
  with open(csv_path, newline="") as f:
    for i, row in enumerate(csv.DictReader(f), start=2):
      pid = (row.get("patientId") or "").strip()
      if not pid or "/" in pid or pid.startswith("."):
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
            seed: int = 0, num_workers: int = 1, overwrite: bool = False,
            progress: bool = True, **_) -> dict:
  items, skips = build_items(input_dir)
  return common.convert(name="rsna", items=items, skips=skips,
                        output_dir=output_dir, class_names=CLASSES,
                        image_size=image_size, num_workers=num_workers,
                        seed=seed, args={"input_dir": os.path.abspath(
                            input_dir)}, progress=progress,
                        overwrite=overwrite)


if __name__ == "__main__":
  sys.exit(common.run_cli(sys.argv, convert, __doc__))
