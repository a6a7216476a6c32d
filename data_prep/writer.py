"""Parallel, atomic, resumable TFRecord shards + manifest + TFDS metadata.

Every converter describes its work as shards: a shard is a list of plain
items (paths, texts, labels) plus an `encode` function that turns one item
into `(example dict, notes)` or a `Skip`. Shards are processed by a pool of
worker processes; each shard is written to a hidden temporary file and
renamed into place, and `.progress.json` records every finished shard with
its sha256 and a fingerprint of its items. A converter killed at any point
therefore resumes where it stopped: finished shards whose bytes still match
their hash are kept, missing or corrupt ones are rewritten, and because the
plan is deterministic the result is byte-identical to an uninterrupted run.
Resuming assumes the input files did not change in place; pass
`overwrite=True` (`--overwrite`) after editing inputs.

At the end the TFDS metadata is written (`tfds.builder_from_directory`
loads every split) together with `manifest.json` (examples written per
split, skips by reason, notes, shard hashes, arguments, versions) and
`skipped.csv` (every skipped id with its reason; never report text). The
log gets one line per skip reason with its count; the per-item lines (a
real MIMIC-CXR conversion skips ~9,000 studies) are logged by the
`data_prep.skipped` logger, silent unless `--verbose`.
"""

import dataclasses
import hashlib
import io
import json
import logging
import multiprocessing
import os
import sys
import traceback
from typing import Any, Callable, Sequence

import numpy as np
import tqdm

TOOL_VERSION = "jointcxr-data_prep/2"
PROGRESS_FILE = ".progress.json"
# An item whose encoding raises is recorded under this reason (with the
# exception type) instead of killing a conversion of 377k studies.
ENCODE_ERROR = "encode_error"


# One line per skipped item; quiet (WARNING) unless --verbose sets INFO.
SKIP_LOG = logging.getLogger("data_prep.skipped")
SKIP_LOG.setLevel(logging.WARNING)


class ConversionError(RuntimeError):
  """Continuing would be wrong (e.g. an input directory is missing)."""


@dataclasses.dataclass(frozen=True)
class Skip:
  """An item that is not written, with a named reason (and notes so far)."""
  reason: str
  item_id: str
  notes: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ShardJob:
  """One output shard: its split, TFDS-style file name and items."""
  split: str
  filename: str
  items: list

  def fingerprint(self) -> str:
    """A hash of the items, so a changed plan is never mistaken for done."""
    return hashlib.sha256(repr(self.items).encode()).hexdigest()


def sha256(path: str) -> str:
  """Hex sha256 of a file's bytes."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` to a temporary file, then renames it over `path`."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def encode_image(arr: np.ndarray, encoding: str, *, png_compress_level: int
                 = 6, jpeg_quality: int = 95) -> bytes:
  """[H, W] or [H, W, 1] uint8 -> PNG or JPEG bytes (deterministic).

  Encoding with PIL here instead of letting TFDS run `tf.image.encode_*`
  per image is faster (see bench/data_prep.py) and lets us choose the PNG
  compression level and JPEG quality.

  Args:
    arr: 8-bit grayscale image.
    encoding: "png" or "jpeg".
    png_compress_level: zlib level 0-9 for PNG.
    jpeg_quality: JPEG quality 1-95.

  Returns:
    The encoded bytes.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  img = Image.fromarray(np.asarray(arr, np.uint8).reshape(arr.shape[:2]))
  buf = io.BytesIO()
  if encoding == "png":
    img.save(buf, format="PNG", compress_level=png_compress_level)
  elif encoding == "jpeg":
    img.save(buf, format="JPEG", quality=jpeg_quality)
  else:
    raise ValueError(f"image encoding must be png or jpeg, got {encoding!r}")
  return buf.getvalue()


