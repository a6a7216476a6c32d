"""Shared machinery of the localized-set converters.

An item is a plain dict: `id`, `subject`, `image` (("dicom"|"file", path)),
`boxes` (list of (x, y, w, h, class index) in source pixels), `mask`
(None, ("rle", [strings]), ("png", path) or ("shapes", [(kind, coords,
class)])) and `phrase`. `encode` turns it into a `localized_features`
example: the image resized to `image_size` on its shorter side, a per-class
mask at the same size (boxes are rasterised when no mask is given, as LoVT
does for its box datasets), and boxes normalised to (ymin, xmin, ymax, xmax).
"""

import functools
import os
import sys
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from data_prep import dicom as dicom_lib
from data_prep import images as images_lib
from data_prep import rle as rle_lib
from data_prep import splits as splits_lib
from data_prep import writer
from jointcxr.data import features as features_lib


def _load(kind: str, path: str) -> tuple[np.ndarray, dict]:
  if kind == "dicom":
    if not os.path.exists(path):
      raise images_lib.ImageError("missing_image", f"{path}: file not found")
    try:
      return dicom_lib.dicom_to_uint8(path), {}
    except dicom_lib.DicomError as e:
      raise images_lib.ImageError("unreadable_image", str(e)) from None
  arr, notes = images_lib.load_gray(path, None)
  return arr[..., 0], notes


def rasterize(shapes, height: int, width: int, num_classes: int
              ) -> np.ndarray:
  """Shapes [(kind, coords, class)] -> [H, W, C] uint8 mask.

  kind: "box" (x, y, w, h), "rect" (x1, y1, x2, y2), "ellipse" (x1, y1,
  x2, y2 bounding box) or "polygon" (x1, y1, ..., xn, yn).
  """
  planes = [Image.new("L", (width, height), 0) for _ in range(num_classes)]
  for kind, c, cls in shapes:
    draw = ImageDraw.Draw(planes[cls])
    if kind == "box":
      x, y, w, h = c
      draw.rectangle([x, y, x + w - 1, y + h - 1], fill=1)
    elif kind == "rect":
      draw.rectangle(list(c), fill=1)
    elif kind == "ellipse":
      draw.ellipse(list(c), fill=1)
    elif kind == "polygon":
      draw.polygon([(c[i], c[i + 1]) for i in range(0, len(c) - 1, 2)],
                   fill=1)
    else:
      raise ValueError(f"unknown shape kind {kind!r}")
  return np.stack([np.asarray(p, np.uint8) for p in planes], -1)


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  if mask.shape[:2] == (size[1], size[0]):
    return mask
  return np.stack([np.asarray(Image.fromarray(mask[..., c]).resize(
      size, Image.NEAREST)) for c in range(mask.shape[-1])], -1)


def encode(item: dict, *, image_size: int, class_names: Sequence[str]
           ) -> tuple[dict, dict] | writer.Skip:
  """Item -> (example, notes) or Skip (runs in worker processes)."""
  try:
    img, notes = _load(*item["image"])
  except images_lib.ImageError as e:
    return writer.Skip(e.reason, item["id"])
  h, w = img.shape
  n_cls = len(class_names)
  kind = item["mask"][0] if item["mask"] else None
  try:
    if kind == "rle":
      mask = np.zeros((h, w, n_cls), np.uint8)
      for enc in item["mask"][1]:
        mask[..., 0] |= rle_lib.decode(enc, h, w)
    elif kind == "png":
      if not os.path.exists(item["mask"][1]):
        return writer.Skip("missing_mask", item["id"])
      m = np.asarray(Image.open(item["mask"][1]).convert("L"))
      if m.shape != (h, w):
        return writer.Skip("mask_size_mismatch", item["id"])
      mask = (m > 127).astype(np.uint8)[..., None]
    elif kind == "shapes":
      mask = rasterize(item["mask"][1], h, w, n_cls)
    else:
      mask = rasterize([("box", b[:4], b[4]) for b in item["boxes"]], h, w,
                       n_cls)
  except rle_lib.RLEError as e:
    return writer.Skip("bad_rle", f"{item['id']} ({e})")
  ref = item.get("box_reference_size")
  if ref:
    # Boxes given in the coordinates of a `ref`-pixel original (e.g. NIH's
    # 1024 px) while the file on disk was resized.
    sx, sy = w / ref, h / ref
    item = dict(item, boxes=[(x * sx, y * sy, bw * sx, bh * sy, c)
                             for x, y, bw, bh, c in item["boxes"]])
    if item["mask"] is None:
      mask = rasterize([("box", b[:4], b[4]) for b in item["boxes"]], h, w,
                       n_cls)
  boxes = []
  for x, y, bw, bh, cls in item["boxes"]:
    y0, x0 = max(0.0, y / h), max(0.0, x / w)
    y1, x1 = min(1.0, (y + bh) / h), min(1.0, (x + bw) / w)
    if y1 <= y0 or x1 <= x0:
      notes["degenerate_box"] = notes.get("degenerate_box", 0) + 1
      continue
    boxes.append({"bbox": features_lib_bbox(y0, x0, y1, x1), "label": cls})
  small = images_lib.resize_short_side(Image.fromarray(img), image_size)
  mask = _resize_mask(mask, small.size)
  return {"image_id": item["id"], "subject_id": item["subject"],
          "image": np.asarray(small, np.uint8)[..., None], "mask": mask,
          "boxes": boxes, "phrase": item.get("phrase", "")}, notes


