"""Shared machinery of the localized-set converters.

An item is a plain dict:

  id        image id (unique within the dataset)
  subject   patient id (splits never share one)
  image     ("dicom" | "file", path)
  boxes     [(x, y, w, h, class index)] in pixels of the source image, or of
            a reference size (`box_reference`: (width, height)) when the
            coordinates refer to another resolution (NIH's 1024 px
            originals, MS-CXR's `image_width` x `image_height`)
  mask      None (rasterise the boxes, as LoVT does for its detection sets),
            ("rle", [SIIM strings]), ("png", path) or
            ("shapes", [(kind, coords, class)])
  phrase    the grounding phrase (MS-CXR), else absent

`encode` turns it into a `localized_features` example: the image as 8-bit
grayscale (histogram-equalised by default, LoVT's preprocessing), resized so
its shorter side is `image_size`, a per-class mask at the same size
(nearest-neighbour), and boxes normalised to (ymin, xmin, ymax, xmax).
`convert` splits by subject (seeded, 60/20/20 like LoVT's split files) unless
the dataset has an official split, adds the 1% / 10% label fractions as the
extra splits `train_1pct` and `train_10pct` (`data_prep.splits`), and writes
through the resumable writer. Fractions are drawn from the planned train
items: an item skipped while encoding (e.g. an unreadable image) is missing
from its fractions too, and its skip is counted once. An empty split is
not written (TFDS cannot read one); `split_sizes` lists it as 0. `cli` is
the shared command line.
"""

import collections
import functools
import os
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from data_prep import dicom as dicom_lib
from data_prep import images as images_lib
from data_prep import rle as rle_lib
from data_prep import splits as splits_lib
from data_prep import writer
from jointcxr.data import features as features_lib

SPLITS = ("train", "validation", "test")
DEFAULT_IMAGE_ENCODING = features_lib.DEFAULT_IMAGE_ENCODING


def load_image(kind: str, path: str) -> tuple[np.ndarray, dict]:
  """[H, W] uint8 of a DICOM or an image file, with notes.

  Raises:
    images_lib.ImageError: missing or unreadable.
  """
  if kind == "dicom":
    if not os.path.exists(path):
      raise images_lib.ImageError("missing_image", f"{path}: file not found")
    try:
      return dicom_lib.dicom_to_uint8(path), {}
    except dicom_lib.DicomError as e:
      raise images_lib.ImageError("unreadable_image", str(e)) from None
  arr, notes = images_lib.load_gray(path, None)
  return arr[..., 0], notes


def rasterize(shapes: Sequence[tuple[str, Sequence[float], int]], height: int,
              width: int, num_classes: int) -> np.ndarray:
  """Shapes -> [H, W, C] uint8 mask (1 inside).

  Args:
    shapes: (kind, coords, class index); kind "box" (x, y, w, h), "rect"
      (x1, y1, x2, y2), "ellipse" (its bounding box x1, y1, x2, y2) or
      "polygon" (x1, y1, ..., xn, yn). Pixel (i, j) covers [j, j+1) x
      [i, i+1); a box covers the pixels its area overlaps.
    height: mask height.
    width: mask width.
    num_classes: channels.

  Returns:
    The mask.

  Raises:
    ValueError: an unknown shape kind.
  """
  planes = [Image.new("L", (width, height), 0) for _ in range(num_classes)]
  for kind, c, cls in shapes:
    draw = ImageDraw.Draw(planes[cls])
    if kind == "box":
      x, y, w, h = c
      x0, y0 = int(np.floor(x)), int(np.floor(y))
      x1, y1 = int(np.ceil(x + w)) - 1, int(np.ceil(y + h)) - 1
      if x1 >= x0 and y1 >= y0:
        draw.rectangle([x0, y0, x1, y1], fill=1)
    elif kind == "rect":
      draw.rectangle([min(c[0], c[2]), min(c[1], c[3]), max(c[0], c[2]),
                      max(c[1], c[3])], fill=1)
    elif kind == "ellipse":
      draw.ellipse([min(c[0], c[2]), min(c[1], c[3]), max(c[0], c[2]),
                    max(c[1], c[3])], fill=1)
    elif kind == "polygon":
      draw.polygon([(c[i], c[i + 1]) for i in range(0, len(c) - 1, 2)],
                   fill=1)
    else:
      raise ValueError(f"unknown shape kind {kind!r}")
  return np.stack([np.asarray(p, np.uint8) for p in planes], -1)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """[H, W, C] mask -> (width, height) `size`, nearest neighbour."""
  if mask.shape[:2] == (size[1], size[0]):
    return mask
  return np.stack([np.asarray(Image.fromarray(mask[..., c]).resize(
      size, Image.NEAREST)) for c in range(mask.shape[-1])], -1)


