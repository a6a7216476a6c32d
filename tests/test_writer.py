"""The shared shard writer: TFDS loading, manifest, resume, CLI errors."""

import csv
import hashlib
import io
import json
import logging
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from data_prep import writer

NAME = "toy"
CALLS = []  # ids passed to `toy_encode`, to see what a resume re-encodes
KILL_AT = set()  # ids at which `toy_encode` simulates a kill


def toy_features():
  return tfds.features.FeaturesDict({
      "id": tfds.features.Text(),
      "x": tfds.features.Tensor(shape=(3,), dtype=np.float32)})


def toy_encode(item):
  """"bad*" items are skipped, "boom*" items raise, KILL_AT interrupts."""
  CALLS.append(item["id"])
  if item["id"].startswith("bad"):
    return writer.Skip("bad_item", item["id"])
  if item["id"].startswith("boom"):
    raise ValueError("cannot encode\nsecond line")
  if item["id"] in KILL_AT:
    raise KeyboardInterrupt  # a kill in the middle of a shard
  notes = {"odd": 1} if int(item["v"]) % 2 else {}
  return {"id": item["id"], "x": np.full(3, item["v"], np.float32)}, notes


def _items(split, n):
  return [{"id": f"{split}{i}", "v": float(i)} for i in range(n)]


def _jobs(items_by_split, per_shard=4):
  return [j for s, its in items_by_split.items()
          for j in writer.plan_shards(NAME, s, its, per_shard)]


def _run(out, jobs, **kw):
  kw.setdefault("args", {"a": 1})
  return writer.run(name=NAME, out_dir=str(out), jobs=jobs,
                    encode=toy_encode, features_fn=toy_features,
                    id_of=lambda it: it["id"], progress=False, **kw)


def _shard_bytes(out):
  return {f: (out / f).read_bytes() for f in sorted(os.listdir(out))
          if ".tfrecord-" in f}


def test_plan_shards_is_contiguous_balanced_and_tfds_named():
  items = list(range(10))
  jobs = writer.plan_shards("ds", "train", items, 3)
  assert len(jobs) == 4  # ceil(10 / 3)
  assert [x for j in jobs for x in j.items] == items
  sizes = [len(j.items) for j in jobs]
  assert max(sizes) - min(sizes) <= 1
  assert [j.filename for j in jobs] == [
      f"ds-train.tfrecord-{i:05d}-of-00004" for i in range(4)]
  assert len(writer.plan_shards("ds", "test", [], 3)) == 1


def test_manifest_counts_hashes_and_tfds_loads_every_split(tmp_path):
  by_split = {"train": _items("train", 9) + [{"id": "bad1", "v": 0.0}],
              "test": _items("test", 3) + [{"id": "boom1", "v": 0.0}]}
  m = _run(tmp_path, _jobs(by_split),
           pre_skipped=[writer.Skip("planned_out", "p1")],
           pre_notes={"planned_note": 2})
  assert m["written"] == {"train": 9, "test": 3}
  assert m["skipped"] == {"bad_item": 1, "encode_error_ValueError": 1,
                          "planned_out": 1}
  # "odd" noted for v = 1, 3, 5, 7 (train) and 1 (test)
  assert m["notes"] == {"odd": 5, "planned_note": 2}
  assert m["args"] == {"a": 1} and m["tool_version"] == writer.TOOL_VERSION
  for fname, rec in m["shards"].items():
    digest = hashlib.sha256((tmp_path / fname).read_bytes()).hexdigest()
    assert rec["sha256"] == digest
  assert json.loads((tmp_path / "manifest.json").read_text()) == m
  builder = tfds.builder_from_directory(str(tmp_path))
  for split, n in m["written"].items():
    exs = list(tfds.as_numpy(builder.as_dataset(split=split,
                                                shuffle_files=False)))
    assert [e["id"].decode() for e in exs] == [f"{split}{i}" for i in
                                                range(n)]
    np.testing.assert_array_equal(exs[2]["x"], [2.0, 2.0, 2.0])
  with open(tmp_path / "skipped.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert sorted((r["id"], r["reason"]) for r in rows) == [
      ("bad1", "bad_item"), ("boom1", "encode_error_ValueError"),
      ("p1", "planned_out")]