def plan_shards(name: str, split: str, items: Sequence,
                examples_per_shard: int) -> list[ShardJob]:
  """Contiguous, deterministic shards named the TFDS way.

  Args:
    name: dataset name (file prefix).
    split: split name.
    items: the split's items, in their final order.
    examples_per_shard: target items per shard (sizes differ by at most 1).

  Returns:
    `ceil(len(items) / examples_per_shard)` jobs (at least one).
  """
  n = max(1, -(-len(items) // max(1, examples_per_shard)))
  bounds = [round(i * len(items) / n) for i in range(n + 1)]
  return [ShardJob(split, f"{name}-{split}.tfrecord-{i:05d}-of-{n:05d}",
                   list(items[bounds[i]:bounds[i + 1]])) for i in range(n)]


# Set in each worker by _init: encode function, id function, features.
_WORKER: dict[str, Any] = {}


def _init(encode: Callable, id_of: Callable, features_fn: Callable) -> None:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if multiprocessing.parent_process() is not None:  # a spawned worker
    logging.basicConfig(level=logging.WARNING,
                        format="%(levelname)s %(message)s")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  features = features_fn()
  _WORKER.update(encode=encode, id_of=id_of, features=features,
                 serializer=tfds.core.example_serializer.ExampleSerializer(
                     features.get_serialized_info()))


def serialize(example: dict) -> bytes:
  """A tf.train.Example's bytes, identical in every process.

  `FeaturesDict.serialize_example` writes the proto's feature map in hash
  order, which differs between processes (string hashing is randomised),
  so a shard written by a worker or by a resumed run would not match one
  written here. Deterministic serialisation sorts the map keys.
  """
  features = _WORKER["features"]
  proto = _WORKER["serializer"].get_tf_example(
      features.encode_example(example))
  return proto.SerializeToString(deterministic=True)


def _encode_one(item) -> tuple[dict | None, dict, Skip | None, bytes | None]:
  """Runs the converter's encode and serialises; errors become skips."""
  try:
    result = _WORKER["encode"](item)
    if isinstance(result, Skip):
      return None, result.notes, result, None
    example, notes = result
    return example, notes, None, serialize(example)
  except Exception as e:  # pylint: disable=broad-except
    # One odd file must not kill a days-long conversion; the error is named,
    # counted and logged with where it happened. Not its message: a text
    # library's message could quote the report.
    item_id = _WORKER["id_of"](item)
    frame = traceback.extract_tb(e.__traceback__)[-1]
    logging.warning("%s: %s raised at %s:%d", item_id, type(e).__name__,
                    os.path.basename(frame.filename), frame.lineno)
    return None, {}, Skip(f"{ENCODE_ERROR}_{type(e).__name__}", item_id), None


def _write_shard(args: tuple[ShardJob, str]) -> dict:
  """Encodes and writes one shard; returns its record for the manifest."""
  job, out_dir = args
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tmp = os.path.join(out_dir, f".{job.filename}.tmp")
  skipped: dict[str, int] = {}
  skipped_ids: list[tuple[str, str]] = []
  notes: dict[str, int] = {}
  count = 0
  with tf.io.TFRecordWriter(tmp) as w:
    for item in job.items:
      _, item_notes, skip, record = _encode_one(item)
      if skip is not None:
        skipped[skip.reason] = skipped.get(skip.reason, 0) + 1
        skipped_ids.append((skip.item_id, skip.reason))
      for k, v in item_notes.items():
        notes[k] = notes.get(k, 0) + v
      if record is not None:
        w.write(record)
        count += 1
  os.replace(tmp, os.path.join(out_dir, job.filename))
  return {"filename": job.filename, "split": job.split, "examples": count,
          "sha256": sha256(os.path.join(out_dir, job.filename)),
          "fingerprint": job.fingerprint(), "skipped": skipped,
          "skipped_ids": skipped_ids, "notes": notes}


def _load_progress(out_dir: str, args_key: str) -> dict[str, dict]:
  path = os.path.join(out_dir, PROGRESS_FILE)
  if not os.path.exists(path):
    return {}
  try:
    with open(path, encoding="utf-8") as f:
      prog = json.load(f)
  except (OSError, ValueError):
    logging.warning("%s unreadable; rewriting every shard", path)
    return {}
  if prog.get("args_key") != args_key:
    logging.warning("arguments changed since the last run in %s; rewriting "
                    "every shard", out_dir)
    return {}
  return prog.get("shards", {})


def _verified(done: dict[str, dict], jobs: list[ShardJob], out_dir: str
              ) -> dict[str, dict]:
  """Keeps finished shards whose items and bytes are unchanged."""
  by_name = {j.filename: j for j in jobs}
  kept = {}
  for fname, rec in done.items():
    path = os.path.join(out_dir, fname)
    job = by_name.get(fname)
    if job is None:
      continue
    if rec.get("fingerprint") != job.fingerprint():
      logging.warning("shard %s: its inputs changed; rewriting it", fname)
    elif not os.path.exists(path):
      logging.warning("shard %s: missing; rewriting it", fname)
    elif sha256(path) != rec["sha256"]:
      logging.warning("shard %s: sha256 mismatch (corrupt); rewriting it",
                      fname)
    else:
      kept[fname] = rec
  return kept


def _remove_stale(out_dir: str, name: str, jobs: list[ShardJob]) -> None:
  """Deletes shards of an older plan and temporaries of a killed run."""
  wanted = {j.filename for j in jobs}
  for fname in os.listdir(out_dir):
    is_shard = fname.startswith(f"{name}-") and ".tfrecord-" in fname
    is_tmp = fname.startswith(f".{name}-") and fname.endswith(".tmp")
    if (is_shard and fname not in wanted) or is_tmp:
      os.remove(os.path.join(out_dir, fname))


def run(*, name: str, out_dir: str, jobs: list[ShardJob], encode: Callable,
        features_fn: Callable, args: dict, id_of: Callable = str,
        num_workers: int = 1, pre_skipped: Sequence[Skip] = (),
        pre_notes: dict[str, int] | None = None,
        derived_splits: Sequence[str] = (), progress: bool = True,
        overwrite: bool = False, extra_manifest: dict | None = None,
        description: str = "") -> dict:
  """Writes all shards (resuming), the TFDS metadata and manifest.json.

  Args:
    name: dataset name (file prefix and TFDS name).
    out_dir: output directory (created).
    jobs: from `plan_shards`, all splits together.
    encode: item -> (example dict, notes dict) or Skip. Must be picklable
      (a module-level function or a partial of one) when num_workers > 1.
    features_fn: () -> the tfds FeaturesDict (built in each worker).
    args: the conversion arguments (recorded; changing them restarts).
    id_of: item -> id string, used to name items whose encoding raised.
    num_workers: worker processes (1: in this process).
    pre_skipped: skips decided while planning (e.g. missing reports).
    pre_notes: counts noted while planning (kept items with a remark).
    derived_splits: splits whose items are copies of items of other splits
      (label-fraction subsets of train): written, but their skips and notes
      are not counted again.
    progress: show a tqdm progress bar.
    overwrite: ignore any previous (partial) output.
    extra_manifest: more keys for manifest.json.
    description: TFDS dataset description.

  Returns:
    The manifest dict (also written to `out_dir/manifest.json`).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  args_key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()
                            ).hexdigest()
  done = {} if overwrite else _verified(_load_progress(out_dir, args_key),
                                        jobs, out_dir)
  _remove_stale(out_dir, name, jobs)
  todo = [j for j in jobs if j.filename not in done]

  def save_progress():
    atomic_write_text(os.path.join(out_dir, PROGRESS_FILE), json.dumps(
        {"args_key": args_key, "shards": done}, indent=1, sort_keys=True))

  save_progress()
  bar = tqdm.tqdm(total=sum(len(j.items) for j in jobs), disable=not progress,
                  desc=f"converting {name}", unit="ex")
  bar.update(sum(len(j.items) for j in jobs if j.filename in done))
  tasks = [(j, out_dir) for j in todo]
  if num_workers > 1 and len(tasks) > 1:
    # spawn: forked TensorFlow state is not safe to reuse in children.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(num_workers, len(tasks)), initializer=_init,
                  initargs=(encode, id_of, features_fn)) as pool:
      for rec, job in zip(pool.imap(_write_shard, tasks), todo):
        done[rec["filename"]] = rec
        save_progress()
        bar.update(len(job.items))
  else:
    _init(encode, id_of, features_fn)
    for task, job in zip(tasks, todo):
      rec = _write_shard(task)
      done[rec["filename"]] = rec
      save_progress()
      bar.update(len(job.items))
  bar.close()
  manifest, skipped_ids = _manifest(name, jobs, done, pre_skipped,
                                    pre_notes or {}, args,
                                    set(derived_splits))
  manifest.update(extra_manifest or {})
  for item_id, reason in skipped_ids:
    SKIP_LOG.info("skipped %s: %s", item_id, reason)
  for reason, n in sorted(manifest["skipped"].items()):
    logging.info("skipped %d x %s (ids in skipped.csv; --verbose lists "
                 "them)", n, reason)
  _write_tfds_metadata(tfds, out_dir, name, features_fn(), jobs, done,
                       description)
  lines = ["id,reason"] + [f"{_csv_field(i)},{r}" for i, r in
                           sorted(skipped_ids)]
  atomic_write_text(os.path.join(out_dir, "skipped.csv"),
                    "\n".join(lines) + "\n")
  atomic_write_text(os.path.join(out_dir, "manifest.json"),
                    json.dumps(manifest, indent=2, sort_keys=True))
  return manifest


def _csv_field(text: str) -> str:
  return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(
      c in text for c in ',"\n') else text


def _manifest(name: str, jobs: list[ShardJob], done: dict[str, dict],
              pre_skipped: Sequence[Skip], pre_notes: dict[str, int],
              args: dict, derived: set[str]
              ) -> tuple[dict, list[tuple[str, str]]]:
  """Counts written / skipped / noted, shard hashes, args, versions."""
  from jointcxr.data import features  # pylint: disable=g-import-not-at-top
  written: dict[str, int] = {}
  skipped: dict[str, int] = {}
  notes: dict[str, int] = dict(pre_notes)
  skipped_ids = [(s.item_id, s.reason) for s in pre_skipped]
  for s in pre_skipped:
    skipped[s.reason] = skipped.get(s.reason, 0) + 1
  shards = {}
  for job in jobs:
    rec = done[job.filename]
    written[job.split] = written.get(job.split, 0) + rec["examples"]
    shards[job.filename] = {"sha256": rec["sha256"], "split": job.split,
                            "examples": rec["examples"]}
    if job.split in derived:
      continue  # its items were counted in the split they come from
    for k, v in rec["skipped"].items():
      skipped[k] = skipped.get(k, 0) + v
    for k, v in rec["notes"].items():
      notes[k] = notes.get(k, 0) + v
    skipped_ids += [tuple(x) for x in rec["skipped_ids"]]
  return {
      "dataset": name, "written": written, "skipped": skipped, "notes": notes,
      "total_written": sum(written.values()),
      "total_skipped": sum(skipped.values()), "shards": shards,
      "args": args, "schema_version": features.SCHEMA_VERSION,
      "tool_version": TOOL_VERSION, "skipped_list": "skipped.csv"
  }, skipped_ids


def _write_tfds_metadata(tfds, out_dir: str, name: str, features,
                         jobs: list[ShardJob], done: dict[str, dict],
                         description: str) -> None:
  split_jobs: dict[str, list[ShardJob]] = {}
  for job in jobs:
    split_jobs.setdefault(job.split, []).append(job)
  split_infos = []
  for split, sjobs in split_jobs.items():
    sjobs = sorted(sjobs, key=lambda j: j.filename)
    template = tfds.core.ShardedFileTemplate(
        data_dir=out_dir, template="{DATASET}-{SPLIT}.{FILEFORMAT}-"
        "{SHARD_X_OF_Y}", dataset_name=name, split=split,
        filetype_suffix="tfrecord")
    split_infos.append(tfds.core.SplitInfo(
        name=split, shard_lengths=[done[j.filename]["examples"]
                                   for j in sjobs],
        num_bytes=sum(os.path.getsize(os.path.join(out_dir, j.filename))
                      for j in sjobs), filename_template=template))
  tfds.folder_dataset.write_metadata(
      data_dir=out_dir, features=features, split_infos=split_infos,
      filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
      check_data=False, version="1.0.0", description=description)


def summary(manifest: dict, out_dir: str) -> str:
  """A short human summary of a manifest (two lines)."""
  return (f"written {manifest['written']}; skipped {manifest['skipped']}; "
          f"notes {manifest['notes']}\n"
          f"output: {out_dir} (manifest.json, skipped.csv)")


def cli(argv: Sequence[str], *, doc: str,
        define: Callable[[Any], None],
        convert: Callable[[Any], dict], required: Sequence[str]) -> int:
  """Shared converter CLI: absl flags, logging, one-line errors.

  Args:
    argv: sys.argv.
    doc: the converter's module docstring (printed by --help).
    define: defines the converter's flags on the given absl FlagValues.
    convert: runs the conversion from the parsed FlagValues; returns the
      manifest.
    required: flags that must be set.

  Returns:
    The exit status: 0 done, 2 bad input (one line on stderr), 3 an
    unexpected error (one line; --traceback shows it), 130 interrupted.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  fl = flags.FlagValues()
  define(fl)
  flags.DEFINE_bool("traceback", False, "Show the traceback of an "
                    "unexpected error instead of one line.", flag_values=fl)
  flags.DEFINE_bool("verbose", False, "Log every skipped item on its own "
                    "line (default: one line per reason; skipped.csv lists "
                    "every id either way).", flag_values=fl)
  if any(a in ("--help", "-h", "--helpfull") for a in argv[1:]):
    print(doc.strip() + "\n\nflags:\n" + fl.get_help())
    return 0
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s",
                      stream=sys.stderr)
  logging.getLogger("absl").setLevel(logging.WARNING)
  try:
    fl(list(argv))
    SKIP_LOG.setLevel(logging.INFO if fl["verbose"].value else
                      logging.WARNING)
    missing = [n for n in required if fl[n].value in (None, "")]
    if missing:
      raise ConversionError(
          " and ".join(f"--{n}" for n in missing) + " required")
    manifest = convert(fl)
  except (ConversionError, flags.Error, OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted: re-run the same command to resume", file=sys.stderr)
    return 130
  except Exception as e:  # pylint: disable=broad-except
    if fl["traceback"].value:
      raise
    print(f"error: unexpected {type(e).__name__}: {e} (re-run with "
          "--traceback to see where)", file=sys.stderr)
    return 3
  print(summary(manifest, fl["output_dir"].value))
  return 0