def _source_mask(item: dict, h: int, w: int, n_cls: int,
                 boxes: list[tuple]) -> np.ndarray | writer.Skip:
  """The full-resolution [H, W, C] mask of an item, or a Skip."""
  kind = item["mask"][0] if item["mask"] else None
  if kind == "rle":
    mask = np.zeros((h, w, n_cls), np.uint8)
    for enc in item["mask"][1]:
      try:
        mask[..., 0] |= rle_lib.decode(enc, h, w)
      except rle_lib.RLEError as e:
        return writer.Skip("bad_rle", f"{item['id']} ({e})")
    return mask
  if kind == "png":
    path = item["mask"][1]
    if not os.path.exists(path):
      return writer.Skip("missing_mask", item["id"])
    try:
      with Image.open(path) as im:
        m = np.asarray(im.convert("L"))
    except (OSError, ValueError, SyntaxError):
      return writer.Skip("unreadable_mask", item["id"])
    if m.shape != (h, w):
      return writer.Skip("mask_size_mismatch", item["id"])
    return (m > 127).astype(np.uint8)[..., None]
  if kind == "shapes":
    return rasterize(item["mask"][1], h, w, n_cls)
  return rasterize([("box", b[:4], b[4]) for b in boxes], h, w, n_cls)


def encode(item: dict, *, image_size: int, class_names: Sequence[str],
           image_encoding: str = features_lib.DEFAULT_IMAGE_ENCODING,
           equalize: bool = True) -> tuple[dict, dict] | writer.Skip:
  """Item -> (localized_features example, notes) or Skip (worker side).

  Args:
    item: see the module docstring.
    image_size: shorter side of the stored image and mask.
    class_names: the dataset's classes.
    image_encoding: "png" or "jpeg".
    equalize: histogram-equalise the image (LoVT's preprocessing).

  Returns:
    The example and its notes (`box_clipped`, `degenerate_box`, ...).
  """
  try:
    img, notes = load_image(*item["image"])
  except images_lib.ImageError as e:
    return writer.Skip(e.reason, item["id"])
  notes = dict(notes)
  h, w = img.shape
  boxes = list(item["boxes"])
  ref = item.get("box_reference")
  if ref and tuple(ref) != (w, h):
    sx, sy = w / ref[0], h / ref[1]
    boxes = [(x * sx, y * sy, bw * sx, bh * sy, c)
             for x, y, bw, bh, c in boxes]
  mask = _source_mask(item, h, w, len(class_names), boxes)
  if isinstance(mask, writer.Skip):
    return mask
  out_boxes = []
  for x, y, bw, bh, cls in boxes:
    if x < 0 or y < 0 or x + bw > w + 0.5 or y + bh > h + 0.5:
      # Usually boxes given in another resolution (see box_reference).
      notes["box_clipped"] = notes.get("box_clipped", 0) + 1
    y0, x0 = max(0.0, y / h), max(0.0, x / w)
    y1, x1 = min(1.0, (y + bh) / h), min(1.0, (x + bw) / w)
    if y1 <= y0 or x1 <= x0:
      notes["degenerate_box"] = notes.get("degenerate_box", 0) + 1
      continue
    out_boxes.append({"bbox": _bbox(y0, x0, y1, x1), "label": int(cls)})
  if equalize:
    img = dicom_lib.equalize(img)
  small = images_lib.resize_short_side(Image.fromarray(img), image_size)
  return {"image_id": item["id"], "subject_id": str(item["subject"]),
          "image": writer.encode_image(np.asarray(small, np.uint8),
                                       image_encoding),
          "mask": resize_mask(mask, small.size), "boxes": out_boxes,
          "phrase": item.get("phrase", "")}, notes


def _bbox(y0: float, x0: float, y1: float, x1: float) -> Any:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.features.BBox(ymin=float(y0), xmin=float(x0), ymax=float(y1),
                            xmax=float(x1))


def _item_id(item: dict) -> str:
  return item["id"]


