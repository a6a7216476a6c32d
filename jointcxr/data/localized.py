"""Localized-evaluation sets as in-memory arrays for the probes.

The localized sets are small (hundreds to ~16k images), so probes load a
split once: images and masks are padded to a square and resized to
`image_size` (LoVT's eval transform), boxes are adjusted to the padded
frame, and everything stays uint8 on the host until batched.
"""

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from jointcxr.data import augment as augment_lib

tf.config.set_visible_devices([], "GPU")


@dataclasses.dataclass
class LocalizedSplit:
  images: np.ndarray        # uint8 [N, S, S, 1]
  masks: np.ndarray         # uint8 [N, S, S, C]
  boxes: list[np.ndarray]   # per image [M, 4] (ymin, xmin, ymax, xmax) in [0,1]
  box_labels: list[np.ndarray]
  phrases: list[str]
  image_ids: list[str]
  class_names: list[str]

  def __len__(self):
    return len(self.images)


def _square_boxes(b: np.ndarray, h: int, w: int) -> np.ndarray:
  """Boxes normalised to (h, w) -> normalised to the zero-padded square."""
  s = max(h, w)
  oy, ox = (s - h) // 2, (s - w) // 2
  out = b.astype(np.float32).copy()
  out[:, [0, 2]] = (b[:, [0, 2]] * h + oy) / s
  out[:, [1, 3]] = (b[:, [1, 3]] * w + ox) / s
  return out


def load_split(data_dir: str, split: str, image_size: int,
               limit: int | None = None) -> LocalizedSplit:
  """Reads a whole split of a `data_prep.localized` output."""
  builder = tfds.builder_from_directory(data_dir)
  if split not in builder.info.splits:
    raise ValueError(f"{data_dir} has no split {split!r} (has "
                     f"{sorted(builder.info.splits)})")
  names = builder.info.features["boxes"]["label"].names
  ds = builder.as_dataset(split=split, shuffle_files=False)
  if limit:
    ds = ds.take(limit)
  imgs, masks, boxes, labels, phrases, ids = [], [], [], [], [], []
  for ex in tfds.as_numpy(ds):
    h, w = ex["image"].shape[:2]
    imgs.append(augment_lib.eval_resize(
        tf.cast(ex["image"], tf.float32), image_size).numpy().round().astype(
            np.uint8))
    masks.append(augment_lib.eval_resize(
        tf.cast(ex["mask"], tf.float32), image_size, "nearest").numpy(
        ).astype(np.uint8))
    boxes.append(_square_boxes(ex["boxes"]["bbox"].reshape(-1, 4), h, w))
    labels.append(ex["boxes"]["label"].astype(np.int32))
    phrases.append(ex["phrase"].decode())
    ids.append(ex["image_id"].decode())
  if not imgs:
    raise ValueError(f"{data_dir} split {split!r} is empty")
  return LocalizedSplit(np.stack(imgs), np.stack(masks), boxes, labels,
                        phrases, ids, list(names))


def normalize(images: np.ndarray, mean: float = 0.5, std: float = 0.5
              ) -> np.ndarray:
  """uint8 images -> the model's float input."""
  return (images.astype(np.float32) / 255.0 - mean) / std
