"""tf.data from a converted TFDS directory to global, sharded `jax.Array`s.

Training stream (`train_iterator`):

1. Each process reads its equal share of the split (`tfds.even_splits(...,
   drop_remainder=True)`), so every process sees the same number of
   examples per epoch and none is read twice.
2. Epoch e shuffles files and examples with a seed derived from (seed, e)
   (`reshuffle_each_iteration=False`; a new dataset per epoch).
3. Every example gets its randomness (view choice, image augmentation, text
   augmentation) from stateless ops keyed on (seed, its global index
   (epoch, process, position)), never from stateful RNG.
4. Batches of `global_batch_size // process_count` become global arrays
   sharded over the mesh's data axis (`jax.make_array_from_process_local_
   data`), prefetched in a background thread.

The stream is therefore a pure function of (seed, position), where
`position` is the number of examples consumed globally: `state()` is a small
JSON dict and `restore_state` / `start_position` rebuild the stream and skip
the consumed examples *before* decoding. Resuming with the same process
count is bit-exact; with another count it continues at the same point of the
epoch with a different (but still deterministic) order.

Batch keys: image float32 [B,H,W,1] normalised as (x / 255 - mean) / std
(mean = std = 0.5 by default, JoImTeRNet's and LoVT-like [-1, 1]; set the
dataset's statistics with `mean`/`std`), tokens int32 [B,T], text_mask bool
[B,T], sentence_ids int32 [B,T] (-1 outside sentences), sentence_mask bool
[B,S], labels float32 [B,14] (1 / 0 / -1, missing -> 0), labels_present bool
[B,14], study_id int32 [B], mask bool [B] (False on eval padding).

Eval (`eval_iterator`, `eval_batches`): no shuffle or augmentation, the
first image of each study, one pass; every process yields the same number
of batches, the last ones padded with `mask` False.
"""

import atexit
import dataclasses
import queue
import threading
from typing import Any, Iterator
import weakref

from absl import logging
import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jointcxr.data import augment as augment_lib
from jointcxr.data import features as features_lib
from jointcxr.data import text as text_lib

tf.config.set_visible_devices([], "GPU")  # TF must not grab accelerators

VIEWS = ("random", "first")
NUM_LABELS = len(features_lib.CHEXPERT_LABELS)


@dataclasses.dataclass(frozen=True)
class Spec:
  """Everything that determines the stream besides the position."""
  data_dir: str
  split: str
  global_batch_size: int
  image_size: int
  max_tokens: int
  max_sentences: int
  image_aug: str = "lovt"
  text_aug: str = "none"
  view: str = "random"
  seed: int = 0
  hflip: bool = True
  mean: float = 0.5
  std: float = 0.5
  shuffle_buffer: int = 16384
  text_section: str = "both"
  aug: augment_lib.Params | None = None  # None: the paper's for image_aug

  def check(self) -> None:
    """Raises ValueError naming the first bad field."""
    augment_lib.check_kind(self.image_aug)
    if self.aug is not None:
      self.aug.check()
    if self.view not in VIEWS:
      raise ValueError(f"unknown view {self.view!r}; expected one of {VIEWS}")
    if self.text_aug not in text_lib.TEXT_AUGS:
      raise ValueError(f"unknown text augmentation {self.text_aug!r}; "
                       f"expected one of {text_lib.TEXT_AUGS}")
    if self.text_section not in text_lib.TEXT_SECTIONS:
      raise ValueError(f"unknown text section {self.text_section!r}; "
                       f"expected one of {text_lib.TEXT_SECTIONS}")
    for name in ("global_batch_size", "image_size", "max_sentences"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.max_tokens < 3:
      raise ValueError(f"max_tokens must be >= 3 ([CLS] x [SEP]), got "
                       f"{self.max_tokens}")
    if self.std <= 0:
      raise ValueError(f"std must be > 0, got {self.std}")


def process_info(process_index: int | None = None,
                 process_count: int | None = None) -> tuple[int, int]:
  """(index, count) of this process; overrides simulate multi-process runs."""
  return (jax.process_index() if process_index is None else process_index,
          jax.process_count() if process_count is None else process_count)


def open_split(data_dir: str, split: str):
  """The TFDS builder of a converted image-report directory.

  Raises:
    ValueError: no split of that name (TFDS slices such as "train[:10%]"
      are accepted), or a reports-only directory.
  """
  try:
    builder = tfds.builder_from_directory(data_dir)
  except Exception as e:  # TFDS raises several types for a bad directory
    raise ValueError(f"{data_dir}: not a converted TFDS directory "
                     f"({type(e).__name__}: {e})") from e
  # TFDS slicing ("train[:10%]", "train[:512]") selects a subset of a split.
  base = split.split("[", 1)[0]
  if base not in builder.info.splits:
    raise ValueError(f"{data_dir} has no split {base!r} (has "
                     f"{sorted(builder.info.splits)})")
  try:
    builder.info.splits[split]  # pylint: disable=pointless-statement
  except (ValueError, AssertionError) as e:
    raise ValueError(f"{data_dir}: bad split slice {split!r} ({e})") from e
  if "images" not in builder.info.features:
    raise ValueError(f"{data_dir} has no images (a reports-only "
                     "conversion); the image-report pipeline needs images")
  return builder


def example_seed(seed: int, index: tf.Tensor) -> tf.Tensor:
  """The [2] int32 stateless seed of the example with global `index`."""
  s = tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)])
  return tf.cast(s & 0x7FFFFFFF, tf.int32)


