"""Converters from the public chest X-ray dataset formats to TFDS TFRecords."""

import os

# Worker processes import TensorFlow through these modules; keep its C++
# start-up chatter out of the converters' output. (Not TF_ENABLE_ONEDNN_OPTS,
# which would hide the oneDNN notice too: every training process imports
# this package through jointcxr.data.text, and with oneDNN off TensorFlow's
# LoVT augmentation gives different pixels.)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
