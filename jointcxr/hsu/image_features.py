"""Hsu et al.'s image features: frozen DenseNet-121 avgpool (1024-d).

The network is `jointcxr.models.densenet.DenseNet` (grayscale stem,
`in_channels=1`) in inference mode (BatchNorm running statistics), jitted
once for a fixed batch shape; the last batch is zero-padded and the padding
rows dropped. How Hsu et al. pretrained their DenseNet is unknown
(METHODS.md §1.1); weights are either a fresh random initialisation (seeded)
or imported from a local safetensors file holding the flattened Flax
variables (`params/...` and `batch_stats/...` keys, as written by
`save_variables`), or passed in as a variables tree.
"""

import hashlib
import json
from typing import Iterable, Iterator

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from jointcxr.models import densenet


class ImageFeatureError(ValueError):
  """Unusable image-feature weights or inputs."""


def build(cfg: mlc.ConfigDict) -> densenet.DenseNet:
  """The DenseNet of `cfg.growth`, `cfg.blocks`, `cfg.init_features`."""
  return densenet.DenseNet(growth=cfg.growth, blocks=tuple(cfg.blocks),
                           init_features=cfg.init_features,
                           bn_size=cfg.bn_size, in_channels=1,
                           conv_impl=cfg.conv_impl)


def init_variables(model: densenet.DenseNet, image_size: int, seed: int
                   ) -> dict:
  """Random (seeded) variables: {"params", "batch_stats"}, unboxed."""
  v = jax.jit(lambda k: model.init(k, jnp.zeros((1, image_size, image_size,
                                                  1))))(
                                                      jax.random.PRNGKey(seed))
  return nn.meta.unbox(v)


def save_variables(path: str, variables: dict) -> None:
  """Writes variables as flat safetensors (keys "params/conv0/kernel"...)."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  save_file({k: np.ascontiguousarray(np.asarray(v), np.float32)
             for k, v in traverse_util.flatten_dict(variables,
                                                    sep="/").items()}, path)


def load_variables(path: str, model: densenet.DenseNet, image_size: int
                   ) -> dict:
  """Reads variables written by `save_variables`, checked against `model`.

  Raises:
    ImageFeatureError: pickled files, missing or extra keys, wrong shapes.
  """
  if path.endswith((".pth", ".pt", ".bin", ".ckpt", ".pkl")):
    raise ImageFeatureError(f"{path}: pickled files are never loaded; save "
                            "the variables with safetensors")
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  try:
    flat = load_file(path)
  except (OSError, ValueError) as e:
    raise ImageFeatureError(f"{path}: cannot read safetensors ({e})"
                            ) from None
  target = traverse_util.flatten_dict(jax.eval_shape(
      lambda: init_variables(model, image_size, 0)), sep="/")
  missing = sorted(set(target) - set(flat))
  extra = sorted(set(flat) - set(target))
  bad = [k for k in target
         if k in flat and tuple(flat[k].shape) != tuple(target[k].shape)]
  if missing or extra or bad:
    raise ImageFeatureError(
        f"{path} does not fit the DenseNet: {len(missing)} missing (e.g. "
        f"{missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]}), "
        f"{len(bad)} wrong shapes (e.g. {bad[:2]})")
  return traverse_util.unflatten_dict(
      {k: jnp.asarray(v) for k, v in flat.items()}, sep="/")


def variables_for(cfg: mlc.ConfigDict, image_size: int, seed: int
                  ) -> tuple[densenet.DenseNet, dict]:
  """The model and its variables (imported from `cfg.init` or random)."""
  model = build(cfg)
  if cfg.init:
    return model, load_variables(cfg.init, model, image_size)
  return model, init_variables(model, image_size, seed)


def config_key(cfg: mlc.ConfigDict, image_size: int, seed: int) -> str:
  """A short hash of everything that changes the features (cache key)."""
  d = dict(cfg.to_dict(), image_size=image_size, seed=seed)
  if cfg.init:
    with open(cfg.init, "rb") as f:
      d["init_sha"] = hashlib.sha256(f.read()).hexdigest()
  return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()
                        ).hexdigest()[:12]


class Extractor:
  """Batched, jitted avgpool features of a frozen DenseNet.

  Attributes:
    model: the DenseNet.
    variables: its {"params", "batch_stats"}.
    batch_size: images per compiled call.
  """

  def __init__(self, model: densenet.DenseNet, variables: dict,
               batch_size: int = 32):
    self.model = model
    self.variables = variables
    self.batch_size = batch_size
    self._fn = jax.jit(lambda v, x: model.apply(v, x, train=False)["global"])

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """[N, H, W, 1] normalised float images -> [N, C] features."""
    out = []
    for s in range(0, len(images), self.batch_size):
      chunk = np.asarray(images[s:s + self.batch_size], np.float32)
      n = len(chunk)
      if n < self.batch_size:
        chunk = np.concatenate([chunk, np.zeros(
            (self.batch_size - n, *chunk.shape[1:]), np.float32)])
      out.append(np.asarray(self._fn(self.variables, jnp.asarray(chunk)))[:n])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

  def stream(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Features of each batch of an image stream."""
    for b in batches:
      yield self(b)