def example_fn(spec: Spec, encoder: text_lib.ReportEncoder, train: bool):
  """(global index, raw TFDS example) -> model inputs of one example."""
  kind = spec.image_aug if train else "eval"

  def fn(index, ex):
    seed = example_seed(spec.seed, index)
    images = ex["images"]
    n = tf.shape(images)[0]
    with tf.control_dependencies([tf.debugging.Assert(
        n > 0, ["study without images:", ex["study_id"]])]):
      n = tf.identity(n)
    if spec.view == "random" and train:
      pick = tf.random.stateless_uniform(
          [], augment_lib._seed(seed, 1), 0, n, dtype=tf.int32)  # pylint: disable=protected-access
    else:
      pick = tf.constant(0)
    img = tf.io.decode_image(images[pick], channels=1,
                             expand_animations=False)
    img.set_shape([None, None, 1])
    img = augment_lib.augment(img, seed, spec.image_size, kind, spec.hflip,
                              spec.aug)
    img = (img / 255.0 - spec.mean) / spec.std
    img.set_shape([spec.image_size, spec.image_size, 1])
    tseed = tf.random.experimental.stateless_fold_in(seed, 2)
    ids, sids = tf.numpy_function(
        encoder, [ex["sentences"], ex["findings"], tseed],
        [tf.int32, tf.int32], stateful=False)
    ids.set_shape([spec.max_tokens])
    sids.set_shape([spec.max_tokens])
    labels = ex["labels"]
    present = tf.logical_not(tf.math.is_nan(labels))
    return {
        "image": img,
        "tokens": ids,
        "text_mask": ids != encoder.tokenizer.pad_id,
        "sentence_ids": sids,
        "sentence_mask": tf.reduce_any(
            sids[None, :] == tf.range(spec.max_sentences)[:, None], axis=1),
        "labels": tf.where(present, labels, 0.0),
        "labels_present": present,
        "study_id": tf.cast(ex["study_id"], tf.int32),
        "mask": tf.constant(True),
    }
  return fn


def tf_options() -> tf.data.Options:
  """Deterministic tf.data options (order never depends on timing)."""
  o = tf.data.Options()
  o.deterministic = True
  o.experimental_optimization.map_parallelization = True
  o.threading.private_threadpool_size = 0
  return o


def _read(builder, subsplit: str, shuffle_seed: int | None):
  """Raw examples (images left encoded) of a split slice."""
  cfg = tfds.ReadConfig(shuffle_seed=shuffle_seed, interleave_cycle_length=4)
  return builder.as_dataset(
      split=subsplit, shuffle_files=shuffle_seed is not None, read_config=cfg,
      decoders=features_lib.skip_image_decoding())


