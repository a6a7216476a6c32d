"""Parallel, atomic, resumable TFRecord shard writing + manifest + TFDS metadata.

Every converter describes its work as shards: a shard is a list of plain
items (paths, texts, labels) plus an `encode` function that turns one item
into an example dict (or a `Skip`). Shards are processed by a worker pool;
each shard file is written to a temporary name and renamed into place, and
`.progress.json` records finished shards with their sha256, so a converter
killed at any point resumes where it stopped and produces byte-identical
output. At the end, TFDS metadata is written (`tfds.builder_from_directory`
loads the directory) together with `manifest.json`: examples written per
split, skips by reason, shard hashes, the arguments and versions.
"""

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
from typing import Any, Callable, Sequence

import tqdm

TOOL_VERSION = "jointcxr-data_prep/1"
_PROGRESS = ".progress.json"


@dataclasses.dataclass(frozen=True)
class Skip:
  """An item that is not written, with a named reason (and notes so far)."""
  reason: str
  item_id: str
  notes: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ShardJob:
  """One output shard: its file name, split and items."""
  split: str
  filename: str
  items: list


class ConversionError(RuntimeError):
  """Continuing would be wrong (e.g. input files missing entirely)."""


def sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def atomic_write_text(path: str, text: str) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def plan_shards(name: str, split: str, items: Sequence,
                examples_per_shard: int) -> list[ShardJob]:
  """Contiguous, deterministic shards named the TFDS way."""
  n = max(1, -(-len(items) // max(1, examples_per_shard)))
  bounds = [round(i * len(items) / n) for i in range(n + 1)]
  return [ShardJob(split, f"{name}-{split}.tfrecord-{i:05d}-of-{n:05d}",
                   list(items[bounds[i]:bounds[i + 1]])) for i in range(n)]


# Set in each worker by _init: (encode function, features).
_WORKER: dict[str, Any] = {}


def _init(encode: Callable, features_fn: Callable) -> None:
  import os as _os  # pylint: disable=g-import-not-at-top,reimported
  _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  _WORKER["encode"] = encode
  _WORKER["features"] = features_fn()


def _write_shard(args: tuple[ShardJob, str]) -> dict:
  """Encodes and writes one shard; returns its record for the manifest."""
  job, out_dir = args
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  encode, features = _WORKER["encode"], _WORKER["features"]
  tmp = os.path.join(out_dir, f".{job.filename}.tmp")
  skipped: dict[str, int] = {}
  skipped_ids: list[tuple[str, str]] = []
  notes: dict[str, int] = {}
  count = 0
  with tf.io.TFRecordWriter(tmp) as w:
    for item in job.items:
      result = encode(item)
      if isinstance(result, Skip):
        skipped[result.reason] = skipped.get(result.reason, 0) + 1
        skipped_ids.append((result.item_id, result.reason))
        example, item_notes = None, result.notes
      else:
        example, item_notes = result
      for k, v in item_notes.items():
        notes[k] = notes.get(k, 0) + v
      if example is not None:
        w.write(features.serialize_example(example))
        count += 1
  os.replace(tmp, os.path.join(out_dir, job.filename))
  return {"filename": job.filename, "split": job.split, "examples": count,
          "sha256": sha256(os.path.join(out_dir, job.filename)),
          "skipped": skipped, "skipped_ids": skipped_ids, "notes": notes}


def _load_progress(out_dir: str, args_key: str) -> dict[str, dict]:
  path = os.path.join(out_dir, _PROGRESS)
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      prog = json.load(f)
  except (OSError, ValueError):
    return {}
  if prog.get("args_key") != args_key:
    return {}
  return prog.get("shards", {})


def run(*, name: str, out_dir: str, jobs: list[ShardJob], encode: Callable,
        features_fn: Callable, args: dict, num_workers: int = 1,
        pre_skipped: Sequence[Skip] = (), progress: bool = True,
        overwrite: bool = False, extra_manifest: dict | None = None) -> dict:
  """Writes all shards (resuming), the TFDS metadata and manifest.json.

  Args:
    name: dataset name (file prefix).
    out_dir: output directory.
    jobs: from `plan_shards`, all splits together.
    encode: item -> (example dict, notes dict) or Skip. Must be picklable
      (a module-level function) when num_workers > 1.
    features_fn: () -> the tfds FeaturesDict (built in each worker).
    args: the conversion arguments (recorded; changing them restarts).
    num_workers: worker processes.
    pre_skipped: skips decided while planning (e.g. missing reports).
    progress: show a progress bar.
    overwrite: ignore any previous (partial) output.
    extra_manifest: more keys for manifest.json.

  Returns:
    The manifest dict.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  args_key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()
                            ).hexdigest()
  done = {} if overwrite else _load_progress(out_dir, args_key)
  # A finished shard is kept only if its bytes still match the recorded hash.
  for fname in list(done):
    path = os.path.join(out_dir, fname)
    if not os.path.exists(path) or sha256(path) != done[fname]["sha256"]:
      logging.warning("shard %s missing or corrupt; rewriting it", fname)
      del done[fname]
  todo = [j for j in jobs if j.filename not in done]
  wanted = {j.filename for j in jobs}
  for fname in os.listdir(out_dir):  # stale shards of an older plan
    if fname.startswith(f"{name}-") and ".tfrecord-" in fname and (
        fname not in wanted):
      os.remove(os.path.join(out_dir, fname))

  def save_progress():
    atomic_write_text(os.path.join(out_dir, _PROGRESS), json.dumps(
        {"args_key": args_key, "shards": done}, indent=1, sort_keys=True))

  save_progress()
  bar = tqdm.tqdm(total=sum(len(j.items) for j in jobs), disable=not progress,
                  desc=f"converting {name}", unit="ex")
  bar.update(sum(len(j.items) for j in jobs if j.filename in done))
  tasks = [(j, out_dir) for j in todo]
  if num_workers > 1 and len(tasks) > 1:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(num_workers, initializer=_init,
                  initargs=(encode, features_fn)) as pool:
      for rec, job in zip(pool.imap(_write_shard, tasks), todo):
        done[rec["filename"]] = rec
        save_progress()
        bar.update(len(job.items))
  else:
    _init(encode, features_fn)
    for task, job in zip(tasks, todo):
      rec = _write_shard(task)
      done[rec["filename"]] = rec
      save_progress()
      bar.update(len(job.items))
  bar.close()

  # Manifest: counts, skips by reason (+ every skipped id), shard hashes.
  written: dict[str, int] = {}
  skipped: dict[str, int] = {}
  notes: dict[str, int] = {}
  skipped_ids = [(s.item_id, s.reason) for s in pre_skipped]
  for s in pre_skipped:
    skipped[s.reason] = skipped.get(s.reason, 0) + 1
  split_files: dict[str, list[dict]] = {}
  for job in jobs:
    rec = done[job.filename]
    written[job.split] = written.get(job.split, 0) + rec["examples"]
    split_files.setdefault(job.split, []).append(rec)
    for k, v in rec["skipped"].items():
      skipped[k] = skipped.get(k, 0) + v
    for k, v in rec["notes"].items():
      notes[k] = notes.get(k, 0) + v
    skipped_ids += [tuple(x) for x in rec["skipped_ids"]]
  for item_id, reason in skipped_ids:
    logging.info("skipped %s: %s", item_id, reason)
  _write_tfds_metadata(tfds, out_dir, name, features_fn(), split_files)
  manifest = {
      "dataset": name, "written": written, "skipped": skipped,
      "notes": notes, "total_written": sum(written.values()),
      "total_skipped": sum(skipped.values()),
      "shards": {r["filename"]: {"sha256": r["sha256"],
                                 "examples": r["examples"]}
                 for recs in split_files.values() for r in recs},
      "args": args, "schema_version": _schema_version(),
      "tool_version": TOOL_VERSION, **(extra_manifest or {})}
  atomic_write_text(os.path.join(out_dir, "manifest.json"),
                    json.dumps(manifest, indent=2, sort_keys=True))
  with open(os.path.join(out_dir, "skipped.csv.tmp"), "w") as f:
    f.write("id,reason\n")
    for item_id, reason in sorted(skipped_ids):
      f.write(f"{item_id},{reason}\n")
  os.replace(os.path.join(out_dir, "skipped.csv.tmp"),
             os.path.join(out_dir, "skipped.csv"))
  return manifest


def _schema_version() -> str:
  from jointcxr.data import features  # pylint: disable=g-import-not-at-top
  return features.SCHEMA_VERSION


def _write_tfds_metadata(tfds, out_dir, name, features, split_files) -> None:
  split_infos = []
  for split, recs in split_files.items():
    recs = sorted(recs, key=lambda r: r["filename"])
    template = tfds.core.ShardedFileTemplate(
        data_dir=out_dir, template="{DATASET}-{SPLIT}.{FILEFORMAT}-"
        "{SHARD_X_OF_Y}", dataset_name=name, split=split,
        filetype_suffix="tfrecord")
    split_infos.append(tfds.core.SplitInfo(
        name=split, shard_lengths=[r["examples"] for r in recs],
        num_bytes=sum(os.path.getsize(os.path.join(out_dir, r["filename"]))
                      for r in recs), filename_template=template))
  tfds.folder_dataset.write_metadata(
      data_dir=out_dir, features=features, split_infos=split_infos,
      filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
      check_data=False, version="1.0.0")
