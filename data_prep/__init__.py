"""Converters from the public chest X-ray dataset formats to TFDS TFRecords."""

import os

# Worker processes import TensorFlow through these modules; keep its C++
# start-up chatter out of the converters' output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
