"""Session-scoped data fixtures: built once per pytest worker in temp dirs.

Nothing derived from ../shared is ever written inside the repository.
"""

import pathlib

import pytest


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> pathlib.Path:
  """A tiny synthetic MIMIC-CXR-format tree (+ localized sets), 128 px."""
  from data_prep import synthetic  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp("synthetic")
  synthetic.generate(str(out), num_subjects=24, seed=0, image_size=128,
                     progress=False)
  return out


@pytest.fixture(scope="session")
def converted_mimic(synthetic_root, tmp_path_factory) -> pathlib.Path:
  """The synthetic tree converted to TFRecords at 64 px (shorter side)."""
  from data_prep import mimic_cxr  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp("mimic_tfds")
  mimic_cxr.convert(mimic_cxr_jpg_dir=str(synthetic_root / "mimic-cxr-jpg"),
                    reports_dir=str(synthetic_root / "mimic-cxr-reports"),
                    output_dir=str(out), image_size=64, examples_per_shard=16,
                    progress=False)
  return out


@pytest.fixture(scope="session")
def tokenizer_path(converted_mimic, tmp_path_factory) -> pathlib.Path:
  """A SentencePiece model trained on the converted train sentences."""
  from data_prep import tokenizer  # pylint: disable=g-import-not-at-top
  path = tmp_path_factory.mktemp("tok") / "spm.model"
  model = tokenizer.train_sentencepiece(
      tokenizer.read_sentences(str(converted_mimic)), 256)
  path.write_bytes(model)
  return path
