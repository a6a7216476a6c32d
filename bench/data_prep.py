r"""Data-preparation speed: MIMIC-size JPEG conversion vs its decode limit.

    python -m bench.data_prep --output_dir=bench/results [--num_subjects=12]

All numbers come from one run on the same files:

1. Decode-only limits, one process, per image: full JPEG decode (PIL
   `load`), reduced-scale decode (`draft`: libjpeg scales by 1/2..1/8 inside
   the IDCT), and the converter's image step (draft + resize to the shorter
   side + PNG/JPEG encode), on synthetic MIMIC-size JPEGs
   (`data_prep.synthetic`, image_size="full": 3056 x 2544, quality 95) and,
   when ../shared/data is present, on a JPEG made from the real CR DICOM
   (real texture; the synthetic phantoms are noisier, so their entropy
   decoding is costlier). The pixel difference between draft and full
   decode after resizing is reported too.
2. End-to-end conversion (`data_prep.mimic_cxr.convert`) with 1 and 2
   worker processes: images/s per core, and its ratio to the draft
   decode-only rate.
3. Stored-format choice: the converted 256 px images encoded as PNG (PIL,
   zlib levels 1 and 6; TFDS's own `tf.image.encode_png`), JPEG (q95, q90)
   and raw uint8: bytes per image, encode cost, error, and the input
   pipeline's decode rate (`tf.io.decode_png` / `decode_jpeg` /
   `decode_raw` in tf.data, one thread and AUTOTUNE), plus reading +
   decoding the first image of every example from converted TFRecords.

Writes data_prep.json and data_prep.md. The machine's cores may be shared
with other work, so compare ratios within one run, not across runs.
"""

import csv
import gzip
import io
import os
import pathlib
import platform
import tempfile
import time
from typing import Any, Callable, Sequence

from absl import app
from absl import flags

from bench import report
from absl import logging as absl_logging
import numpy as np
from PIL import Image
import tqdm


def _define_flags() -> None:
  """Defines the command-line flags (only when run as a program).

  Kept out of import time so the benchmark modules import together (tests
  import several; absl refuses a flag defined twice).
  """
  flags.DEFINE_string("output_dir", "bench/results",
                      "Where data_prep.{json,md} go.")
  flags.DEFINE_integer("num_subjects", 16, "Synthetic MIMIC subjects (about "
                       "2.5 studies and 4.5 images each; about 2 of the "
                       "images frontal).")
  flags.DEFINE_integer("image_size", 256,
                       "Converter output (shorter side).")
  flags.DEFINE_integer("repeats", 3, "Timing repeats (best kept).")
  flags.DEFINE_list("workers", ["1", "2"], "Worker counts of the "
                    "end-to-end conversion.")
  flags.DEFINE_integer("copies", 6, "Copies of the synthetic tree "
                       "(hard links) converted end to end.")
  flags.DEFINE_string("work_dir", None, "Scratch directory "
                      "(default: a temporary one, removed).")


SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def cpu_seconds() -> float:
  """CPU seconds of this process (all threads) and its reaped children.

  `process_time` is precise; the children's share (worker processes of
  the converter) only has clock-tick resolution, fine for runs of seconds.
  """
  t = os.times()
  return time.process_time() + t.children_user + t.children_system


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
  """(fn(), wall seconds, CPU seconds)."""
  w, c = time.perf_counter(), cpu_seconds()
  out = fn()
  return out, time.perf_counter() - w, cpu_seconds() - c


def _rates(fn: Callable[[], int], repeats: int, min_s: float = 0.3
           ) -> dict[str, float]:
  """Items per wall second and per CPU second, best of `repeats`.

  Each measurement calls `fn` (which returns its item count) as often as
  needed to last `min_s`. Per CPU second is items per core-second: on a
  machine whose cores are shared with other jobs it is the stable number;
  wall rates move with the load.
  """
  _, wall, _ = _timed(fn)
  calls = max(1, int(np.ceil(min_s / max(wall, 1e-6))))
  best_wall = best_cpu = float("inf")
  n = 0
  for _ in range(repeats):
    n, wall, cpu = _timed(lambda: sum(fn() for _ in range(calls)))
    best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
  return {"per_s": n / best_wall, "per_cpu_s": n / max(best_cpu, 1e-9)}


def _decode_full(path: str) -> np.ndarray:
  with Image.open(path) as im:
    return np.asarray(im.convert("L"))


