"""Input pipeline: global sharded batches, exact resume, determinism, eval padding."""

import threading
import time

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.sharding import Mesh

from jointcxr.data import augment
from jointcxr.data import localized
from jointcxr.data import pipeline
from jointcxr.data import text
from jointcxr.data import tokenizer as tok_lib


def _mesh(shape=(8,), names=("data",)):
  return Mesh(np.array(jax.devices()[:8]).reshape(shape), names)


def _it(converted_mimic, tokenizer_path, mesh=None, **kw):
  args = dict(global_batch_size=8, tokenizer=tok_lib.load_tokenizer(
      str(tokenizer_path)), image_size=32, max_tokens=48, max_sentences=6,
              text_aug="sentence_swap", seed=1, mesh=mesh or _mesh())
  args.update(kw)
  return pipeline.train_iterator(str(converted_mimic), **args)


def _np(batch):
  return {k: np.asarray(v) for k, v in batch.items()}


def test_batch_layout_and_sharding(converted_mimic, tokenizer_path):
  mesh = _mesh((4, 2), ("data", "model"))
  b = next(_it(converted_mimic, tokenizer_path, mesh=mesh))
  assert b["image"].shape == (8, 32, 32, 1) and b["image"].dtype == np.float32
  assert b["tokens"].shape == (8, 48) and b["sentence_mask"].shape == (8, 6)
  assert b["image"].sharding.spec == jax.sharding.PartitionSpec("data")
  nb = _np(b)
  assert nb["mask"].all() and np.all(np.abs(nb["image"]) <= 1.0 + 1e-6)
  tok = tok_lib.load_tokenizer(str(tokenizer_path))
  assert np.all(nb["tokens"][:, 0] == tok.cls_id)
  # sentence_mask says which sentence ids occur.
  for row_ids, row_mask in zip(nb["sentence_ids"], nb["sentence_mask"]):
    assert set(row_ids[row_ids >= 0]) == set(np.flatnonzero(row_mask))


def test_exact_resume_across_epochs_and_determinism(converted_mimic,
                                                    tokenizer_path):
  it = _it(converted_mimic, tokenizer_path)
  steps_per_epoch = it.epoch_examples // 8
  k = steps_per_epoch - 1  # resume just before an epoch boundary
  first = [_np(next(it)) for _ in range(k)]
  state = it.state()
  rest = [_np(next(it)) for _ in range(3)]
  again = _it(converted_mimic, tokenizer_path)
  again.restore_state(state)
  for a, b in zip(rest, [_np(next(again)) for _ in range(3)]):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  fresh = _it(converted_mimic, tokenizer_path)
  np.testing.assert_array_equal(first[0]["image"], _np(next(fresh))["image"])
  other = _it(converted_mimic, tokenizer_path, seed=2)
  assert not np.array_equal(first[0]["image"], _np(next(other))["image"])
  with pytest.raises(ValueError, match="saved input seed=1"):
    _it(converted_mimic, tokenizer_path, seed=9).restore_state(state)


def _prefetch_threads():
  return [t for t in threading.enumerate() if t.name == "jointcxr-prefetch"
          and t.is_alive()]


def test_prefetch_close_joins_the_producer_midway():
  # No producer may outlive the program: Python ends a daemon thread that
  # wakes during finalisation with pthread_exit, which aborts the process
  # when the thread is inside C++ (tf.data, a device transfer).
  closed_on = []

  def slow():
    try:
      for i in range(1000):
        time.sleep(0.3)  # the producer is mid-item most of the time
        yield i
    finally:
      closed_on.append(threading.current_thread().name)

  p = pipeline.Prefetch(slow(), 2)
  assert next(p) == 0
  p.close()
  assert not p._thread.is_alive()  # pylint: disable=protected-access
  assert closed_on == ["jointcxr-prefetch"]  # the generator, on its thread
  # One nobody closed is joined by the atexit hook (before finalisation).
  q = pipeline.Prefetch(slow(), 2)
  assert next(q) == 0
  pipeline._close_live_prefetch()  # pylint: disable=protected-access
  assert not q._thread.is_alive()  # pylint: disable=protected-access
  # Producer errors still reach the consumer.
  def bad():
    yield 1
    raise OSError("disk")
  r = pipeline.Prefetch(bad(), 2)
  assert next(r) == 1
  with pytest.raises(OSError, match="disk"):
    next(r)
  r.close()


