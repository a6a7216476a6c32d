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


class LibraryInfoFilter(std_logging.Filter):
  """Passes WARNING+ from anywhere and lower levels from our packages."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return (record.levelno >= std_logging.WARNING
            or os.path.abspath(record.pathname).startswith(_OURS))


_FILTER = LibraryInfoFilter()


def setup() -> None:
  """INFO for our lines, WARNING for libraries, unless --verbosity >= 1."""
  if logging.get_verbosity() >= logging.DEBUG:  # --verbosity=1: everything
    return
  logging.set_verbosity(logging.INFO)
  handler = logging.get_absl_handler()
  if _FILTER not in handler.filters:
    handler.addFilter(_FILTER)
