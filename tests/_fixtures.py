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