def test_skips_are_logged_one_line_per_reason(tmp_path, caplog):
  caplog.set_level(logging.INFO)
  jobs = _jobs({"train": _items("train", 2) + [
      {"id": "boom7", "v": 0.0}, {"id": "bad1", "v": 0.0},
      {"id": "bad2", "v": 0.0}]})
  _run(tmp_path, jobs)
  lines = [r.getMessage() for r in caplog.records]
  assert [m for m in lines if m.startswith("skipped ")] == [
      "skipped 2 x bad_item (ids in skipped.csv; --verbose lists them)",
      "skipped 1 x encode_error_ValueError (ids in skipped.csv; --verbose "
      "lists them)"]
  # --verbose (the data_prep.skipped logger at INFO): one line per item too.
  caplog.clear()
  caplog.set_level(logging.INFO, logger="data_prep.skipped")
  _run(tmp_path / "v", jobs)
  lines = [r.getMessage() for r in caplog.records]
  assert "skipped boom7: encode_error_ValueError" in lines
  assert "skipped bad2: bad_item" in lines
  # where it happened, never the message (it could quote a report)
  assert [m for m in lines if m.startswith("boom7: ValueError raised at "
                                           "test_writer.py:")]
  assert not [m for m in lines if "cannot encode" in m]


def test_kill_mid_run_then_resume_is_byte_identical(tmp_path):
  by_split = {"train": _items("train", 12), "test": _items("test", 4)}
  clean = _run(tmp_path / "clean", _jobs(by_split))
  # Interrupt inside the 3rd train shard (items train8..train11).
  KILL_AT.add("train9")
  try:
    with pytest.raises(KeyboardInterrupt):
      _run(tmp_path / "b", _jobs(by_split))
  finally:
    KILL_AT.clear()
  assert (tmp_path / "b" / ".toy-train.tfrecord-00002-of-00003.tmp").exists()
  assert not (tmp_path / "b" / "toy-train.tfrecord-00002-of-00003").exists()
  CALLS.clear()
  again = _run(tmp_path / "b", _jobs(by_split))
  # Only the unfinished shards are encoded again.
  assert CALLS == [f"train{i}" for i in range(8, 12)] + [
      f"test{i}" for i in range(4)]
  assert again == clean
  assert _shard_bytes(tmp_path / "b") == _shard_bytes(tmp_path / "clean")
  assert not [f for f in os.listdir(tmp_path / "b") if f.endswith(".tmp")]


def test_corrupt_or_missing_shards_are_detected_and_rewritten(tmp_path,
                                                              caplog):
  jobs = _jobs({"train": _items("train", 12)})
  first = _run(tmp_path, jobs)
  original = _shard_bytes(tmp_path)
  names = sorted(original)
  with open(tmp_path / names[0], "r+b") as f:
    f.seek(20)
    byte = f.read(1)
    f.seek(20)
    f.write(bytes([byte[0] ^ 0xFF]))
  os.remove(tmp_path / names[2])
  CALLS.clear()
  caplog.set_level(logging.WARNING)
  again = _run(tmp_path, jobs)
  assert CALLS == ["train0", "train1", "train2", "train3", "train8",
                   "train9", "train10", "train11"]
  assert again == first and _shard_bytes(tmp_path) == original
  msgs = [r.getMessage() for r in caplog.records]
  assert f"shard {names[0]}: sha256 mismatch (corrupt); rewriting it" in msgs
  assert f"shard {names[2]}: missing; rewriting it" in msgs


def test_changed_items_args_or_overwrite_rewrite(tmp_path):
  items = _items("train", 8)
  _run(tmp_path, _jobs({"train": items}))
  CALLS.clear()
  changed = [dict(it) for it in items]
  changed[5]["v"] = 50.0  # second shard's inputs changed
  m = _run(tmp_path, _jobs({"train": changed}))
  assert CALLS == [f"train{i}" for i in range(4, 8)]
  exs = list(tfds.as_numpy(tfds.builder_from_directory(str(
      tmp_path)).as_dataset(split="train", shuffle_files=False)))
  assert exs[5]["x"][0] == 50.0 and m["written"]["train"] == 8
  CALLS.clear()
  _run(tmp_path, _jobs({"train": changed}), args={"a": 2})
  assert len(CALLS) == 8  # other arguments: everything again
  CALLS.clear()
  _run(tmp_path, _jobs({"train": changed}), args={"a": 2}, overwrite=True)
  assert len(CALLS) == 8


