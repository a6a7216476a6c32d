r"""NIH ChestX-ray14 boxes: BBox_List_2017.csv + PNGs -> 8-class boxes/masks.

    python -m data_prep.localized.nih --input_dir=NIH --output_dir=O \
        [--box_reference_size=1024]

`BBox_List_2017.csv` (may be gzipped) has the odd header `Image Index,Finding
Label,Bbox [x,y,w,h],,,` (9 header fields, 6 data fields; DATA_FORMATS.md
A3.3); boxes are float pixels of the 1024 px release images. Images are
looked up as `images/<Image Index>`; subjects are the `Patient ID` of
`Data_Entry_2017*.csv` when present, else the file-name prefix
(`<patient>_<follow-up>.png`). For copies resized from 1024 px (e.g. the
512 px ones in torchxrayvision) pass `--box_reference_size=1024`; boxes
that fall outside an image are counted under `box_clipped`. Boxes are also
rasterised into 8 mask channels (LoVT's NIH segmentation task). Seeded
60/20/20 split by patient with 1% / 10% label fractions.

Skips: missing_image (a listed image absent: with the 2 real sample images
most of the 984 boxes are skipped this way), path_escapes_root (an index
that is not a plain file name), unknown_label, bad_box, short_row,
unreadable_image.
"""

import csv
import glob
import gzip
import os
import sys
from typing import IO, Sequence

from data_prep import writer
from data_prep.localized import common
from jointcxr.data.features import NIH_BOX_LABELS

NAME = "nih"
CLASSES = NIH_BOX_LABELS


def _open(path: str) -> IO[str]:
  if path.endswith(".gz"):
    return gzip.open(path, "rt", newline="", encoding="utf-8-sig")
  return open(path, newline="", encoding="utf-8-sig")


def read_patients(input_dir: str) -> dict[str, str]:
  """Image Index -> Patient ID from every Data_Entry_2017*.csv(.gz)."""
  patient = {}
  for path in sorted(glob.glob(os.path.join(input_dir,
                                            "Data_Entry_2017*.csv*"))):
    with _open(path) as f:
      for row in csv.DictReader(f):
        patient[row["Image Index"].strip()] = (row.get("Patient ID") or
                                               "").strip()
  return patient


def read_boxes(csv_path: str, skips: list[writer.Skip]
               ) -> dict[str, list[tuple]]:
  """Image Index -> [(x, y, w, h, class)], bad rows appended to skips."""
  boxes: dict[str, list] = {}
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
  return boxes


def build_items(input_dir: str, box_reference_size: int | None = None
                ) -> tuple[list[dict], list[writer.Skip]]:
  """Items (one per image with boxes) and the skips found while reading.

  Raises:
    ConversionError: no box list.
  """
  cands = [os.path.join(input_dir, n) for n in ("BBox_List_2017.csv",
                                                "BBox_List_2017.csv.gz")]
  csv_path = next((p for p in cands if os.path.exists(p)), None)
  if csv_path is None:
    raise writer.ConversionError(f"{cands[0]}: file not found")
  skips: list[writer.Skip] = []
  boxes = read_boxes(csv_path, skips)
  patient = read_patients(input_dir)
  ref = (box_reference_size,) * 2 if box_reference_size else None
  items = []
  for name in sorted(boxes):
    path = os.path.join(input_dir, "images", name)
    if os.path.basename(name) != name or name in ("", ".", ".."):
      skips.append(writer.Skip("path_escapes_root", name))
    elif not os.path.exists(path):
      skips.append(writer.Skip("missing_image", name))
    else:
      items.append({"id": name, "subject": patient.get(name) or
                    name.split("_")[0], "image": ("file", path),
                    "boxes": boxes[name], "mask": None,
                    "box_reference": ref})
  return items, skips


def convert(*, input_dir: str, output_dir: str, image_size: int = 256,
            seed: int = 0, num_workers: int = 1,
            image_encoding: str = common.DEFAULT_IMAGE_ENCODING,
            equalize: bool = True, examples_per_shard: int = 512,
            box_reference_size: int | None = None, overwrite: bool = False,
            progress: bool = True) -> dict:
  """Converts the NIH box subset; returns the manifest (see common.convert).

  `box_reference_size`: the boxes' coordinate frame is this square size
  (1024 for the official CSV) when the images on disk were resized.
  """
  items, skips = build_items(input_dir, box_reference_size)
  return common.convert(
      name=NAME, items=items, skips=skips, output_dir=output_dir,
      class_names=CLASSES, image_size=image_size, num_workers=num_workers,
      seed=seed, args={"input_dir": os.path.abspath(input_dir),
                       "box_reference_size": box_reference_size},
      image_encoding=image_encoding, equalize=equalize,
      examples_per_shard=examples_per_shard, progress=progress,
      overwrite=overwrite,
      description="NIH ChestX-ray14 boxes of 8 findings, also as masks "
      "(data_prep.localized.nih).")


def _flags(fl) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_integer("box_reference_size", None, "Boxes are in the "
                       "coordinates of this square size (1024) although "
                       "the images on disk were resized.", flag_values=fl)


def main(argv: Sequence[str]) -> int:
  """CLI entry point; returns the exit status."""
  return common.cli(argv, convert, __doc__, extra_flags=_flags)


if __name__ == "__main__":
  sys.exit(main(sys.argv))
