"""Converters of the localized-evaluation sets (LoVT's framework + MS-CXR).

Each module is a CLI, `python -m data_prep.localized.<name> --input_dir=...
--output_dir=...`, and has a `convert(...) -> manifest` function: `siim`
(RLE masks), `rsna` (boxes), `nih` (8-class boxes), `object_cxr`
(rectangles, ellipses, polygons), `covid_rural` (PNG masks) and `ms_cxr`
(phrases + boxes). All share `common.py` (image and mask decoding, box
rasterisation, subject-level splits with 1% / 10% label fractions stored as
the splits `train_1pct` / `train_10pct`, and the resumable writer). Splits
are `train`, `validation`, `test` (LoVT's names).
"""