def _decode_draft(path: str, size: int) -> np.ndarray:
  with Image.open(path) as im:
    w, h = im.size
    s = size / min(w, h)
    im.draft("L", (max(1, int(w * s)), max(1, int(h * s))))
    return np.asarray(im.convert("L"))


def _resize(arr: np.ndarray, size: int) -> np.ndarray:
  from data_prep import images  # pylint: disable=g-import-not-at-top
  return np.asarray(images.resize_short_side(Image.fromarray(arr), size))


def decode_limits(paths: Sequence[str], size: int, repeats: int) -> dict:
  """Per-image rates (one process) of full / draft decode and the converter."""
  from data_prep import images  # pylint: disable=g-import-not-at-top
  from data_prep import writer  # pylint: disable=g-import-not-at-top

  def loop(fn):
    return lambda: sum(1 for p in paths if fn(p) is not None)

  out = {
      "images": len(paths),
      "source_size": list(Image.open(paths[0]).size),
      "source_mib_per_image": float(np.mean([os.path.getsize(p) for p in
                                             paths]) / 2 ** 20),
      "full_decode": _rates(loop(_decode_full), repeats),
      "draft_decode": _rates(loop(lambda p: _decode_draft(p, size)),
                                 repeats),
      "full_decode_resize": _rates(loop(lambda p: _resize(
          _decode_full(p), size)), repeats),
      "converter_load_gray": _rates(loop(lambda p: images.load_gray(
          p, size)), repeats),
      "converter_load_gray_png": _rates(loop(lambda p: writer.encode_image(
          images.load_gray(p, size)[0], "png")), repeats),
      "converter_load_gray_jpeg": _rates(loop(
          lambda p: writer.encode_image(images.load_gray(p, size)[0],
                                        "jpeg")), repeats),
  }
  diffs = [np.abs(_resize(_decode_full(p), size).astype(np.float64) -
                  images.load_gray(p, size)[0][..., 0]) for p in paths[:8]]
  out["draft_vs_full_mean_abs_diff"] = float(np.mean([d.mean() for d in
                                                      diffs]))
  out["draft_vs_full_p99_abs_diff"] = float(np.mean([np.percentile(d, 99)
                                                     for d in diffs]))
  return out


def _real_jpeg(work: str) -> str | None:
  """The real CR DICOM as an equalised 8-bit JPEG (q95), like MIMIC-JPG."""
  dcm = SHARED_DATA / "dicom_samples" / "RG1_UNCR.dcm"
  if not dcm.exists():
    return None
  from data_prep import dicom  # pylint: disable=g-import-not-at-top
  path = os.path.join(work, "real_cr.jpg")
  Image.fromarray(dicom.dicom_to_uint8(str(dcm), equalize_hist=True)).save(
      path, quality=95)
  return path


def replicate(root: str, dest: str, copies: int) -> str:
  """A MIMIC-format tree with `copies` copies of every study (hard links).

  Generating hundreds of full-size phantoms is slow; conversion speed only
  needs many files, so every study is repeated under new ids (subject and
  study + j * 10**8, dicom ids with a new first group), images hard-linked.
  """
  src_jpg = os.path.join(root, "mimic-cxr-jpg")
  out_jpg = os.path.join(dest, "mimic-cxr-jpg")
  os.makedirs(out_jpg, exist_ok=True)

  def ids(j, sub, study, did=None):
    new = (str(int(sub) + j * 10 ** 8), str(int(study) + j * 10 ** 8))
    return new + ((f"{j:08x}" + did[8:],) if did else ())

  def path(base, sub, study):
    return os.path.join(base, "files", f"p{sub[:2]}", f"p{sub}", f"s{study}")

  for name in ("metadata", "split", "chexpert", "negbio"):
    fname = f"mimic-cxr-2.0.0-{name}.csv.gz"
    with gzip.open(os.path.join(src_jpg, fname), "rt", newline="") as f:
      rows = list(csv.DictReader(f))
    with gzip.open(os.path.join(out_jpg, fname), "wt", newline="") as f:
      w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
      w.writeheader()
      for j in range(copies):
        for r in rows:
          r = dict(r)
          if "dicom_id" in r:
            r["subject_id"], r["study_id"], r["dicom_id"] = ids(
                j, r["subject_id"], r["study_id"], r["dicom_id"])
          else:
            r["subject_id"], r["study_id"] = ids(j, r["subject_id"],
                                                 r["study_id"])
          w.writerow(r)
        if name != "metadata":
          continue
        for r in rows:
          sub, study, did = ids(j, r["subject_id"], r["study_id"],
                                r["dicom_id"])
          os.makedirs(path(out_jpg, sub, study), exist_ok=True)
          os.link(os.path.join(path(src_jpg, r["subject_id"], r["study_id"]),
                               r["dicom_id"] + ".jpg"),
                  os.path.join(path(out_jpg, sub, study), did + ".jpg"))
          report = path(os.path.join(root, "mimic-cxr-reports"),
                        r["subject_id"], r["study_id"]) + ".txt"
          target = path(os.path.join(dest, "mimic-cxr-reports"), sub,
                        study) + ".txt"
          os.makedirs(os.path.dirname(target), exist_ok=True)
          if os.path.exists(report) and not os.path.exists(target):
            os.link(report, target)
  return dest


