"""Test-session setup shared by every test module.

Must run before jax is imported anywhere: 8 fake CPU devices (so sharded code
is exercised on one CPU), quiet TensorFlow, one OpenBLAS thread, and a
persistent compilation cache so repeated shapes compile once across
pytest-xdist workers and runs.
"""

import os
import sys
import tempfile

# 8 fake CPU devices, and XLA:CPU's concurrency-optimized scheduler off: it
# lets one device run two independent collectives at once, and with 8 fake
# devices on 2 cores those waits starve the thread another device needs to
# reach the first collective; LoVT's step then died in a 40 s rendezvous
# timeout (SIGABRT, issue 17), most often when loaded from the persistent
# compilation cache.
_XLA_FLAGS = ("--xla_force_host_platform_device_count=8",
              "--xla_cpu_enable_concurrency_optimized_scheduler=false")
_flags = os.environ.get("XLA_FLAGS", "")
for _f in _XLA_FLAGS:
  if _f.split("=")[0] not in _flags:
    _flags = f"{_flags} {_f}".strip()
os.environ["XLA_FLAGS"] = _flags
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One OpenBLAS thread per process: its spinning workers fight the XLA pool
# and the other pytest workers for the cores (sklearn's logistic-regression
# probes ran ~7x slower with the default two threads on a busy 2-core box).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
_CACHE = os.path.join(tempfile.gettempdir(), "jointcxr_jax_cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pathlib  # pylint: disable=g-import-not-at-top

import pytest  # pylint: disable=g-import-not-at-top

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
if str(REPO_ROOT) not in sys.path:
  sys.path.insert(0, str(REPO_ROOT))

# Fixtures that build data (synthetic MIMIC-format trees, converted TFRecords,
# tokenizers) live in their own module so this file stays about setup.
from _fixtures import *  # noqa: F401,F403  pylint: disable=wildcard-import,g-import-not-at-top


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """Path of ../shared/data; skips the test cleanly when it is absent."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"{SHARED_DATA} not present")
  return SHARED_DATA
