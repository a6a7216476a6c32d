"""tf.data from a converted TFDS directory to global, sharded `jax.Array`s.

Training stream: each process reads its equal share of the split
(`tfds.even_splits(..., drop_remainder=True)`), epoch e is shuffled with a
seed derived from (seed, e) (file order and example order), every example
gets its augmentation randomness from stateless ops keyed on (seed, global
example index), and batches are assembled into global arrays sharded over
the mesh's data axis (`jax.make_array_from_process_local_data`) and
prefetched in a background thread. The stream is therefore a pure function
of (seed, position): `TrainIterator.state()` is a small JSON dict, and
`restore_state` (or `start_position`) rebuilds the stream and skips the
consumed examples *before* decoding.

Batch keys: image float32 [B,H,W,1] ((x/255 - mean) / std), tokens int32
[B,T], text_mask bool [B,T], sentence_ids int32 [B,T] (-1 outside
sentences), sentence_mask bool [B,S], labels float32 [B,14] (1/0/-1,
missing -> 0), labels_present bool [B,14], study_id int32 [B], mask bool [B]
(False on eval padding).
"""

import dataclasses
import queue
import threading
from typing import Any, Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jointcxr.data import augment as augment_lib
from jointcxr.data import text as text_lib

tf.config.set_visible_devices([], "GPU")  # TF must not grab accelerators


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


def _process(process_index, process_count):
  return (jax.process_index() if process_index is None else process_index,
          jax.process_count() if process_count is None else process_count)


def _example_fn(spec: Spec, encoder: text_lib.ReportEncoder, train: bool):
  """Decodes one raw example into the model inputs."""

  def fn(index, ex):
    seed = tf.stack([tf.constant(spec.seed, tf.int64), index])
    seed = tf.cast(seed & 0x7FFFFFFF, tf.int32)
    images = ex["images"]
    n = tf.shape(images)[0]
    if spec.view == "random" and train:
      pick = tf.random.stateless_uniform([], augment_lib._seed(seed, 1), 0,  # pylint: disable=protected-access
                                         tf.maximum(n, 1), dtype=tf.int32)
    else:
      pick = tf.constant(0)
    raw = images[tf.minimum(pick, tf.maximum(n - 1, 0))]
    img = tf.io.decode_image(raw, channels=1, expand_animations=False)
    img.set_shape([None, None, 1])
    kind = spec.image_aug if train else "eval"
    img = augment_lib.augment(img, seed, spec.image_size, kind, spec.hflip)
    img = (img / 255.0 - spec.mean) / spec.std
    img.set_shape([spec.image_size, spec.image_size, 1])
    sents = ex["sentences"]
    tseed = tf.random.experimental.stateless_fold_in(seed, 2)
    ids, sids = tf.numpy_function(encoder, [sents, tseed],
                                  [tf.int32, tf.int32], stateful=False)
    ids.set_shape([spec.max_tokens])
    sids.set_shape([spec.max_tokens])
    labels = ex["labels"]
    present = tf.logical_not(tf.math.is_nan(labels))
    return {
        "image": img, "tokens": ids, "text_mask": ids != encoder.tokenizer.
        pad_id, "sentence_ids": sids,
        "sentence_mask": tf.reduce_any(
            sids[None, :] == tf.range(spec.max_sentences)[:, None], axis=1),
        "labels": tf.where(present, labels, 0.0), "labels_present": present,
        "study_id": tf.cast(ex["study_id"], tf.int32),
        "mask": tf.constant(True)}
  return fn


def _options() -> tf.data.Options:
  o = tf.data.Options()
  o.deterministic = True
  o.experimental_optimization.map_parallelization = True
  o.threading.private_threadpool_size = 0
  return o


