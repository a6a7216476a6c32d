r"""COVID-rural opacity segmentation: jpgs/ + pngs_masks/ -> masks.

    python -m data_prep.localized.covid_rural --input_dir=COVID --output_dir=O

Images `jpgs/COVID-19-AR-<patient>_<date>-XR.jpg` (RGB, read as grayscale)
with binary masks `pngs_masks/<same stem>.png` (DATA_FORMATS.md A3.5);
subjects are the COVID-19-AR patient ids (a patient may have several
images). Seeded 60/20/20 split by patient with 1% / 10% label fractions.

Skips: missing_mask, unreadable_mask, mask_size_mismatch, unreadable_image.
"""

import os
import re
import sys
from typing import Sequence

from data_prep import writer
from data_prep.localized import common

NAME = "covid_rural"
CLASSES = ("opacity",)
_PATIENT = re.compile(r"(COVID-19-AR-\d+)")


def build_items(input_dir: str) -> tuple[list[dict], list[writer.Skip]]:
  """Items (one per JPG) and the skips found while reading.

  Raises:
    ConversionError: no jpgs/ directory.
  """
  jpg_dir = os.path.join(input_dir, "jpgs")
  if not os.path.isdir(jpg_dir):
    raise writer.ConversionError(f"{jpg_dir}: directory not found")
  items, skips = [], []
  for name in sorted(os.listdir(jpg_dir)):
    if not name.lower().endswith((".jpg", ".jpeg")):
      continue
    stem = os.path.splitext(name)[0]
    mask = os.path.join(input_dir, "pngs_masks", stem + ".png")
    if not os.path.exists(mask):
      skips.append(writer.Skip("missing_mask", stem))
      continue
    m = _PATIENT.search(stem)
    items.append({"id": stem, "subject": m.group(1) if m else stem,
                  "image": ("file", os.path.join(jpg_dir, name)),
                  "boxes": [], "mask": ("png", mask)})
  return items, skips


def convert(*, input_dir: str, output_dir: str, image_size: int = 256,
            seed: int = 0, num_workers: int = 1,
            image_encoding: str = common.DEFAULT_IMAGE_ENCODING,
            equalize: bool = True, examples_per_shard: int = 512,
            overwrite: bool = False, progress: bool = True) -> dict:
  """Converts COVID-rural; returns the manifest (see common.convert)."""
  items, skips = build_items(input_dir)
  return common.convert(
      name=NAME, items=items, skips=skips, output_dir=output_dir,
      class_names=CLASSES, image_size=image_size, num_workers=num_workers,
      seed=seed, args={"input_dir": os.path.abspath(input_dir)},
      image_encoding=image_encoding, equalize=equalize,
      examples_per_shard=examples_per_shard, progress=progress,
      overwrite=overwrite,
      description="COVID-rural opacity masks "
      "(data_prep.localized.covid_rural).")


def main(argv: Sequence[str]) -> int:
  """CLI entry point; returns the exit status."""
  return common.cli(argv, convert, __doc__)


if __name__ == "__main__":
  sys.exit(main(sys.argv))