def features_lib_bbox(y0, x0, y1, x1):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.features.BBox(ymin=float(y0), xmin=float(x0), ymax=float(y1),
                            xmax=float(x1))


def convert(*, name: str, items: list[dict], skips: list[writer.Skip],
            output_dir: str, class_names: Sequence[str], image_size: int,
            num_workers: int, seed: int, args: dict,
            fixed_splits: dict[str, list[dict]] | None = None,
            examples_per_shard: int = 512, progress: bool = True,
            overwrite: bool = False) -> dict:
  """Splits by subject (unless given), writes all splits; returns manifest."""
  if fixed_splits is None:
    by_split = splits_lib.split_by_subject(items, lambda it: it["subject"],
                                           seed=seed)
  else:
    by_split = dict(fixed_splits)
    if "train" in by_split:
      by_split.update(splits_lib.label_fraction_splits(by_split["train"],
                                                       seed=seed))
  jobs = [j for split, its in by_split.items() if its
          for j in writer.plan_shards(name, split, its, examples_per_shard)]
  if not jobs:
    raise writer.ConversionError(f"{name}: no usable example found")
  args = dict(args, image_size=image_size, seed=seed,
              class_names=list(class_names))
  return writer.run(
      name=name, out_dir=output_dir, jobs=jobs,
      encode=functools.partial(encode, image_size=image_size,
                               class_names=tuple(class_names)),
      features_fn=functools.partial(features_lib.localized_features,
                                    tuple(class_names)),
      args=args, num_workers=num_workers, pre_skipped=skips,
      progress=progress, overwrite=overwrite,
      extra_manifest={"class_names": list(class_names),
                      "split_sizes": {k: len(v) for k, v in
                                      by_split.items()}})


def run_cli(argv: Sequence[str], build: Callable, doc: str) -> int:
  """Shared CLI: --input_dir, --output_dir, --image_size, --seed, workers."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  fl = flags.FlagValues()
  flags.DEFINE_string("input_dir", None, "Dataset root in its public layout.",
                      flag_values=fl)
  flags.DEFINE_string("output_dir", None, "Output directory.", flag_values=fl)
  flags.DEFINE_integer("image_size", 256, "Shorter side after resize.",
                       flag_values=fl)
  flags.DEFINE_integer("seed", 0, "Split seed.", flag_values=fl)
  flags.DEFINE_integer("num_workers", os.cpu_count() or 1, "Processes.",
                       flag_values=fl)
  flags.DEFINE_string("mimic_cxr_jpg_dir", None, "MS-CXR only: MIMIC-CXR-JPG "
                      "root the CSV paths point into.", flag_values=fl)
  flags.DEFINE_bool("overwrite", False, "Discard previous output.",
                    flag_values=fl)
  flags.DEFINE_integer("box_reference_size", None, "NIH: boxes are in the "
                       "coordinates of this original size (1024) although "
                       "the images on disk were resized.", flag_values=fl)
  try:
    fl(argv)
    if not fl.input_dir or not fl.output_dir:
      raise writer.ConversionError("--input_dir and --output_dir are "
                                   "required")
    if not os.path.isdir(fl.input_dir):
      raise writer.ConversionError(f"--input_dir {fl.input_dir} is not a "
                                   "directory")
    manifest = build(input_dir=fl.input_dir, output_dir=fl.output_dir,
                     image_size=fl.image_size, seed=fl.seed,
                     num_workers=fl.num_workers, overwrite=fl.overwrite,
                     mimic_cxr_jpg_dir=fl.mimic_cxr_jpg_dir,
                     box_reference_size=fl.box_reference_size)
  except (writer.ConversionError, flags.Error, OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  del doc
  print(f"written {manifest['written']}; skipped {manifest['skipped']}")
  print(f"output: {fl.output_dir}")
  return 0
