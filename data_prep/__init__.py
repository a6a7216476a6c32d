"""Converters from the public chest X-ray dataset formats to TFDS TFRecords."""

import os

# Worker processes import TensorFlow through these modules; keep its C++
# start-up chatter out of the converters' output. TF_CPP_MIN_LOG_LEVEL does
# not cover the oneDNN notice (logged before absl is initialised); turning
# the oneDNN kernels off does, and the converters run no TF matmul or conv.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
