"""What the binaries log: our INFO lines, the libraries' warnings.

orbax logs ~30 INFO lines per checkpoint, tfds several per dataset built,
clu one per metric write; none of them tells a person anything the run's
own lines (steps, saves, evaluations) do not. `setup()` (called first by
each binary's `main`) keeps INFO records from this repository's packages
and WARNING and above from everyone; `--verbosity=1` (absl's flag) shows
everything, libraries' INFO and DEBUG included.
"""

import logging as std_logging
import os

from absl import logging

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# This repository's packages: their INFO lines are the run's own.
_OURS = tuple(os.path.join(_ROOT, p) + os.sep for p in
              ("jointcxr", "data_prep", "bench", "configs"))


# tfds warns that `FeatureConnector.dtype` is deprecated when its *own*
# Tensor decoder reads it (tensor_feature.decode_example, for every zlib
# mask of a localized set): no call of ours to change, nothing a user can do.
_TFDS_FEATURES = os.sep + os.path.join("tensorflow_datasets", "core",
                                       "features") + os.sep


def _tfds_internal_deprecation(record: std_logging.LogRecord) -> bool:
  return (_TFDS_FEATURES in record.pathname
          and ".dtype` is deprecated" in str(record.msg))


class LibraryInfoFilter(std_logging.Filter):
  """Passes WARNING+ from anywhere (but tfds's notices about its own
  deprecated calls) and lower levels from our packages."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.levelno >= std_logging.WARNING:
      return not _tfds_internal_deprecation(record)
    return os.path.abspath(record.pathname).startswith(_OURS)


_FILTER = LibraryInfoFilter()


def setup() -> None:
  """INFO for our lines, WARNING for libraries, unless --verbosity >= 1."""
  if logging.get_verbosity() >= logging.DEBUG:  # --verbosity=1: everything
    return
  logging.set_verbosity(logging.INFO)
  handler = logging.get_absl_handler()
  if _FILTER not in handler.filters:
    handler.addFilter(_FILTER)