def test_train_iterator_close_leaves_no_thread(converted_mimic,
                                               tokenizer_path):
  before = len(_prefetch_threads())
  it = _it(converted_mimic, tokenizer_path)
  next(it)
  assert len(_prefetch_threads()) == before + 1
  it.close()
  assert len(_prefetch_threads()) == before
  next(it)  # a later next restarts it
  it.close()
  assert len(_prefetch_threads()) == before


def test_processes_get_disjoint_covering_shares(converted_mimic,
                                                tokenizer_path):
  ids = []
  for p in range(2):
    it = _it(converted_mimic, tokenizer_path, process_index=p,
             process_count=2, text_aug="none")
    ids.append(it.subsplit)
  b = tfds.builder_from_directory(str(converted_mimic))
  studies = [{int(e["study_id"]) for e in tfds.as_numpy(b.as_dataset(
      split=s))} for s in ids]
  assert not studies[0] & studies[1]
  n = b.info.splits["train"].num_examples
  assert len(studies[0]) == len(studies[1]) == n // 2


def test_eval_batches_pad_and_mask(converted_mimic, tokenizer_path):
  tok = tok_lib.load_tokenizer(str(tokenizer_path))
  b = tfds.builder_from_directory(str(converted_mimic))
  n = b.info.splits["validate"].num_examples
  gen, total = pipeline.eval_batches(
      str(converted_mimic), split="validate", global_batch_size=4,
      tokenizer=tok, image_size=32, max_tokens=48, max_sentences=6)
  batches = list(gen)
  assert total == n and len(batches) == -(-n // 4)
  assert sum(int(x["mask"].sum()) for x in batches) == n
  assert all(x["image"].shape == (4, 32, 32, 1) for x in batches)
  # Two processes: same number of batches each, all examples once.
  counts, seen = [], 0
  for p in range(2):
    g, _ = pipeline.eval_batches(
        str(converted_mimic), split="validate", global_batch_size=4,
        tokenizer=tok, image_size=32, max_tokens=48, max_sentences=6,
        process_index=p, process_count=2)
    bs = list(g)
    counts.append(len(bs))
    seen += sum(int(x["mask"].sum()) for x in bs)
  assert counts[0] == counts[1] and seen == n


def test_text_augmentations():
  rng = np.random.default_rng(0)
  s = ["a.", "b.", "c.", "d."]
  one = text.augment_sentences(s, "one_sentence", rng)
  assert len(one) == 1 and one[0] in s
  swaps = [text.augment_sentences(s, "sentence_swap", np.random.default_rng(
      i)) for i in range(200)]
  assert all(sorted(x) == s for x in swaps)
  assert 0.2 < np.mean([x == s for x in swaps]) < 0.7  # P(0 swaps)=0.4 + ...
  with pytest.raises(ValueError, match="unknown text augmentation 'x'"):
    text.augment_sentences(s, "x", rng)


@pytest.mark.parametrize("kind", ["lovt", "joimternet", "none"])
def test_geometric_aug_moves_mask_with_image(kind):
  img = np.zeros((48, 40, 1), np.float32)
  img[10:20, 12:24] = 255.0
  mask = (img > 0).astype(np.float32)
  seed = tf.constant([3, 4], tf.int32)
  a = augment.geometric(tf.constant(img), seed, 32, kind).numpy()
  m = augment.geometric(tf.constant(mask), seed, 32, kind,
                        nearest=True).numpy()
  assert a.shape == (32, 32, 1)
  bright = a[..., 0] > 127
  if m.sum() and bright.sum():
    overlap = (bright & (m[..., 0] > 0.5)).sum() / bright.sum()
    assert overlap > 0.8
  full = augment.augment(tf.constant(img), seed, 32, kind).numpy()
  assert full.min() >= 0 and full.max() <= 255


def test_localized_load(synthetic_root, tmp_path):
  from data_prep.localized import rsna
  rsna.convert(input_dir=str(synthetic_root / "rsna"),
               output_dir=str(tmp_path / "r"), image_size=48, progress=False)
  s = localized.load_split(str(tmp_path / "r"), "train", 32)
  assert s.images.shape[1:] == (32, 32, 1) and s.masks.shape[1:] == (32, 32,
                                                                      1)
  for bx, m in zip(s.boxes, s.masks):
    if len(bx):
      y0, x0, y1, x1 = bx[0]
      cy, cx = int((y0 + y1) / 2 * 32), int((x0 + x1) / 2 * 32)
      assert m[cy, cx, 0] == 1