def _convert_timed(root: str, out: str, size: int, workers: int,
                   exclude: str | None) -> tuple[float, float, dict, int]:
  """(wall s, CPU s incl. workers, manifest, images) of one converter run."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from data_prep import mimic_cxr  # pylint: disable=g-import-not-at-top
  m, wall, cpu = _timed(lambda: mimic_cxr.convert(
      mimic_cxr_jpg_dir=os.path.join(root, "mimic-cxr-jpg"),
      reports_dir=os.path.join(root, "mimic-cxr-reports"), output_dir=out,
      image_size=size, num_workers=workers, examples_per_shard=16,
      exclude_ids=exclude, overwrite=True, progress=False))
  builder = tfds.builder_from_directory(out)
  images = sum(len(ex["dicom_ids"]) for split in m["written"] for ex in
               tfds.as_numpy(builder.as_dataset(
                   split=split, decoders={"images":
                                          tfds.decode.SkipDecoding()})))
  return wall, cpu, m, images


def conversion(root: str, out: str, size: int, workers: Sequence[int]
               ) -> list[dict]:
  """The whole converter per worker count: wall, CPU and marginal rates.

  A run pays a fixed start-up cost (worker processes importing TensorFlow,
  reading the CSVs, TFDS metadata) that a 377k-image conversion amortises;
  so each worker count is run on all studies and on a third of them, and
  the marginal rates (extra images / extra seconds) are the steady state.
  CPU seconds include the worker processes (reaped children).
  """
  with gzip.open(os.path.join(root, "mimic-cxr-jpg",
                              "mimic-cxr-2.0.0-split.csv.gz"), "rt") as f:
    studies = sorted({r["study_id"] for r in csv.DictReader(f)})
  exclude = os.path.join(out, "exclude.txt")
  os.makedirs(out, exist_ok=True)
  with open(exclude, "w", encoding="utf-8") as f:
    f.write("".join(f"s{s}\n" for s in studies[len(studies) // 3:]))
  _convert_timed(root, os.path.join(out, "warm"), size, 1, exclude)
  rows = []
  for n in workers:
    w_small, c_small, _, img_small = _convert_timed(
        root, os.path.join(out, f"s{n}"), size, n, exclude)
    w_full, c_full, m, img_full = _convert_timed(
        root, os.path.join(out, f"f{n}"), size, n, None)
    extra = img_full - img_small
    rows.append({
        "workers": n, "studies": m["total_written"], "images": img_full,
        "wall_s": w_full, "cpu_s": c_full,
        "images_per_s": img_full / w_full,
        "small_run_images": img_small, "small_run_wall_s": w_small,
        "small_run_cpu_s": c_small,
        "marginal_images_per_s": extra / max(w_full - w_small, 1e-9),
        "marginal_images_per_cpu_s": extra / max(c_full - c_small, 1e-9),
        "startup_cpu_s": c_small - img_small * (c_full - c_small) / max(
            extra, 1)})
  return rows


def _encoders() -> dict[str, Callable[[np.ndarray], bytes]]:
  from data_prep import writer  # pylint: disable=g-import-not-at-top
  from jointcxr.data import features  # pylint: disable=g-import-not-at-top
  tf_png = features.study_features("png")["images"].feature
  return {
      "png_pil_level6": lambda a: writer.encode_image(a, "png"),
      "png_pil_level1": lambda a: writer.encode_image(
          a, "png", png_compress_level=1),
      "png_tfds_default": lambda a: tf_png.encode_example(a[..., None]),
      "jpeg_q95": lambda a: writer.encode_image(a, "jpeg", jpeg_quality=95),
      "jpeg_q90": lambda a: writer.encode_image(a, "jpeg", jpeg_quality=90),
      "raw_uint8": lambda a: a.tobytes(),
  }


def _count(ds) -> int:
  return int(ds.reduce(0, lambda n, x: n + 1))


def _tf_rates(ds) -> dict[str, float]:
  """Elements per wall and CPU second of a tf.data pipeline (after warm-up)."""
  _count(ds)  # warm-up: graph building, caches
  n, wall, cpu = _timed(lambda: _count(ds))
  return {"per_s": n / wall, "per_cpu_s": n / max(cpu, 1e-9)}


def _tf_decode_rates(blobs: list[bytes], kind: str, shape: tuple[int, int],
                     parallel: bool, epochs: int) -> dict[str, float]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if kind == "raw_uint8":
    fn = lambda b: tf.reshape(tf.io.decode_raw(b, tf.uint8), shape)  # noqa
  elif kind.startswith("png"):
    fn = lambda b: tf.io.decode_png(b, channels=1)  # noqa: E731
  else:
    fn = lambda b: tf.io.decode_jpeg(b, channels=1)  # noqa: E731
  ds = tf.data.Dataset.from_tensor_slices(blobs).repeat(epochs).map(
      fn, num_parallel_calls=tf.data.AUTOTUNE if parallel else None)
  return _tf_rates(ds.map(lambda x: tf.reduce_sum(tf.cast(x[:1], tf.int32))))


def storage_formats(arrays: dict[str, list[np.ndarray]], repeats: int
                    ) -> dict[str, dict]:
  """Bytes, encode cost, error and tf decode rates per stored format."""
  out: dict[str, dict] = {}
  for source, arrs in arrays.items():
    rows = {}
    for name, enc in _encoders().items():
      blobs = [enc(a) for a in arrs]
      rate = _rates(lambda: len([enc(a) for a in arrs]), repeats)
      if name == "raw_uint8":
        err = 0.0
      else:
        err = float(np.mean([np.abs(np.asarray(Image.open(io.BytesIO(b)),
                                               np.float64) - a).mean()
                             for b, a in zip(blobs, arrs)]))
      # raw needs one shape: crop every image to the smallest one
      if name == "raw_uint8":
        h = min(a.shape[0] for a in arrs)
        w = min(a.shape[1] for a in arrs)
        blobs = [np.ascontiguousarray(a[:h, :w]).tobytes() for a in arrs]
        shape = (h, w)
      else:
        shape = arrs[0].shape
      epochs = max(1, 2000 // len(blobs))
      rows[name] = {
          "kib_per_image": float(np.mean([len(b) for b in blobs]) / 1024),
          "encode": rate, "mean_abs_error": err,
          "tf_decode_1thread": _tf_decode_rates(blobs, name, shape, False,
                                                epochs),
          "tf_decode_autotune": _tf_decode_rates(blobs, name, shape, True,
                                                 epochs)}
    out[source] = {"images": len(arrs), "shape": list(arrs[0].shape),
                   "formats": rows}
  return out


def tfrecord_read(root: str, out: str, size: int) -> dict[str, dict]:
  """Rates of reading + decoding the first image, PNG vs JPEG shards."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from data_prep import mimic_cxr  # pylint: disable=g-import-not-at-top
  rates = {}
  for enc in ("png", "jpeg"):
    d = os.path.join(out, f"enc_{enc}")
    mimic_cxr.convert(mimic_cxr_jpg_dir=os.path.join(root, "mimic-cxr-jpg"),
                      reports_dir=os.path.join(root, "mimic-cxr-reports"),
                      output_dir=d, image_size=size, image_encoding=enc,
                      progress=False)
    builder = tfds.builder_from_directory(d)
    ds = builder.as_dataset(split="train", decoders={
        "images": tfds.decode.SkipDecoding()}).cache()
    n = builder.info.splits["train"].num_examples
    ds = ds.repeat(max(1, 2000 // n)).map(
        lambda ex: tf.io.decode_image(ex["images"][0], channels=1,
                                      expand_animations=False),
        num_parallel_calls=tf.data.AUTOTUNE)
    rates[enc] = _tf_rates(ds.map(lambda x: tf.reduce_sum(tf.cast(
        x[:1], tf.int32))))
  return rates


def run(*, num_subjects: int = 16, image_size: int = 256, repeats: int = 3,
        workers: Sequence[int] = (1, 2), copies: int = 6,
        work_dir: str | None = None, progress: bool = True
        ) -> dict[str, Any]:
  """Runs every measurement (see the module docstring).

  Args:
    num_subjects: synthetic MIMIC subjects to generate at full size.
    image_size: converter output size (shorter side).
    repeats: timing repeats; the best is kept.
    workers: worker counts for the end-to-end conversion.
    copies: the conversion runs on this many copies of the synthetic tree
      (hard links; see `replicate`), so start-up is a small part of it.
    work_dir: scratch directory (default: temporary, removed).
    progress: show a progress bar over the stages.

  Returns:
    The results dict (also what `write` stores).
  """
  from data_prep import images  # pylint: disable=g-import-not-at-top
  from data_prep import synthetic  # pylint: disable=g-import-not-at-top
  from jointcxr.data import features  # pylint: disable=g-import-not-at-top
  tmp = None
  if work_dir is None:
    tmp = tempfile.TemporaryDirectory(prefix="bench_data_prep_")
    work_dir = tmp.name
  stages = tqdm.tqdm(total=6, disable=not progress, desc="bench.data_prep")
  root = os.path.join(work_dir, "synthetic")
  t = time.perf_counter()
  synthetic.generate(root, num_subjects=num_subjects, seed=0,
                     image_size="full", progress=False, localized=False)
  gen_s = time.perf_counter() - t
  stages.update()
  jpgs = sorted(str(p) for p in pathlib.Path(root, "mimic-cxr-jpg",
                                             "files").rglob("*.jpg"))
  result: dict[str, Any] = {
      "config": {"num_subjects": num_subjects, "image_size": image_size,
                 "copies": copies,
                 "repeats": repeats, "workers": list(workers),
                 "cpu_count": os.cpu_count(), "machine": platform.machine(),
                 "python": platform.python_version(),
                 "pillow": Image.__version__,
                 "default_image_encoding": features.DEFAULT_IMAGE_ENCODING,
                 "synthetic_generation_s": gen_s,
                 "load_average_start": list(os.getloadavg())},
      "decode": {"synthetic_full_size": decode_limits(jpgs, image_size,
                                                      repeats)}}
  real = _real_jpeg(work_dir)
  if real:
    result["decode"]["real_cr_dicom_as_jpeg"] = decode_limits(
        [real] * 8, image_size, repeats)
  stages.update()
  big = replicate(root, os.path.join(work_dir, "replicated"), copies)
  result["conversion"] = conversion(big, os.path.join(work_dir, "conv"),
                                    image_size, workers)
  draft = result["decode"]["synthetic_full_size"]["draft_decode"]
  for row in result["conversion"]:
    row["marginal_per_cpu_s_vs_draft_decode"] = (
        row["marginal_images_per_cpu_s"] / draft["per_cpu_s"])
  stages.update()
  arrays = {"synthetic": [images.load_gray(p, image_size)[0][..., 0]
                          for p in jpgs]}
  nih = SHARED_DATA / "nih_cxr14" / "images"
  if nih.is_dir():
    arrays["real_nih_png"] = [images.load_gray(str(p), image_size)[0][..., 0]
                              for p in sorted(nih.glob("*.png"))]
  if real:
    arrays["real_cr_dicom"] = [images.load_gray(real, image_size)[0][..., 0]]
  result["storage"] = storage_formats(arrays, repeats)
  stages.update()
  result["tfrecord_read_decode"] = tfrecord_read(
      root, os.path.join(work_dir, "enc"), image_size)
  stages.update()
  stages.update()
  stages.close()
  result["config"]["load_average_end"] = list(os.getloadavg())
  if tmp is not None:
    tmp.cleanup()
  return result


def _f(x: float, digits: int = 1) -> str:
  return f"{x:,.{digits}f}"


def to_markdown(r: dict[str, Any]) -> str:
  """The results as Markdown tables (rates per CPU second = per core)."""
  c = r["config"]
  load = c["load_average_start"][0], c["load_average_end"][0]
  lines = ["# Data preparation benchmark (`python -m bench.data_prep`)", "",
           f"{c['cpu_count']} CPU cores ({c['machine']}), Pillow "
           f"{c['pillow']}, converter output {c['image_size']} px (shorter "
           f"side); best of {c['repeats']} repeats; one run; 1-min load "
           f"average {_f(load[0])} at the start, {_f(load[1])} at the end. "
           "Rates are per CPU second (= per core; CPU time of this process, "
           "its threads and its worker processes), which stays meaningful "
           "when the cores are shared; wall-clock rates are in "
           "data_prep.json.", "",
           "## Decode-only limits vs the converter's image step "
           "(images per CPU second)", "",
           "| source | images | MiB/img | full decode | draft decode | "
           "draft / full | full decode + resize | converter load_gray "
           "(draft + resize) | + PNG encode | + JPEG encode | draft vs full "
           "after resize: mean abs diff (p99) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for name, d in r["decode"].items():
    cpu = {k: v["per_cpu_s"] for k, v in d.items() if isinstance(v, dict)}
    lines.append(
        f"| {name} {d['source_size'][0]}x{d['source_size'][1]} | "
        f"{d['images']} | {_f(d['source_mib_per_image'], 2)} | "
        f"{_f(cpu['full_decode'])} | {_f(cpu['draft_decode'])} | "
        f"{_f(cpu['draft_decode'] / cpu['full_decode'], 2)}x | "
        f"{_f(cpu['full_decode_resize'])} | "
        f"{_f(cpu['converter_load_gray'])} | "
        f"{_f(cpu['converter_load_gray_png'])} | "
        f"{_f(cpu['converter_load_gray_jpeg'])} | "
        f"{_f(d['draft_vs_full_mean_abs_diff'], 2)} "
        f"({_f(d['draft_vs_full_p99_abs_diff'], 1)}) |")
  lines += ["", "## End-to-end conversion (`data_prep.mimic_cxr.convert`, "
            f"synthetic full-size JPEGs, {c['copies']} hard-linked copies, "
            f"stored as {c['default_image_encoding']})", "",
            "Marginal: (images of the full run - images of a run on a third "
            "of the studies) / (difference of CPU seconds), i.e. without the "
            "fixed start-up (worker processes importing TensorFlow, CSVs, "
            "TFDS metadata).", "",
            "| workers | studies | images | wall s | CPU s | start-up CPU s | "
            "marginal img per CPU s | / draft decode-only (synthetic) |",
            "|---|---|---|---|---|---|---|---|"]
  for row in r["conversion"]:
    lines.append(
        f"| {row['workers']} | {row['studies']} | {row['images']} | "
        f"{_f(row['wall_s'], 1)} | {_f(row['cpu_s'], 1)} | "
        f"{_f(row['startup_cpu_s'], 1)} | "
        f"{_f(row['marginal_images_per_cpu_s'])} | "
        f"{_f(row['marginal_per_cpu_s_vs_draft_decode'], 2)} |")
  lines += ["", "## Stored image format (converted images; rates per CPU "
            "second)", "",
            "| source | format | KiB/img | encode | mean abs error (grey "
            "levels) | tf decode, 1 thread | tf decode, AUTOTUNE |",
            "|---|---|---|---|---|---|---|"]
  for source, s in r["storage"].items():
    for name, f in s["formats"].items():
      lines.append(
          f"| {source} {s['shape'][1]}x{s['shape'][0]} ({s['images']}) | "
          f"{name} | {_f(f['kib_per_image'])} | "
          f"{_f(f['encode']['per_cpu_s'])} | {_f(f['mean_abs_error'], 2)} | "
          f"{_f(f['tf_decode_1thread']['per_cpu_s'])} | "
          f"{_f(f['tf_decode_autotune']['per_cpu_s'])} |")
  rr = r["tfrecord_read_decode"]
  lines += ["", "## Reading converted TFRecords + decoding the first image "
            "(tf.data, AUTOTUNE)", "", "| stored as | examples per CPU s | "
            "examples/s (wall) |", "|---|---|---|"] + [
                f"| {k} | {_f(v['per_cpu_s'])} | {_f(v['per_s'])} |"
                for k, v in rr.items()]
  lines += ["", f"Current default stored format: "
            f"`{c['default_image_encoding']}` (jointcxr/data/features.py).",
            ""]
  return "\n".join(lines)


def write(result: dict[str, Any], output_dir: str) -> tuple[str, str]:
  """Writes data_prep.json and data_prep.md atomically; returns the paths."""
  return report.write_pair(output_dir, "data_prep", result,
                           to_markdown(result))


def main(argv: Sequence[str]) -> None:
  """absl entry point."""
  del argv
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  absl_logging.set_verbosity(absl_logging.WARNING)  # not 1 line per skip
  fl = flags.FLAGS
  result = run(num_subjects=fl.num_subjects, image_size=fl.image_size,
               repeats=fl.repeats, workers=[int(w) for w in fl.workers],
               copies=fl.copies, work_dir=fl.work_dir)
  for path in write(result, fl.output_dir):
    print(path)
  print(to_markdown(result))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
