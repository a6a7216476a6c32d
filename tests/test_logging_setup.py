"""The binaries' log: our INFO lines, the libraries' warnings only."""

import logging
import os

import orbax.checkpoint as ocp

import jointcxr
from jointcxr import logging_setup


def _record(path: str, level: int) -> logging.LogRecord:
  return logging.LogRecord("absl", level, path, 1, "m", (), None)


def test_library_info_is_dropped_and_warnings_kept():
  f = logging_setup.LibraryInfoFilter()
  ours = os.path.join(os.path.dirname(jointcxr.__file__), "train.py")
  orbax = os.path.join(os.path.dirname(ocp.__file__), "checkpoint_manager.py")
  assert f.filter(_record(ours, logging.INFO))
  assert f.filter(_record(ours, logging.DEBUG))
  assert not f.filter(_record(orbax, logging.INFO))
  assert f.filter(_record(orbax, logging.WARNING))
  assert f.filter(_record(orbax, logging.ERROR))


def test_tfds_notice_about_its_own_deprecated_calls_is_dropped():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  f = logging_setup.LibraryInfoFilter()
  feature = os.path.join(os.path.dirname(tfds.__file__), "core", "features",
                         "feature.py")
  rec = lambda msg, path=feature: logging.LogRecord(
      "absl", logging.WARNING, path, 1, msg, (), None)
  assert not f.filter(rec("`FeatureConnector.dtype` is deprecated. Please "
                          "change your code to use NumPy ..."))
  assert f.filter(rec("some other tfds warning"))
  ours = os.path.join(os.path.dirname(jointcxr.__file__), "train.py")
  assert f.filter(rec("`X.dtype` is deprecated", ours))


class _Keep(logging.Handler):

  def __init__(self, *filters):
    super().__init__(logging.DEBUG)
    self.records = []
    for f in filters:
      self.addFilter(f)

  def emit(self, record):
    self.records.append(record)


def test_a_checkpoint_save_logs_nothing_below_warning(tmp_path):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jointcxr import checkpointing  # pylint: disable=g-import-not-at-top
  everything, shown = _Keep(), _Keep(logging_setup.LibraryInfoFilter())
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.INFO)
  for h in (everything, shown):
    root.addHandler(h)
  try:
    ck = checkpointing.Checkpointer(str(tmp_path), every=1)
    ck.save(1, {"w": jnp.ones((4,))}, {"step": 1})
    ck.close()
  finally:
    root.setLevel(level)
    for h in (everything, shown):
      root.removeHandler(h)
  orbax_info = [r for r in everything.records if r.levelno == logging.INFO
                and "orbax" in r.pathname]
  assert len(orbax_info) >= 5  # what a save printed
  assert not [r for r in shown.records if r.levelno < logging.WARNING], [
      r.getMessage()[:80] for r in shown.records]