def convert(*, name: str, items: list[dict], skips: list[writer.Skip],
            output_dir: str, class_names: Sequence[str], image_size: int,
            num_workers: int, seed: int, args: dict,
            fixed_splits: dict[str, list[dict]] | None = None,
            image_encoding: str = features_lib.DEFAULT_IMAGE_ENCODING,
            equalize: bool = True, examples_per_shard: int = 512,
            progress: bool = True, overwrite: bool = False,
            description: str = "") -> dict:
  """Splits, adds label fractions and writes every split.

  Args:
    name: dataset name.
    items: all usable items (see the module docstring).
    skips: skips found while reading the source files.
    output_dir: output directory.
    class_names: the dataset's classes.
    image_size: shorter side of the stored images.
    num_workers: worker processes.
    seed: split and fraction seed.
    args: converter arguments for the manifest.
    fixed_splits: an official split (split -> items) instead of a seeded
      one; it is checked for subjects in two splits.
    image_encoding: "png" or "jpeg".
    equalize: histogram-equalise images.
    examples_per_shard: items per shard.
    progress: show a progress bar.
    overwrite: discard previous output instead of resuming.
    description: TFDS description.

  Returns:
    The manifest, with `split_sizes`, `class_names`, `label_fractions` and
    the subject-disjointness check.

  Raises:
    ConversionError: no usable item, duplicate ids, or an official split
      that puts one subject in two splits.
  """
  ids = [it["id"] for it in items]
  if len(set(ids)) != len(ids):
    dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
    raise writer.ConversionError(f"{name}: duplicate image ids {dup}")
  if fixed_splits is None:
    by_split = splits_lib.split_by_subject(items, _subject, seed=seed)
  else:
    leaks = splits_lib.subjects_in_several_splits(fixed_splits, _subject)
    if leaks:
      raise writer.ConversionError(
          f"{name}: the official split puts {len(leaks)} subject(s) in two "
          f"splits, e.g. {sorted(leaks)[:3]}")
    by_split = dict(fixed_splits)
    by_split.update(splits_lib.label_fraction_splits(by_split.get(
        "train", []), seed=seed))
  # TFDS cannot read a split without examples: empty splits are left out
  # (the manifest's split_sizes shows them as 0).
  jobs = [j for split, its in by_split.items() if its
          for j in writer.plan_shards(name, split, its, examples_per_shard)]
  if not jobs:
    counts = collections.Counter(s.reason for s in skips)
    raise writer.ConversionError(f"{name}: no usable example found "
                                 f"(skipped: {dict(sorted(counts.items()))})")
  args = dict(args, image_size=image_size, seed=seed,
              class_names=list(class_names), image_encoding=image_encoding,
              equalize=equalize, examples_per_shard=examples_per_shard)
  return writer.run(
      name=name, out_dir=output_dir, jobs=jobs,
      encode=functools.partial(encode, image_size=image_size,
                               class_names=tuple(class_names),
                               image_encoding=image_encoding,
                               equalize=equalize),
      features_fn=functools.partial(features_lib.localized_features,
                                    tuple(class_names), image_encoding),
      args=args, id_of=_item_id, num_workers=num_workers, pre_skipped=skips,
      derived_splits=[n for n, _ in splits_lib.LABEL_FRACTIONS],
      progress=progress, overwrite=overwrite, description=description,
      extra_manifest={
          "class_names": list(class_names),
          "split_sizes": {k: len(v) for k, v in by_split.items()},
          "split_source": "official" if fixed_splits else "seeded_subject",
          "label_fractions": dict(splits_lib.LABEL_FRACTIONS)})


def _subject(item: dict) -> str:
  return str(item["subject"])


def cli(argv: Sequence[str], build: Callable[..., dict], doc: str,
        extra_flags: Callable[[Any], None] | None = None) -> int:
  """The shared command line of the localized converters.

  Flags: --input_dir, --output_dir (required), --image_size, --seed,
  --num_workers, --image_encoding, --equalize, --overwrite, plus the
  converter's own (`extra_flags`), all passed to `build` as keywords.

  Returns:
    The exit status (see `writer.cli`).
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  own: list[str] = []

  def define(fl):
    flags.DEFINE_string("input_dir", None, "Dataset root in its public "
                        "layout.", flag_values=fl)
    flags.DEFINE_string("output_dir", None, "Output directory.",
                        flag_values=fl)
    flags.DEFINE_integer("image_size", 256, "Shorter side after resize.",
                         flag_values=fl)
    flags.DEFINE_integer("seed", 0, "Split and label-fraction seed.",
                         flag_values=fl)
    flags.DEFINE_integer("num_workers", os.cpu_count() or 1, "Processes.",
                         flag_values=fl)
    flags.DEFINE_enum("image_encoding", features_lib.DEFAULT_IMAGE_ENCODING,
                      ["png", "jpeg"], "Stored image format.", flag_values=fl)
    flags.DEFINE_bool("equalize", True, "Histogram-equalise images (LoVT).",
                      flag_values=fl)
    flags.DEFINE_bool("overwrite", False, "Discard previous output.",
                      flag_values=fl)
    before = set(fl)
    if extra_flags is not None:
      extra_flags(fl)
    own.extend(sorted(set(fl) - before))

  def run(fl):
    if not os.path.isdir(fl.input_dir):
      raise writer.ConversionError(f"--input_dir {fl.input_dir} is not a "
                                   "directory")
    kw = {n: fl[n].value for n in own}
    return build(input_dir=fl.input_dir, output_dir=fl.output_dir,
                 image_size=fl.image_size, seed=fl.seed,
                 num_workers=fl.num_workers,
                 image_encoding=fl.image_encoding, equalize=fl.equalize,
                 overwrite=fl.overwrite, **kw)

  return writer.cli(argv, doc=doc, define=define, convert=run,
                    required=("input_dir", "output_dir"))