def epoch_dataset(spec: Spec, builder, subsplit: str, *, epoch: int,
                  process_index: int, process_count: int, per_process: int,
                  skip: int, encoder: text_lib.ReportEncoder
                  ) -> tf.data.Dataset:
  """One epoch of one process's share: shuffled, decoded, batched.

  Args:
    spec: the stream.
    builder: the TFDS builder.
    subsplit: this process's slice of the split.
    epoch: epoch number (seeds the file and example order).
    process_index: this process (part of every example's global index).
    process_count: number of processes.
    per_process: examples in each process's share.
    skip: examples of this epoch already consumed (dropped before decoding).
    encoder: the report encoder.

  Returns:
    Batches of `global_batch_size // process_count` (last partial dropped).
  """
  eseed = (spec.seed * 1_000_003 + epoch) % (2 ** 31 - 1)
  ds = _read(builder, subsplit, eseed).take(per_process)
  ds = ds.shuffle(min(spec.shuffle_buffer, max(per_process, 1)), seed=eseed,
                  reshuffle_each_iteration=False)
  ds = ds.enumerate(start=(epoch * process_count + process_index) *
                    per_process)
  ds = ds.skip(skip)  # resume: consumed examples are never decoded
  ds = ds.map(example_fn(spec, encoder, True),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  local = spec.global_batch_size // process_count
  return ds.batch(local, drop_remainder=True).with_options(tf_options())


def to_global(batch: dict, mesh: Mesh, data_axis: Any = "data") -> dict:
  """Host-local numpy batch -> global arrays sharded over the data axis.

  Args:
    batch: dict of [local_batch, ...] arrays (this process's rows).
    mesh: the device mesh.
    data_axis: mesh axis name (or tuple of names) of the batch dimension.

  Returns:
    dict of global `jax.Array`s, [global_batch, ...], `P(data_axis)`.
  """
  sharding = NamedSharding(mesh, P(data_axis))
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


class Prefetch:
  """Runs an iterator `size` items ahead in a daemon thread.

  Exceptions of the producer are re-raised by `__next__`. `close` stops the
  producer and joins its thread; a producer still alive when the
  interpreter exits is closed by an `atexit` hook. Python (3.11) ends a
  daemon thread that wakes up during interpreter finalisation with
  `pthread_exit`, which aborts the process ("FATAL: exception not
  rethrown") when the thread is inside C++ code such as tf.data's
  `GetNext` or a device transfer; so no producer may outlive the program.
  """

  def __init__(self, it: Iterator, size: int):
    self._q: queue.Queue = queue.Queue(maxsize=max(size, 1))
    self._stop = threading.Event()
    self._done = object()
    self._thread = threading.Thread(target=self._run, args=(it,),
                                    name="jointcxr-prefetch", daemon=True)
    _LIVE_PREFETCH.add(self)
    self._thread.start()

  def _put(self, item) -> bool:
    while not self._stop.is_set():
      try:
        self._q.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def _run(self, it: Iterator) -> None:
    try:
      for item in it:
        if not self._put(item):
          return
      self._put(self._done)
    except Exception as e:  # pylint: disable=broad-except  # re-raised later
      self._put(e)
    finally:
      # A generator's tf.data iterator is released here, on this thread,
      # rather than whenever (and on whichever thread) it is collected.
      close = getattr(it, "close", None)
      if close is not None:
        try:
          close()
        except Exception:  # pylint: disable=broad-except
          logging.exception("closing the prefetched iterator failed")

  def __iter__(self):
    return self

  def __next__(self):
    item = self._q.get()
    if item is self._done:
      self._q.put(item)  # stay exhausted
      raise StopIteration
    if isinstance(item, Exception):
      raise item
    return item

  def close(self, timeout: float = 120.0) -> None:
    """Stops the producer and waits (up to `timeout` s) for its thread.

    The producer stops after the item it is making (a batch: tf.data and
    the device transfer are not interrupted midway).
    """
    self._stop.set()
    if self._thread is not threading.current_thread():
      self._thread.join(timeout)
      if self._thread.is_alive():
        logging.warning("input prefetch thread still running %.0f s after "
                        "close", timeout)
    _LIVE_PREFETCH.discard(self)


_LIVE_PREFETCH: "weakref.WeakSet[Prefetch]" = weakref.WeakSet()


@atexit.register
def _close_live_prefetch() -> None:
  """Joins producers nobody closed (atexit runs before finalisation)."""
  for p in list(_LIVE_PREFETCH):
    p.close()


class TrainIterator:
  """Infinite iterator of global batches; `state()` for exact resume.

  Attributes:
    position: examples consumed so far, summed over processes.
    epoch_examples: examples per epoch and process (the last partial batch
      of every epoch is dropped).
    local_batch: rows of each batch that this process loads.
  """

  def __init__(self, spec: Spec, tokenizer, mesh: Mesh,
               data_axis: Any = "data", start_position: int = 0,
               prefetch: int = 2, process_index: int | None = None,
               process_count: int | None = None):
    spec.check()
    self.process_index, self.process_count = process_info(
        process_index, process_count)
    pc = self.process_count
    if spec.global_batch_size % pc:
      raise ValueError(f"global batch {spec.global_batch_size} must divide "
                       f"by the {pc} processes")
    self.spec, self.mesh, self.data_axis = spec, mesh, data_axis
    self.local_batch = spec.global_batch_size // pc
    self._builder = open_split(spec.data_dir, spec.split)
    self.subsplit = tfds.even_splits(spec.split, n=pc, drop_remainder=True)[
        self.process_index]
    self.per_process = (
        self._builder.info.splits[spec.split].num_examples // pc)
    self.epoch_examples = (self.per_process // self.local_batch) * (
        self.local_batch)
    if self.epoch_examples == 0:
      raise ValueError(f"split {spec.split!r} of {spec.data_dir} has "
                       f"{self.per_process} examples per process, fewer "
                       f"than the per-process batch {self.local_batch}")
    self._encoder = text_lib.ReportEncoder(
        tokenizer, spec.max_tokens, spec.max_sentences, spec.text_aug,
        spec.text_section)
    self._prefetch_size = prefetch
    self._it: Prefetch | None = None
    self.position = 0
    self._seek(int(start_position))

  def _seek(self, position: int) -> None:
    if position < 0 or position % self.spec.global_batch_size:
      raise ValueError(f"position {position} is not a multiple of the "
                       f"global batch {self.spec.global_batch_size}")
    self.close()
    self.position = position

  def _batches(self, position: int) -> Iterator[dict]:
    epoch, offset = divmod(position // self.process_count,
                           self.epoch_examples)
    while True:
      ds = epoch_dataset(
          self.spec, self._builder, self.subsplit, epoch=epoch,
          process_index=self.process_index,
          process_count=self.process_count, per_process=self.per_process,
          skip=offset, encoder=self._encoder)
      for b in ds.as_numpy_iterator():
        yield to_global(b, self.mesh, self.data_axis)
      epoch, offset = epoch + 1, 0

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._it is None:  # started lazily, so restore_state costs nothing
      self._it = Prefetch(self._batches(self.position), self._prefetch_size)
    batch = next(self._it)
    self.position += self.spec.global_batch_size
    return batch

  def close(self) -> None:
    """Stops and joins the prefetch thread (a later `next` restarts it)."""
    if self._it is not None:
      self._it.close()
      self._it = None

  @property
  def epoch(self) -> float:
    """Epochs consumed (fractional)."""
    return self.position / (self.epoch_examples * self.process_count)

  def state(self) -> dict:
    """JSON-serialisable position, plus the spec fields that must match."""
    return {"position": self.position, "seed": self.spec.seed,
            "global_batch_size": self.spec.global_batch_size,
            "split": self.spec.split, "process_count": self.process_count,
            "epoch": self.epoch}

  def restore_state(self, state: dict) -> None:
    """Continues exactly after the batches `state` had consumed.

    Raises:
      ValueError: the saved seed, split or global batch differ from this
        iterator's (the saved position would mean another stream).
    """
    for key in ("seed", "global_batch_size", "split"):
      if state.get(key) != getattr(self.spec, key):
        raise ValueError(f"cannot resume: saved input {key}="
                         f"{state.get(key)!r} but the config says "
                         f"{getattr(self.spec, key)!r}")
    saved_pc = state.get("process_count", self.process_count)
    if saved_pc != self.process_count:
      logging.warning(
          "input saved with %d processes, resumed with %d: continuing at the "
          "same epoch position in a different example order", saved_pc,
          self.process_count)
    self._seek(int(state["position"]))


def train_iterator(data_dir: str, *, split: str = "train",
                   global_batch_size: int, tokenizer, image_size: int,
                   max_tokens: int, max_sentences: int,
                   image_aug: str = "lovt", text_aug: str = "none",
                   view: str = "random", seed: int = 0,
                   start_position: int = 0, mesh: Mesh,
                   data_axis: Any = "data", prefetch: int = 2,
                   text_section: str = "both", hflip: bool = True,
                   mean: float = 0.5, std: float = 0.5,
                   shuffle_buffer: int = 16384,
                   aug: augment_lib.Params | None = None,
                   process_index: int | None = None,
                   process_count: int | None = None) -> TrainIterator:
  """The training stream (see the module docstring).

  Args:
    data_dir: converted TFDS directory (`data_prep.mimic_cxr`/`openi`).
    split: split name.
    global_batch_size: examples per step over all processes.
    tokenizer: a `jointcxr.data.tokenizer` tokenizer.
    image_size: square output side.
    max_tokens: token budget T (with [CLS] and [SEP]).
    max_sentences: sentence budget S.
    image_aug: "lovt", "joimternet" or "none".
    text_aug: "none", "sentence_swap" or "one_sentence".
    view: "random" (one of the study's frontal images per step) or "first".
    seed: the stream seed.
    start_position: global examples already consumed.
    mesh: device mesh.
    data_axis: mesh axis (or tuple) the batch is sharded over.
    prefetch: batches prepared ahead.
    text_section: "both", "findings" or "impression".
    hflip: LoVT's random horizontal flip (on, as LoVT).
    mean: normalisation mean (of x / 255).
    std: normalisation std.
    shuffle_buffer: example shuffle buffer (encoded examples).
    aug: augmentation strengths (`augment.Params`); None = the paper's for
      `image_aug`.
    process_index: override of `jax.process_index()` (tests).
    process_count: override of `jax.process_count()` (tests).

  Returns:
    The `TrainIterator`.
  """
  spec = Spec(data_dir, split, global_batch_size, image_size, max_tokens,
              max_sentences, image_aug, text_aug, view, seed, hflip, mean,
              std, shuffle_buffer, text_section, aug)
  return TrainIterator(spec, tokenizer, mesh, data_axis, start_position,
                       prefetch, process_index, process_count)


def zero_example(spec: Spec, pad_id: int) -> dict:
  """An all-padding example with the batch layout (mask False)."""
  return {"image": np.zeros((spec.image_size, spec.image_size, 1),
                            np.float32),
          "tokens": np.full((spec.max_tokens,), pad_id, np.int32),
          "text_mask": np.zeros((spec.max_tokens,), bool),
          "sentence_ids": np.full((spec.max_tokens,), -1, np.int32),
          "sentence_mask": np.zeros((spec.max_sentences,), bool),
          "labels": np.zeros((NUM_LABELS,), np.float32),
          "labels_present": np.zeros((NUM_LABELS,), bool),
          "study_id": np.int32(0), "mask": np.bool_(False)}


def pad_batch(batch: dict, size: int, filler: dict) -> dict:
  """Pads a (possibly short) batch to `size` rows with `filler` rows."""
  n = len(batch["mask"])
  if n == size:
    return batch
  return {k: np.concatenate([np.asarray(v), np.repeat(
      np.asarray(filler[k])[None], size - n, axis=0)]) for k, v in
          batch.items()}


def eval_batch_count(num_examples: int, process_count: int,
                     local_batch: int) -> int:
  """Batches per process of an eval pass (the largest share, at least 1)."""
  largest_share = -(-num_examples // process_count)
  return max(1, -(-largest_share // local_batch))


def eval_batches(data_dir: str, *, split: str, global_batch_size: int,
                 tokenizer, image_size: int, max_tokens: int,
                 max_sentences: int, mean: float = 0.5, std: float = 0.5,
                 process_index: int | None = None,
                 process_count: int | None = None, limit: int | None = None,
                 text_section: str = "both"
                 ) -> tuple[Iterator[dict], int]:
  """Host-local numpy eval batches: no shuffle or augmentation, one pass.

  Args:
    data_dir: converted TFDS directory.
    split: split name.
    global_batch_size: rows per step over all processes.
    tokenizer: the tokenizer.
    image_size: square output side.
    max_tokens: token budget.
    max_sentences: sentence budget.
    mean: normalisation mean.
    std: normalisation std.
    process_index: override of `jax.process_index()`.
    process_count: override of `jax.process_count()`.
    limit: use only the first `limit` examples of the split.
    text_section: "both", "findings" or "impression".

  Returns:
    (iterator of dicts of [global_batch_size // process_count, ...] arrays,
    number of real examples over all processes). Every process yields the
    same number of batches; padding rows have `mask` False.
  """
  pi, pc = process_info(process_index, process_count)
  if global_batch_size % pc:
    raise ValueError(f"global batch {global_batch_size} must divide by the "
                     f"{pc} processes")
  builder = open_split(data_dir, split)
  n_total = builder.info.splits[split].num_examples
  if limit is not None:
    n_total = min(n_total, int(limit))
  sliced = f"{split}[:{n_total}]" if n_total < builder.info.splits[
      split].num_examples else split
  spec = Spec(data_dir, split, global_batch_size, image_size, max_tokens,
              max_sentences, "none", "none", "first", 0, False, mean, std,
              text_section=text_section)
  spec.check()
  local = global_batch_size // pc
  n_batches = eval_batch_count(n_total, pc, local)
  encoder = text_lib.ReportEncoder(tokenizer, max_tokens, max_sentences,
                                   text_section=text_section)
  filler = zero_example(spec, tokenizer.pad_id)
  if n_total:
    ds = _read(builder, tfds.even_splits(sliced, n=pc)[pi], None)
    ds = ds.enumerate().map(example_fn(spec, encoder, False),
                            num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True)
    ds = ds.batch(local).with_options(tf_options())
  else:
    ds = None

  def gen() -> Iterator[dict]:
    count = 0
    for b in ds.as_numpy_iterator() if ds is not None else ():
      yield pad_batch(b, local, filler)
      count += 1
    empty = {k: np.asarray(v)[None][:0] for k, v in filler.items()}
    while count < n_batches:  # equal batch counts on every process
      yield pad_batch(empty, local, filler)
      count += 1

  return gen(), n_total


class EvalIterator:
  """One pass of global eval batches (see `eval_iterator`).

  Attributes:
    num_examples: real examples over all processes.
    num_batches: batches every process yields.
  """

  def __init__(self, batches: Iterator[dict], num_examples: int,
               num_batches: int, mesh: Mesh, data_axis: Any, prefetch: int):
    self.num_examples = num_examples
    self.num_batches = num_batches
    self._it = Prefetch((to_global(b, mesh, data_axis) for b in batches),
                        prefetch)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    return next(self._it)

  def close(self) -> None:
    """Stops and joins the prefetch thread (a pass ended early, an error)."""
    self._it.close()


def eval_iterator(data_dir: str, *, split: str, global_batch_size: int,
                  tokenizer, image_size: int, max_tokens: int,
                  max_sentences: int, mesh: Mesh, data_axis: Any = "data",
                  mean: float = 0.5, std: float = 0.5,
                  limit: int | None = None, prefetch: int = 2,
                  text_section: str = "both",
                  process_index: int | None = None,
                  process_count: int | None = None) -> EvalIterator:
  """Global eval batches, sharded like training ones, with `mask`.

  Args: as `eval_batches`, plus `mesh`, `data_axis` and `prefetch`.

  Returns:
    An `EvalIterator` (`num_examples`, `num_batches`) of dicts of global
    arrays [global_batch_size, ...]; padding rows have `mask` False.
  """
  pi, pc = process_info(process_index, process_count)
  batches, n = eval_batches(
      data_dir, split=split, global_batch_size=global_batch_size,
      tokenizer=tokenizer, image_size=image_size, max_tokens=max_tokens,
      max_sentences=max_sentences, mean=mean, std=std, process_index=pi,
      process_count=pc, limit=limit, text_section=text_section)
  local = global_batch_size // pc
  return EvalIterator(batches, n, eval_batch_count(n, pc, local), mesh,
                      data_axis, prefetch)