def _epoch_dataset(spec: Spec, builder, subsplit: str, epoch: int,
                   skip: int, take: int, encoder) -> tf.data.Dataset:
  """One epoch of a process's share: shuffled, decoded, batched."""
  eseed = (spec.seed * 1_000_003 + epoch) % (2 ** 31 - 1)
  ds = builder.as_dataset(
      split=subsplit, shuffle_files=True,
      read_config=tfds.ReadConfig(shuffle_seed=eseed,
                                  interleave_cycle_length=4),
      decoders={"images": tfds.decode.SkipDecoding()})
  ds = ds.take(take)
  ds = ds.shuffle(min(spec.shuffle_buffer, max(take, 1)), seed=eseed,
                  reshuffle_each_iteration=False)
  ds = ds.enumerate(start=epoch * take)  # global element index
  ds = ds.skip(skip)  # resume: drop consumed examples before decoding
  ds = ds.map(_example_fn(spec, encoder, True),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  local = spec.global_batch_size // jax.process_count()
  return ds.batch(local, drop_remainder=True).with_options(_options())


def _to_global(batch: dict, mesh: Mesh, data_axis) -> dict:
  sharding = NamedSharding(mesh, P(data_axis))
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


class _Prefetch:
  """Runs a generator `size` items ahead in a daemon thread."""

  def __init__(self, gen: Iterator, size: int):
    self._q: queue.Queue = queue.Queue(maxsize=max(size, 1))
    self._done = object()
    self._thread = threading.Thread(target=self._run, args=(gen,),
                                    daemon=True)
    self._thread.start()

  def _run(self, gen):
    try:
      for item in gen:
        self._q.put(item)
    except Exception as e:  # surfaced to the consumer
      self._q.put(e)
    self._q.put(self._done)

  def __next__(self):
    item = self._q.get()
    if item is self._done:
      raise StopIteration
    if isinstance(item, Exception):
      raise item
    return item


class TrainIterator:
  """Infinite iterator of global batches; `state()` for exact resume."""

  def __init__(self, spec: Spec, tokenizer, mesh: Mesh, data_axis: Any =
               "data", start_position: int = 0, prefetch: int = 2,
               process_index: int | None = None,
               process_count: int | None = None):
    pi, pc = _process(process_index, process_count)
    if spec.global_batch_size % pc:
      raise ValueError(f"global batch {spec.global_batch_size} must divide "
                       f"by the {pc} processes")
    self.spec, self.mesh, self.data_axis = spec, mesh, data_axis
    self.local_batch = spec.global_batch_size // pc
    builder = tfds.builder_from_directory(spec.data_dir)
    if spec.split not in builder.info.splits:
      raise ValueError(f"{spec.data_dir} has no split {spec.split!r} "
                       f"(has {sorted(builder.info.splits)})")
    self._builder = builder
    self._subsplit = tfds.even_splits(spec.split, n=pc,
                                      drop_remainder=True)[pi]
    self.per_process = builder.info.splits[spec.split].num_examples // pc
    # Examples per epoch actually used (the last partial batch is dropped).
    self.epoch_examples = (self.per_process // self.local_batch) * (
        self.local_batch)
    if self.epoch_examples == 0:
      raise ValueError(f"split {spec.split!r} has {self.per_process} "
                       f"examples per process, fewer than the per-process "
                       f"batch {self.local_batch}")
    self._encoder = text_lib.ReportEncoder(
        tokenizer, spec.max_tokens, spec.max_sentences, spec.text_aug)
    self._prefetch_size = prefetch
    self.position = int(start_position)
    self._start()

  def _batches(self, position: int):
    epoch, offset = divmod(position, self.epoch_examples)
    while True:
      ds = _epoch_dataset(self.spec, self._builder, self._subsplit, epoch,
                          offset, self.per_process, self._encoder)
      for b in ds.as_numpy_iterator():
        yield b
      epoch, offset = epoch + 1, 0

  def _start(self):
    gen = (_to_global(b, self.mesh, self.data_axis) for b in
           self._batches(self.position))
    self._it = _Prefetch(gen, self._prefetch_size)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = next(self._it)
    self.position += self.local_batch
    return batch

  @property
  def epoch(self) -> float:
    return self.position / self.epoch_examples

  def state(self) -> dict:
    """JSON-serialisable position (plus the spec, to detect mismatches)."""
    return {"position": self.position, "seed": self.spec.seed,
            "global_batch_size": self.spec.global_batch_size,
            "split": self.spec.split}

  def restore_state(self, state: dict) -> None:
    """Continues exactly after the batches `state` had consumed."""
    for key in ("seed", "global_batch_size", "split"):
      if state.get(key) != getattr(self.spec, key):
        raise ValueError(f"cannot resume: saved input {key}="
                         f"{state.get(key)!r} but the config says "
                         f"{getattr(self.spec, key)!r}")
    self.position = int(state["position"])
    self._start()


def train_iterator(data_dir: str, *, split: str = "train",
                   global_batch_size: int, tokenizer, image_size: int,
                   max_tokens: int, max_sentences: int,
                   image_aug: str = "lovt", text_aug: str = "none",
                   view: str = "random", seed: int = 0,
                   start_position: int = 0, mesh: Mesh,
                   data_axis: Any = "data", prefetch: int = 2,
                   hflip: bool = True, mean: float = 0.5, std: float = 0.5,
                   shuffle_buffer: int = 16384, process_index=None,
                   process_count=None) -> TrainIterator:
  """The training stream (see module docstring)."""
  spec = Spec(data_dir, split, global_batch_size, image_size, max_tokens,
              max_sentences, image_aug, text_aug, view, seed, hflip, mean,
              std, shuffle_buffer)
  return TrainIterator(spec, tokenizer, mesh, data_axis, start_position,
                       prefetch, process_index, process_count)


def eval_batches(data_dir: str, *, split: str, global_batch_size: int,
                 tokenizer, image_size: int, max_tokens: int,
                 max_sentences: int, mean: float = 0.5, std: float = 0.5,
                 process_index=None, process_count=None,
                 limit: int | None = None) -> tuple[Iterator[dict], int]:
  """Host-local numpy eval batches: no shuffle or augmentation, one pass.

  Every process yields the same number of batches; the last ones are padded
  (`mask` False). Returns (iterator, number of real examples in the split).
  """
  pi, pc = _process(process_index, process_count)
  builder = tfds.builder_from_directory(data_dir)
  if split not in builder.info.splits:
    raise ValueError(f"{data_dir} has no split {split!r} (has "
                     f"{sorted(builder.info.splits)})")
  n_total = builder.info.splits[split].num_examples
  if limit:
    n_total = min(n_total, limit)
  subsplit = tfds.even_splits(split, n=pc)[pi]
  local = global_batch_size // pc
  per_proc_max = -(-builder.info.splits[split].num_examples // pc)
  if limit:
    per_proc_max = -(-n_total // pc)
  n_batches = max(1, -(-per_proc_max // local))
  spec = Spec(data_dir, split, global_batch_size, image_size, max_tokens,
              max_sentences, "none", "none", "first", 0, False, mean, std)
  encoder = text_lib.ReportEncoder(tokenizer, max_tokens, max_sentences)
  ds = builder.as_dataset(split=subsplit, shuffle_files=False,
                          decoders={"images": tfds.decode.SkipDecoding()})
  if limit:
    ds = ds.take(-(-limit // pc))
  ds = ds.enumerate().map(_example_fn(spec, encoder, False),
                          num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
  ds = ds.with_options(_options())

  def gen():
    buf = []
    count = 0
    for ex in ds.as_numpy_iterator():
      buf.append(ex)
      if len(buf) == local:
        yield _stack(buf, local)
        count += 1
        buf = []
    if buf:
      yield _stack(buf, local)
      count += 1
    template = None
    while count < n_batches:
      if template is None:
        template = _stack([], local, like=ex_like(spec, encoder))
      yield template
      count += 1

  return gen(), n_total


def ex_like(spec: Spec, encoder) -> dict:
  """A zero example with the eval batch layout (for pure-padding batches)."""
  return {"image": np.zeros((spec.image_size, spec.image_size, 1),
                            np.float32),
          "tokens": np.full((spec.max_tokens,), encoder.tokenizer.pad_id,
                            np.int32),
          "text_mask": np.zeros((spec.max_tokens,), bool),
          "sentence_ids": np.full((spec.max_tokens,), -1, np.int32),
          "sentence_mask": np.zeros((spec.max_sentences,), bool),
          "labels": np.zeros((14,), np.float32),
          "labels_present": np.zeros((14,), bool),
          "study_id": np.int32(0), "mask": np.bool_(False)}


def _stack(items: list[dict], size: int, like: dict | None = None) -> dict:
  """Stacks examples and pads to `size` with masked copies."""
  proto = items[0] if items else like
  pad = size - len(items)
  out = {}
  for k in proto:
    arrs = [np.asarray(it[k]) for it in items]
    if pad:
      filler = np.zeros_like(np.asarray(proto[k]))
      if k == "tokens":
        filler = np.asarray(proto[k]) * 0
      arrs += [filler] * pad
    out[k] = np.stack(arrs)
  out["mask"] = np.arange(size) < len(items)
  return out


def to_global(batch: dict, mesh: Mesh, data_axis: Any = "data") -> dict:
  """Host-local numpy batch -> global arrays sharded over the data axis."""
  return _to_global(batch, mesh, data_axis)
