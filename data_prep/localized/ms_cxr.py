r"""MS-CXR phrase grounding: alignment CSV + MIMIC-CXR-JPG -> phrase boxes.

    python -m data_prep.localized.ms_cxr --input_dir=MSCXR \
        --mimic_cxr_jpg_dir=D --output_dir=O

`MS_CXR_Local_Alignment_v*.csv` (DATA_FORMATS.md A3.6; the newest version
found is used) has one row per box: `dicom_id, category_name, label_text,
path, x, y, w, h, image_width, image_height`. One example per (dicom_id,
phrase) with all its boxes; `phrase` holds the label text. Boxes are in
pixels of an `image_width` x `image_height` image and are rescaled if the
JPG on disk has another size. The `split` column (v1.1: train / val / test)
is used when present (checked for subjects in two splits), else a seeded
60/20/20 split by subject (the `pXXXXXXXX` folder of the path). Pass the
same CSV as `--exclude_ids` to data_prep.mimic_cxr to keep these images out
of pre-training.

Skips: path_escapes_root (a `path` leaving the MIMIC-CXR-JPG root),
unknown_label, bad_box, unknown_split, missing_image, unreadable_image.
"""

import csv
import glob
import os
import re
import sys
from typing import Sequence

from data_prep import writer
from data_prep.localized import common

NAME = "ms_cxr"
CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
           "Lung Opacity", "Pleural Effusion", "Pneumonia", "Pneumothorax")
_SPLITS = {"train": "train", "val": "validation", "validation": "validation",
           "validate": "validation", "test": "test"}
_COLUMNS = ("dicom_id", "category_name", "label_text", "path", "x", "y", "w",
            "h", "image_width", "image_height")


def _version_key(path: str) -> tuple[int, ...]:
  m = re.search(r"v(\d+)\.(\d+)\.(\d+)", os.path.basename(path))
  return tuple(int(g) for g in m.groups()) if m else (0,)


def build_items(input_dir: str, mimic_cxr_jpg_dir: str | None
                ) -> tuple[list[dict], list[writer.Skip], bool]:
  """Items (one per (dicom_id, phrase)), skips, and whether a split exists.

  Raises:
    ConversionError: no CSV, missing columns, or no MIMIC-CXR-JPG root.
  """
  found = sorted(glob.glob(os.path.join(input_dir,
                                        "MS_CXR_Local_Alignment_*.csv")),
                 key=_version_key)
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
  with open(found[-1], newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    missing = [c for c in _COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
      raise writer.ConversionError(f"{found[-1]}: missing columns {missing}")
    for i, row in enumerate(reader, start=2):
      did, phrase = row["dicom_id"].strip(), " ".join(row["label_text"].split())
      rel = row["path"].strip()
      path = os.path.realpath(os.path.join(root, rel))
      if os.path.isabs(rel) or not path.startswith(root + os.sep):
        skips.append(writer.Skip("path_escapes_root", f"row {i}"))
        continue
      if row["category_name"].strip() not in CLASSES:
        skips.append(writer.Skip("unknown_label", f"row {i}"))
        continue
      try:
        box = tuple(float(row[k]) for k in ("x", "y", "w", "h"))
        ref = (float(row["image_width"]), float(row["image_height"]))
      except ValueError:
        skips.append(writer.Skip("bad_box", f"row {i}"))
        continue
      split = (row.get("split") or "").strip()
      if split and split not in _SPLITS:
        skips.append(writer.Skip("unknown_split", f"row {i}"))
        continue
      has_split |= bool(split)
      m = re.search(r"/p(\d{8})/", "/" + rel)
      g = groups.setdefault((did, phrase), {
          "id": f"{did}:{len(groups):05d}", "image": ("file", path),
          "subject": m.group(1) if m else did, "boxes": [], "mask": None,
          "phrase": phrase, "box_reference": ref, "split": split})
      g["boxes"].append((*box, CLASSES.index(row["category_name"].strip())))
  items = []
  for g in groups.values():
    if not os.path.exists(g["image"][1]):
      skips.append(writer.Skip("missing_image", g["id"]))
      continue
    items.append(g)
  return items, skips, has_split


def convert(*, input_dir: str, output_dir: str,
            mimic_cxr_jpg_dir: str | None = None, image_size: int = 256,
            seed: int = 0, num_workers: int = 1,
            image_encoding: str = common.DEFAULT_IMAGE_ENCODING,
            equalize: bool = True, examples_per_shard: int = 512,
            overwrite: bool = False, progress: bool = True) -> dict:
  """Converts MS-CXR; returns the manifest (see common.convert)."""
  items, skips, has_split = build_items(input_dir, mimic_cxr_jpg_dir)
  fixed = None
  if has_split:
    fixed = {s: [] for s in common.SPLITS}
    for it in items:
      if not it["split"]:
        skips.append(writer.Skip("unknown_split", it["id"]))
        continue
      fixed[_SPLITS[it["split"]]].append(it)
  return common.convert(
      name=NAME, items=items, skips=skips, output_dir=output_dir,
      class_names=CLASSES, image_size=image_size, num_workers=num_workers,
      seed=seed, args={"input_dir": os.path.abspath(input_dir),
                       "mimic_cxr_jpg_dir": os.path.abspath(
                           mimic_cxr_jpg_dir)},
      fixed_splits=fixed, image_encoding=image_encoding, equalize=equalize,
      examples_per_shard=examples_per_shard, progress=progress,
      overwrite=overwrite,
      description="MS-CXR phrase grounding boxes (data_prep.localized."
      "ms_cxr).")


def _flags(fl) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("mimic_cxr_jpg_dir", None, "MIMIC-CXR-JPG root the "
                      "CSV paths point into.", flag_values=fl)


def main(argv: Sequence[str]) -> int:
  """CLI entry point; returns the exit status."""
  return common.cli(argv, convert, __doc__, extra_flags=_flags)


if __name__ == "__main__":
  sys.exit(main(sys.argv))
