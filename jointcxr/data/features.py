"""The on-disk schema shared by the converters (data_prep) and the pipeline.

One TFDS `FeaturesDict` per dataset family. Converters serialise examples
with it (`data_prep.writer.serialize`, deterministically) and write TFDS
metadata so that `tfds.builder_from_directory(output_dir)` loads the result;
the input pipeline decodes with the same object. Changing a field here is a
format change: bump `SCHEMA_VERSION` and keep the reader tolerant of the
previous one.
"""

from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

SCHEMA_VERSION = "1.1.0"  # 1.1: + report_features (reports-only sets)

# Stored image format of the converters: JPEG, quality 95. Measured in
# bench/data_prep.py on 256 px chest X-rays: tf.io.decode_jpeg is 2-4x faster
# than decode_png, reading + decoding converted TFRecords 2.3x faster, the
# files 40-55% smaller and encoding 30-100x cheaper than PNG (zlib level 6),
# for a mean error of 0.4-0.9 grey levels (MIMIC-CXR-JPG itself is JPEG
# q95). Raw uint8 decodes faster still but is 2.5-3x the size of PNG.
# `--image_encoding=png` keeps images lossless.
DEFAULT_IMAGE_ENCODING = "jpeg"

# The 14 CheXpert observations, in the alphabetical order of the MIMIC-CXR-JPG
# CSVs. Always index labels by name; other sources order them differently.
CHEXPERT_LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
    "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion", "Lung Opacity",
    "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
)
NO_FINDING_INDEX = CHEXPERT_LABELS.index("No Finding")

# Label values as stored on disk (float32). Missing ("not mentioned", a blank
# cell in the CSV) is kept distinct from uncertain and negative.
POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0
MISSING = float("nan")

# The 8 NIH ChestX-ray14 box classes (BBox_List_2017.csv spelling).
NIH_BOX_LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule",
    "Pneumonia", "Pneumothorax",
)

SPLITS = ("train", "validate", "test")


def _image(encoding: str) -> tfds.features.Image:
  return tfds.features.Image(shape=(None, None, 1), encoding_format=encoding)


def study_features(image_encoding: str = DEFAULT_IMAGE_ENCODING
                   ) -> tfds.features.FeaturesDict:
  """Image-report pairs: one example per study (MIMIC-CXR, Open-i).

  Args:
    image_encoding: "jpeg" (default, quality 95) or "png" for the stored
      8-bit grayscale images.

  Returns:
    The FeaturesDict. All frontal images of the study are kept (`images`,
    `dicom_ids` and `views` are parallel) so the pipeline can pick one.
    `labels`/`labels_negbio` hold 1 / 0 / -1 / NaN (missing) per
    `CHEXPERT_LABELS`.
  """
  return tfds.features.FeaturesDict({
      "study_id": tfds.features.Scalar(dtype=np.int64),
      "subject_id": tfds.features.Scalar(dtype=np.int64),
      "images": tfds.features.Sequence(_image(image_encoding)),
      "dicom_ids": tfds.features.Sequence(tfds.features.Text()),
      "views": tfds.features.Sequence(tfds.features.Text()),
      "findings": tfds.features.Text(),
      "impression": tfds.features.Text(),
      "sentences": tfds.features.Sequence(tfds.features.Text()),
      "labels": tfds.features.Tensor(shape=(len(CHEXPERT_LABELS),),
                                     dtype=np.float32),
      "labels_negbio": tfds.features.Tensor(shape=(len(CHEXPERT_LABELS),),
                                            dtype=np.float32),
  })


def report_features() -> tfds.features.FeaturesDict:
  """Reports without images (e.g. Open-i converted without its PNGs).

  The fields of `study_features` minus `images`, `dicom_ids` and `views`:
  a separate feature set rather than empty image lists, so an image
  pipeline pointed at a reports-only directory fails at once with a clear
  "no images" error instead of indexing an empty list mid-epoch.

  Returns:
    The FeaturesDict.
  """
  return tfds.features.FeaturesDict({
      "study_id": tfds.features.Scalar(dtype=np.int64),
      "subject_id": tfds.features.Scalar(dtype=np.int64),
      "findings": tfds.features.Text(),
      "impression": tfds.features.Text(),
      "sentences": tfds.features.Sequence(tfds.features.Text()),
      "labels": tfds.features.Tensor(shape=(len(CHEXPERT_LABELS),),
                                     dtype=np.float32),
      "labels_negbio": tfds.features.Tensor(shape=(len(CHEXPERT_LABELS),),
                                            dtype=np.float32),
  })


def localized_features(
    class_names: Sequence[str], image_encoding: str = DEFAULT_IMAGE_ENCODING,
) -> tfds.features.FeaturesDict:
  """Localized-evaluation examples (segmentation masks and/or boxes).

  Args:
    class_names: the dataset's classes; `mask` has one channel per class and
      `boxes/label` indexes into this list.
    image_encoding: "png" or "jpeg".

  Returns:
    The FeaturesDict. Boxes are `tfds.features.BBox` (normalised ymin, xmin,
    ymax, xmax); datasets with boxes only also get the box-rasterised `mask`
    (LoVT converts boxes to masks for its linear-segmentation tasks).
    `phrase` is set only for phrase-grounding sets (MS-CXR style).
  """
  return tfds.features.FeaturesDict({
      "image_id": tfds.features.Text(),
      "subject_id": tfds.features.Text(),
      "image": _image(image_encoding),
      "mask": tfds.features.Tensor(shape=(None, None, len(class_names)),
                                   dtype=np.uint8, encoding="zlib"),
      "boxes": tfds.features.Sequence({
          "bbox": tfds.features.BBoxFeature(),
          "label": tfds.features.ClassLabel(names=list(class_names)),
      }),
      "phrase": tfds.features.Text(),
  })


class KeepEncoded(tfds.decode.Decoder):
  """A `decoders=` entry that leaves images (or a Sequence of them) encoded.

  Same result as `tfds.decode.SkipDecoding()`, without its deprecation
  warnings: on a Sequence feature tfds maps an identity over the elements
  with `tf.map_fn(dtype=...)` and reads `TensorInfo.dtype`, both deprecated
  (one warning each per dataset built, i.e. per epoch and eval pass).
  """

  @property
  def dtype(self):
    # Imported here: tfds loads TensorFlow lazily, and the converters' CLIs
    # must answer a bad flag before TensorFlow prints its start-up lines.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.nest.map_structure(lambda t: t.tf_dtype,
                                 self.feature.get_serialized_info())

  def decode_example(self, serialized_example):
    return serialized_example

  def decode_batch_example(self, serialized_example):
    return serialized_example

  def decode_ragged_example(self, serialized_example):
    return serialized_example


def skip_image_decoding() -> dict:
  """`decoders=` of `as_dataset` keeping the study images encoded."""
  return {"images": KeepEncoded()}
