"""Object-CXR foreign objects: train.csv / dev.csv + JPGs -> boxes and masks.

    python -m data_prep.localized.object_cxr --input_dir=OBJ --output_dir=O

`annotation` is empty (no object) or `;`-separated objects `TYPE c1 c2 ...`:
0 rectangle (x1 y1 x2 y2), 1 ellipse (its bounding box), 2 polygon (x1 y1
... xn yn). Boxes are re-derived from these coordinates (LoVT's own files
swap axes; see DATA_FORMATS.md A3). As in LoVT, the official dev set is the
test split and train is split by image into train / validation.
"""

import csv
import os
import sys

from data_prep import splits as splits_lib
from data_prep import writer
from data_prep.localized import common

CLASSES = ("foreign_object",)
_KINDS = {"0": "rect", "1": "ellipse", "2": "polygon"}


def parse_annotation(text: str) -> list[tuple[str, list[float]]]:
  """Object list of one annotation cell (raises ValueError if malformed)."""
  out = []
  for obj in filter(None, (o.strip() for o in (text or "").split(";"))):
    kind, *nums = obj.split()
    if kind not in _KINDS:
      raise ValueError(f"unknown object type {kind!r}")
    coords = [float(v) for v in nums]
    if len(coords) < 4 or (kind != "2" and len(coords) != 4) or len(
        coords) % 2:
      raise ValueError(f"bad coordinate count {len(coords)} for type {kind}")
    out.append((_KINDS[kind], coords))
  return out


def _bbox(kind, c):
  xs, ys = c[0::2], c[1::2]
  return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


def build_items(input_dir: str, split: str) -> tuple[list[dict], list]:
  csv_path = os.path.join(input_dir, f"{split}.csv")
  if not os.path.exists(csv_path):
    raise writer.ConversionError(f"{csv_path}: file not found")
  items, skips = [], []
  with open(csv_path, newline="") as f:
    reader = csv.DictReader(f)
    col = "image_name" if "image_name" in reader.fieldnames else "image_path"
    for i, row in enumerate(reader, start=2):
      name = os.path.basename((row.get(col) or "").strip())
      try:
        objs = parse_annotation(row.get("annotation", ""))
      except ValueError as e:
        skips.append(writer.Skip("bad_annotation", f"{name} (row {i}: {e})"))
        continue
      path = os.path.join(input_dir, split, name)
      if not name or not os.path.exists(path):
        skips.append(writer.Skip("missing_image", name or f"row {i}"))
        continue
      items.append({
          "id": name, "subject": name, "image": ("file", path),
          "boxes": [(*_bbox(k, c), 0) for k, c in objs],
          "mask": ("shapes", [(k, c, 0) for k, c in objs])})
  return items, skips


def convert(*, input_dir: str, output_dir: str, image_size: int = 256,
            seed: int = 0, num_workers: int = 1, overwrite: bool = False,
            progress: bool = True, **_) -> dict:
  train, skips = build_items(input_dir, "train")
  dev, skips_dev = build_items(input_dir, "dev")
  parts = splits_lib.split_by_subject(
      train, lambda it: it["subject"], seed=seed,
      fractions=(("train", 0.8), ("validation", 0.2)), label_fractions=())
  return common.convert(name="object_cxr", items=train + dev,
                        skips=skips + skips_dev, output_dir=output_dir,
                        class_names=CLASSES, image_size=image_size,
                        num_workers=num_workers, seed=seed,
                        args={"input_dir": os.path.abspath(input_dir)},
                        fixed_splits={"train": parts["train"],
                                      "validation": parts["validation"],
                                      "test": dev},
                        progress=progress, overwrite=overwrite)


if __name__ == "__main__":
  sys.exit(common.run_cli(sys.argv, convert, __doc__))
