"""Studies for Hsu et al.: report sections, labels and image features.

Reads one split of a converted TFDS directory (`jointcxr.data.features`
schema, loaded with `tfds.builder_from_directory`) in a single pass: the
first stored (frontal) image of each study is decoded, padded to a square,
resized to `image_size`, scaled to ((x / 255) - mean) / std and fed in
batches to the frozen image network; the findings and impression texts and
the 14 labels are kept as they are. A study without an image is skipped and
counted; a study whose chosen section is empty is dropped only when that
section is selected (`Studies.with_section`), again counted. Nothing is
dropped silently: the counts end up in the metrics JSON.

`Studies.save` / `Studies.load` cache a split as .npy arrays plus a JSON
file of texts (no pickle).
"""

import dataclasses
import json
import os
from typing import Callable

import numpy as np

SECTIONS = ("findings", "impression", "both")


class HsuDataError(ValueError):
  """A dataset directory or split that cannot be used."""


@dataclasses.dataclass
class Studies:
  """Parallel per-study arrays.

  Attributes:
    study_id: [N] int64.
    findings: N findings texts ("" when absent).
    impression: N impression texts.
    labels: [N, 14] float32, 1 / 0 / -1, NaN = not mentioned.
    image: [N, C] float32 image features.
  """
  study_id: np.ndarray
  findings: list[str]
  impression: list[str]
  labels: np.ndarray
  image: np.ndarray

  def __len__(self) -> int:
    return len(self.study_id)

  def texts(self, section: str) -> list[str]:
    """The chosen section's text of every study ("both" joins the two)."""
    if section == "findings":
      return list(self.findings)
    if section == "impression":
      return list(self.impression)
    if section == "both":
      return [f"{f} {i}".strip() for f, i in zip(self.findings,
                                                  self.impression)]
    raise HsuDataError(f"unknown section {section!r}; expected one of "
                       f"{SECTIONS}")

  def take(self, idx: np.ndarray) -> "Studies":
    """The studies at `idx`, in that order."""
    idx = np.asarray(idx, np.int64)
    return Studies(self.study_id[idx], [self.findings[i] for i in idx],
                   [self.impression[i] for i in idx], self.labels[idx],
                   self.image[idx])

  def with_section(self, section: str) -> tuple["Studies", int]:
    """Studies whose `section` has text, and how many were dropped."""
    keep = np.asarray([bool(t.strip()) for t in self.texts(section)], bool)
    return self.take(np.flatnonzero(keep)), int((~keep).sum())

  def save(self, directory: str, name: str) -> None:
    """Writes `name_{ids,labels,image}.npy` and `name_text.json`."""
    os.makedirs(directory, exist_ok=True)
    base = os.path.join(directory, name)
    np.save(f"{base}_ids.npy", self.study_id)
    np.save(f"{base}_labels.npy", self.labels)
    np.save(f"{base}_image.npy", self.image)
    tmp = f"{base}_text.json.tmp"
    with open(tmp, "w") as f:
      json.dump({"findings": self.findings, "impression": self.impression}, f)
    os.replace(tmp, f"{base}_text.json")  # last: marks the cache complete

  @classmethod
  def load(cls, directory: str, name: str) -> "Studies | None":
    """The cached split, or None when it is not (completely) there."""
    base = os.path.join(directory, name)
    if not os.path.exists(f"{base}_text.json"):
      return None
    with open(f"{base}_text.json") as f:
      text = json.load(f)
    return cls(np.load(f"{base}_ids.npy"), text["findings"],
               text["impression"], np.load(f"{base}_labels.npy"),
               np.load(f"{base}_image.npy"))


def read_split(data_dir: str, split: str, *,
               extract: Callable[[np.ndarray], np.ndarray], image_size: int,
               mean: float, std: float, batch_size: int = 32,
               limit: int = 0, progress: bool = True
               ) -> tuple[Studies, dict[str, int]]:
  """Reads a converted split and extracts image features batch by batch.

  Args:
    data_dir: converted TFDS directory.
    split: split name.
    extract: [B, H, W, 1] float images -> [B, C] features.
    image_size: square side after padding and resizing.
    mean: pixel mean (on the [0, 1] scale).
    std: pixel std.
    batch_size: images per feature call.
    limit: read at most this many studies (0: all).
    progress: show a tqdm bar.

  Returns:
    (studies, skip counts {"no_image": n}).

  Raises:
    HsuDataError: not a TFDS directory, a missing split, or a reports-only
      dataset.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  from jointcxr.data import augment  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  try:
    builder = tfds.builder_from_directory(data_dir)
  except Exception as e:  # tfds raises several types for a bad directory
    raise HsuDataError(f"{data_dir}: not a converted TFDS directory "
                       f"({type(e).__name__}: {str(e).splitlines()[0]})"
                       ) from None
  if split not in builder.info.splits:
    raise HsuDataError(f"{data_dir} has no split {split!r} (has "
                       f"{sorted(builder.info.splits)})")
  if "images" not in builder.info.features:
    raise HsuDataError(f"{data_dir} holds reports only (no images); Hsu et "
                       "al. need image-report pairs")
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={"images": tfds.decode.SkipDecoding()})
  total = builder.info.splits[split].num_examples
  if limit:
    ds, total = ds.take(limit), min(limit, total)

  def decode(ex):
    n = tf.shape(ex["images"])[0]
    img = tf.cond(n > 0, lambda: tf.io.decode_image(
        ex["images"][0], channels=1, expand_animations=False),
                  lambda: tf.zeros([image_size, image_size, 1], tf.uint8))
    img.set_shape([None, None, 1])
    img = augment.eval_resize(img, image_size)
    img = (tf.cast(img, tf.float32) / 255.0 - mean) / std
    return {"image": img, "has_image": n > 0, "study_id": ex["study_id"],
            "findings": ex["findings"], "impression": ex["impression"],
            "labels": ex["labels"]}

  ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True).prefetch(2)
  keep = {"ids": [], "findings": [], "impression": [], "labels": [],
          "image": []}
  buf, skipped = [], 0

  def flush():
    if buf:
      keep["image"].append(extract(np.stack(buf)))
      buf.clear()

  for ex in tqdm(ds.as_numpy_iterator(), total=total, disable=not progress,
                 desc=f"hsu features {split}"):
    if not ex["has_image"]:
      skipped += 1
      continue
    keep["ids"].append(int(ex["study_id"]))
    keep["findings"].append(ex["findings"].decode("utf-8"))
    keep["impression"].append(ex["impression"].decode("utf-8"))
    keep["labels"].append(ex["labels"])
    buf.append(ex["image"])
    if len(buf) == batch_size:
      flush()
  flush()
  if not keep["ids"]:
    raise HsuDataError(f"{data_dir}:{split}: no study with an image "
                       f"({skipped} skipped)")
  studies = Studies(np.asarray(keep["ids"], np.int64), keep["findings"],
                    keep["impression"],
                    np.stack(keep["labels"]).astype(np.float32),
                    np.concatenate(keep["image"]).astype(np.float32))
  return studies, {"no_image": skipped}
