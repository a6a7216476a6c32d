r"""Object-CXR foreign objects: train.csv / dev.csv + JPGs -> boxes and masks.

    python -m data_prep.localized.object_cxr --input_dir=OBJ --output_dir=O

`annotation` (DATA_FORMATS.md A3.4) is empty (no object) or `;`-separated
objects `TYPE c1 c2 ...`: 0 rectangle (x1 y1 x2 y2), 1 ellipse (its bounding
box), 2 polygon (x1 y1 ... xn yn). Masks rasterise each shape as drawn
(ellipses as ellipses); boxes are the shapes' bounding boxes, re-derived
from the source coordinates (LoVT's own files swap axes). As in LoVT the
official dev set is the test split and train is split 80/20 into train /
validation (6,400 / 1,600 on the real set), with 1% / 10% label fractions.
Object-CXR has no patient ids: each image is its own subject. Image ids
are the file names (train and dev names are distinct in the real set; a
collision is an error).

Skips: bad_annotation (unknown type, wrong coordinate count, non-numbers),
missing_image, path_escapes_root (an image name with directory parts),
unreadable_image.
"""

import csv
import os
import sys
from typing import Sequence

from data_prep import splits as splits_lib
from data_prep import writer
from data_prep.localized import common

NAME = "object_cxr"
CLASSES = ("foreign_object",)
_KINDS = {"0": "rect", "1": "ellipse", "2": "polygon"}


def parse_annotation(text: str) -> list[tuple[str, list[float]]]:
  """Objects of one annotation cell.

  Args:
    text: e.g. "0 10 20 30 40;1 5 5 9 9".

  Returns:
    [(kind, coords)] with kind "rect", "ellipse" or "polygon".

  Raises:
    ValueError: an unknown type or a wrong coordinate count.
  """
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


def _bbox(coords: list[float]) -> tuple[float, float, float, float]:
  """(x, y, w, h) bounding box of x1 y1 x2 y2 ... coordinates."""
  xs, ys = coords[0::2], coords[1::2]
  return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


def build_items(input_dir: str, split: str) -> tuple[list[dict], list]:
  """Items of `train` or `dev` and the skips found while reading.

  Raises:
    ConversionError: the split's CSV is missing or lacks columns.
  """
  csv_path = os.path.join(input_dir, f"{split}.csv")
  if not os.path.exists(csv_path):
    raise writer.ConversionError(f"{csv_path}: file not found")
  items, skips = [], []
  with open(csv_path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    fields = reader.fieldnames or []
    col = next((c for c in ("image_name", "image_path") if c in fields), None)
    if col is None or "annotation" not in fields:
      raise writer.ConversionError(f"{csv_path}: expected columns "
                                   "image_name, annotation")
    for i, row in enumerate(reader, start=2):
      raw = (row.get(col) or "").strip()
      # The README's image_path column is "train/xxx.jpg": keep the name.
      name = raw[len(split) + 1:] if raw.startswith(split + "/") else raw
      if not name or os.path.basename(name) != name or name in (".", ".."):
        skips.append(writer.Skip("path_escapes_root" if name else
                                 "missing_image", name or f"row {i}"))
        continue
      try:
        objs = parse_annotation(row.get("annotation", ""))
      except ValueError as e:
        skips.append(writer.Skip("bad_annotation", f"{name} (row {i}: {e})"))
        continue
      path = os.path.join(input_dir, split, name)
      if not os.path.exists(path):
        skips.append(writer.Skip("missing_image", name))
        continue
      items.append({
          "id": name, "subject": name,
          "image": ("file", path),
          "boxes": [(*_bbox(c), 0) for _, c in objs],
          "mask": ("shapes", [(k, c, 0) for k, c in objs])})
  return items, skips


def convert(*, input_dir: str, output_dir: str, image_size: int = 256,
            seed: int = 0, num_workers: int = 1,
            image_encoding: str = common.DEFAULT_IMAGE_ENCODING,
            equalize: bool = True, examples_per_shard: int = 512,
            overwrite: bool = False, progress: bool = True) -> dict:
  """Converts Object-CXR; returns the manifest (see common.convert)."""
  train, skips = build_items(input_dir, "train")
  dev, skips_dev = build_items(input_dir, "dev")
  parts = splits_lib.split_by_subject(
      train, lambda it: it["subject"], seed=seed,
      fractions=(("train", 0.8), ("validation", 0.2)), label_fractions=())
  return common.convert(
      name=NAME, items=train + dev, skips=skips + skips_dev,
      output_dir=output_dir, class_names=CLASSES, image_size=image_size,
      num_workers=num_workers, seed=seed,
      args={"input_dir": os.path.abspath(input_dir)},
      fixed_splits={"train": parts["train"],
                    "validation": parts["validation"], "test": dev},
      image_encoding=image_encoding, equalize=equalize,
      examples_per_shard=examples_per_shard, progress=progress,
      overwrite=overwrite,
      description="Object-CXR foreign-object boxes and shape masks "
      "(data_prep.localized.object_cxr).")


def main(argv: Sequence[str]) -> int:
  """CLI entry point; returns the exit status."""
  return common.cli(argv, convert, __doc__)


if __name__ == "__main__":
  sys.exit(main(sys.argv))
