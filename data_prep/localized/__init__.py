"""Converters of the localized-evaluation sets (LoVT's framework + MS-CXR).

Each module is a CLI: `python -m data_prep.localized.<name> --input_dir=...
--output_dir=...`; all share `common.py` (image/mask decoding, box
rasterisation, subject-level splits with 1% / 10% label fractions, and the
resumable writer).
"""
