"""Converters from the public chest X-ray dataset formats to TFDS TFRecords."""
