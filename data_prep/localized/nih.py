"""NIH ChestX-ray14 box subset: BBox_List_2017.csv + PNGs -> 8-class boxes/masks.

    python -m data_prep.localized.nih --input_dir=NIH --output_dir=O

`BBox_List_2017.csv` has the odd header `Image Index,Finding Label,Bbox
[x,y,w,h],,,` (9 header fields, 6 data fields); it may be gzipped. Images
are looked up in `images/`; subjects come from `Data_Entry_2017*.csv` when
present, else from the file name (`<patient>_<followup>.png`). Boxes whose
image is absent are counted as skips (`missing_image`). Boxes are in pixels
of the 1024 px originals; for resized copies pass `--box_reference_size=1024`.
"""

import csv
import glob
import gzip
import os
import sys

from data_prep import writer
from data_prep.localized import common
from jointcxr.data.features import NIH_BOX_LABELS

CLASSES = NIH_BOX_LABELS


def _open(path):
  return gzip.open(path, "rt", newline="") if path.endswith(".gz") else open(
      path, newline="")


def build_items(input_dir: str, box_reference_size: int | None = None
                ) -> tuple[list[dict], list[writer.Skip]]:
  cands = [os.path.join(input_dir, n) for n in ("BBox_List_2017.csv",
                                                "BBox_List_2017.csv.gz")]
  csv_path = next((p for p in cands if os.path.exists(p)), None)
  if csv_path is None:
    raise writer.ConversionError(f"{cands[0]}: file not found")
  patient = {}
  entries = sorted(glob.glob(os.path.join(input_dir, "Data_Entry_2017*.csv")))
  for path in entries:
    with _open(path) as f:
      for row in csv.DictReader(f):
        patient[row["Image Index"]] = row.get("Patient ID", "")
  boxes: dict[str, list] = {}
  skips = []
  with _open(csv_path) as f:
    reader = csv.reader(f)
    next(reader, None)
    for i, row in enumerate(reader, start=2):
      if len(row) < 6:
        skips.append(writer.Skip("short_row", f"row {i}"))
        continue
      name, label = row[0].strip(), row[1].strip()
      if label not in CLASSES:
        skips.append(writer.Skip("unknown_label", f"{name} ({label})"))
        continue
      try:
        x, y, w, h = (float(v) for v in row[2:6])
      except ValueError:
        skips.append(writer.Skip("bad_box", f"{name} (row {i})"))
        continue
      boxes.setdefault(name, []).append((x, y, w, h, CLASSES.index(label)))
  items = []
  for name in sorted(boxes):
    path = os.path.join(input_dir, "images", name)
    if os.path.basename(name) != name or not os.path.exists(path):
      skips.append(writer.Skip("missing_image", name))
      continue
    items.append({"id": name, "subject": patient.get(name) or name.split(
        "_")[0], "image": ("file", path), "boxes": boxes[name],
                  "mask": None, "box_reference_size": box_reference_size})
  return items, skips


def convert(*, input_dir: str, output_dir: str, image_size: int = 256,
            seed: int = 0, num_workers: int = 1, overwrite: bool = False,
            progress: bool = True, box_reference_size: int | None = None,
            **_) -> dict:
  items, skips = build_items(input_dir, box_reference_size)
  return common.convert(name="nih", items=items, skips=skips,
                        output_dir=output_dir, class_names=CLASSES,
                        image_size=image_size, num_workers=num_workers,
                        seed=seed, args={"input_dir": os.path.abspath(
                            input_dir)}, progress=progress,
                        overwrite=overwrite)


if __name__ == "__main__":
  sys.exit(common.run_cli(sys.argv, convert, __doc__))