def test_stale_shards_of_an_older_plan_and_temporaries_are_removed(tmp_path):
  _run(tmp_path, _jobs({"train": _items("train", 8)}, per_shard=2))
  (tmp_path / ".toy-train.tfrecord-00000-of-00002.tmp").write_bytes(b"x")
  _run(tmp_path, _jobs({"train": _items("train", 8)}, per_shard=4))
  left = sorted(f for f in os.listdir(tmp_path) if "tfrecord" in f)
  assert left == ["toy-train.tfrecord-00000-of-00002",
                  "toy-train.tfrecord-00001-of-00002"]
  assert tfds.builder_from_directory(str(tmp_path)).info.splits[
      "train"].num_examples == 8


def test_encode_image_png_lossless_jpeg_close_and_bad_name():
  rng = np.random.default_rng(0)
  img = (np.add.outer(np.arange(40), np.arange(30)) * 3 % 256).astype(
      np.uint8)
  img = np.clip(img + rng.integers(0, 3, img.shape), 0, 255).astype(np.uint8)
  png = writer.encode_image(img[..., None], "png")
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), img)
  assert writer.encode_image(img, "png") == png  # deterministic
  jpg = np.asarray(Image.open(io.BytesIO(writer.encode_image(img, "jpeg"))),
                   np.float64)
  assert np.sqrt(np.mean((jpg - img) ** 2)) < 4.0
  with pytest.raises(ValueError, match="image encoding must be png or jpeg, "
                     "got 'gif'"):
    writer.encode_image(img, "gif")


def _toy_cli(argv, convert):
  from absl import flags  # pylint: disable=g-import-not-at-top

  def define(fl):
    flags.DEFINE_string("output_dir", None, "out", flag_values=fl)
    flags.DEFINE_integer("n", 1, "n", flag_values=fl)

  return writer.cli(["prog"] + argv, doc="Toy converter.", define=define,
                    convert=convert, required=("output_dir",))


def test_cli_one_line_errors_and_exit_codes(capsys):
  def ok(fl):
    return {"written": {"train": fl.n}, "skipped": {}, "notes": {}}

  def bad(fl):
    raise writer.ConversionError(f"{fl.output_dir}/x.csv: file not found")

  def bug(fl):
    raise KeyError("oops")

  def interrupted(fl):
    raise KeyboardInterrupt

  cases = [([], ok, 2, "error: --output_dir required"),
           (["--output_dir=o", "--n=x"], ok, 2, "error: "),
           (["--output_dir=o"], bad, 2, "error: o/x.csv: file not found"),
           (["--output_dir=o"], bug, 3, "error: unexpected KeyError: 'oops'"),
           (["--output_dir=o"], interrupted, 130,
            "interrupted: re-run the same command to resume")]
  for argv, fn, code, start in cases:
    assert _toy_cli(argv, fn) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(start), (argv, err)
    assert "Traceback" not in err[0]
  assert _toy_cli(["--output_dir=o", "--n=3"], ok) == 0
  assert "written {'train': 3}" in capsys.readouterr().out
  assert writer.SKIP_LOG.level == logging.WARNING
  assert _toy_cli(["--output_dir=o", "--verbose"], ok) == 0
  assert writer.SKIP_LOG.level == logging.INFO
  assert _toy_cli(["--output_dir=o"], ok) == 0
  assert writer.SKIP_LOG.level == logging.WARNING
  capsys.readouterr()
  assert _toy_cli(["--help"], ok) == 0
  out = capsys.readouterr().out
  assert out.startswith("Toy converter.") and "--output_dir" in out
  with pytest.raises(KeyError):
    _toy_cli(["--output_dir=o", "--traceback"], bug)
