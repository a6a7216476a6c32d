"""SIIM RLE codec: hand-computed cases and round-trips."""

import numpy as np
import pytest

from data_prep import rle


def test_hand_computed_relative_column_major():
  # 3x3 mask; column-major flat index = col * H + row.
  m = np.zeros((3, 3), np.uint8)
  m[1, 0] = m[2, 0] = 1   # flat 1, 2
  m[0, 2] = 1             # flat 6
  assert rle.encode(m) == "1 2 3 1"          # gap 1, run 2; gap 3, run 1
  assert rle.encode(m, relative=False) == "1 2 6 1"
  np.testing.assert_array_equal(rle.decode("1 2 3 1", 3, 3), m)
  np.testing.assert_array_equal(rle.decode("1 2 6 1", 3, 3, relative=False),
                                m)


def test_absolute_fallback_when_relative_overflows():
  m = np.zeros((4, 4), np.uint8)
  m[:, 3] = 1  # flat 12..15
  m[0, 2] = 1  # flat 8
  # Absolute "8 1 12 4": read relative it would end at 8+1+12+4 = 25 > 16.
  np.testing.assert_array_equal(rle.decode("8 1 12 4", 4, 4), m)


def test_round_trip_random_and_detection():
  rng = np.random.default_rng(0)
  for _ in range(20):
    h, w = rng.integers(5, 40, 2)
    m = (rng.random((h, w)) < 0.3).astype(np.uint8)
    np.testing.assert_array_equal(rle.decode(rle.encode(m), h, w), m)
    absolute = rle.encode(m, relative=False)
    np.testing.assert_array_equal(
        rle.decode(absolute, h, w, relative=False), m)


def test_empty_and_errors():
  assert rle.encode(np.zeros((4, 4))) == "-1"
  assert rle.decode(" -1", 4, 4).sum() == 0
  with pytest.raises(rle.RLEError, match="odd number"):
    rle.decode("1 2 3", 4, 4)
  with pytest.raises(rle.RLEError, match="beyond the 4x4 image"):
    rle.decode("10 10", 4, 4)
  with pytest.raises(rle.RLEError, match="non-integer"):
    rle.decode("1 x", 4, 4)
