"""COVID-rural opacity segmentation: jpgs/ + pngs_masks/ -> masks.

    python -m data_prep.localized.covid_rural --input_dir=COVID --output_dir=O

Images `jpgs/COVID-19-AR-<patient>_<date>-XR.jpg` (RGB) with binary masks
`pngs_masks/<same stem>.png`; subjects are the COVID-19-AR patient ids.
"""

import os
import re
import sys

from data_prep import writer
from data_prep.localized import common

CLASSES = ("opacity",)
_PATIENT = re.compile(r"(COVID-19-AR-\d+)")


def build_items(input_dir: str) -> tuple[list[dict], list[writer.Skip]]:
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
            seed: int = 0, num_workers: int = 1, overwrite: bool = False,
            progress: bool = True, **_) -> dict:
  items, skips = build_items(input_dir)
  return common.convert(name="covid_rural", items=items, skips=skips,
                        output_dir=output_dir, class_names=CLASSES,
                        image_size=image_size, num_workers=num_workers,
                        seed=seed, args={"input_dir": os.path.abspath(
                            input_dir)}, progress=progress,
                        overwrite=overwrite)


if __name__ == "__main__":
  sys.exit(common.run_cli(sys.argv, convert, __doc__))
