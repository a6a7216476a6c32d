"""MS-CXR phrase grounding: the local-alignment CSV + MIMIC-CXR-JPG -> phrase boxes.

    python -m data_prep.localized.ms_cxr --input_dir=MSCXR \
        --mimic_cxr_jpg_dir=D --output_dir=O

One example per (dicom_id, phrase); its rows are its boxes (pixels of the
`image_width` x `image_height` image). The `split` column (v1.1) is used
when present, else a seeded split by subject (from the path).
"""

import csv
import glob
import os
import re
import sys

from data_prep import writer
from data_prep.localized import common

CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
           "Lung Opacity", "Pleural Effusion", "Pneumonia", "Pneumothorax")
_SPLITS = {"train": "train", "val": "validation", "validation": "validation",
           "test": "test"}


def build_items(input_dir: str, mimic_cxr_jpg_dir: str
                ) -> tuple[list[dict], list[writer.Skip], bool]:
  found = sorted(glob.glob(os.path.join(input_dir,
                                        "MS_CXR_Local_Alignment_*.csv")))
  if not found:
    raise writer.ConversionError(f"{input_dir}: no MS_CXR_Local_Alignment_"
                                 "*.csv")
  if not mimic_cxr_jpg_dir or not os.path.isdir(mimic_cxr_jpg_dir):
    raise writer.ConversionError("--mimic_cxr_jpg_dir must be the MIMIC-CXR-"
                                 "JPG root the CSV paths point into")
  root = os.path.realpath(mimic_cxr_jpg_dir)
  groups: dict[tuple[str, str], dict] = {}
  skips = []
  has_split = False
  with open(found[-1], newline="") as f:
    for i, row in enumerate(csv.DictReader(f), start=2):
      key = (row["dicom_id"].strip(), row["label_text"].strip())
      path = os.path.realpath(os.path.join(root, row["path"].strip()))
      if not path.startswith(root + os.sep):
        skips.append(writer.Skip("path_escapes_root", f"row {i}"))
        continue
      if row["category_name"] not in CLASSES:
        skips.append(writer.Skip("unknown_label", f"row {i}"))
        continue
      g = groups.setdefault(key, {
          "id": f"{key[0]}:{len(groups)}", "image": ("file", path),
          "subject": (re.search(r"p(\d{8})", row["path"]) or re.search(
              r"(.*)", key[0])).group(1),
          "boxes": [], "mask": None, "phrase": key[1],
          "split": row.get("split", "")})
      has_split |= bool(row.get("split"))
      g["boxes"].append((float(row["x"]), float(row["y"]), float(row["w"]),
                         float(row["h"]), CLASSES.index(row["category_name"])))
  items = []
  for g in groups.values():
    if not os.path.exists(g["image"][1]):
      skips.append(writer.Skip("missing_image", g["id"]))
      continue
    items.append(g)
  return items, skips, has_split


def convert(*, input_dir: str, output_dir: str, mimic_cxr_jpg_dir: str,
            image_size: int = 256, seed: int = 0, num_workers: int = 1,
            overwrite: bool = False, progress: bool = True, **_) -> dict:
  items, skips, has_split = build_items(input_dir, mimic_cxr_jpg_dir)
  fixed = None
  if has_split:
    fixed = {}
    for it in items:
      fixed.setdefault(_SPLITS.get(it["split"], "train"), []).append(it)
  return common.convert(name="ms_cxr", items=items, skips=skips,
                        output_dir=output_dir, class_names=CLASSES,
                        image_size=image_size, num_workers=num_workers,
                        seed=seed, args={"input_dir": os.path.abspath(
                            input_dir)}, fixed_splits=fixed,
                        progress=progress, overwrite=overwrite)


if __name__ == "__main__":
  sys.exit(common.run_cli(sys.argv, convert, __doc__))
