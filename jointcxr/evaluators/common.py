"""What the evaluators share: embedding a split with a loaded model.

Models come from `jointcxr.loading` (a training workdir or an export).
`embed_split` runs the model's image and text encoders over a converted
split with the eval pipeline (no augmentation, padded last batch) and
returns host arrays of the global embeddings, the pre-projection tower
features (for linear probes), labels and ids; with several processes each
embeds its share and the results are all-gathered.
"""

import dataclasses

from absl import logging
import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import ml_collections as mlc
import numpy as np

from jointcxr import loading
from jointcxr import sharding
from jointcxr.data import pipeline


@dataclasses.dataclass
class Embeddings:
  img: np.ndarray            # [N, D] global image embeddings
  txt: np.ndarray            # [N, D] global report embeddings
  img_features: np.ndarray   # [N, C] pre-projection image features
  labels: np.ndarray         # [N, 14] 1 / 0 / -1, missing -> 0
  labels_present: np.ndarray
  study_id: np.ndarray


def _encoders(model):
  def enc_img(variables, image):
    out = model.apply(variables, image, train=False,
                      method=type(model).encode_image)
    return out["img_global"], out["img_tower"]["global"]

  def enc_txt(variables, tokens, text_mask, sentence_ids):
    out = model.apply(variables, tokens, text_mask, sentence_ids, train=False,
                      method=type(model).encode_text)
    return out["txt_global"]
  return jax.jit(enc_img), jax.jit(enc_txt)


TEXT_MODES = ("auto", "report", "sentence_mean")


def resolve_text_mode(config: mlc.ConfigDict, mode: str = "auto") -> str:
  """How to embed a report at evaluation, consistent with training.

  "report" embeds the whole report at once (what a model trained on whole
  reports, with or without sentence swaps, saw); "sentence_mean" embeds
  every sentence alone and averages the L2-normalised embeddings (what a
  model trained on one random sentence per report, ConVIRT / CLIP*, saw:
  a whole report would be out of its training distribution). "auto" picks
  by the training config's `input.text_aug`.
  """
  if mode not in TEXT_MODES:
    raise ValueError(f"unknown text mode {mode!r}; expected one of "
                     f"{TEXT_MODES}")
  if mode != "auto":
    return mode
  one = config.get("input", {}).get("text_aug", "none") == "one_sentence"
  return "sentence_mean" if one else "report"


def split_sentences(tokens: np.ndarray, sentence_ids: np.ndarray,
                    tokenizer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Each sentence of each encoded report as a one-sentence report.

  Args:
    tokens: [B, T] ids of `[CLS] s1 ... sk [SEP]` rows.
    sentence_ids: [B, T] sentence index per token (-1 outside).
    tokenizer: the model's tokenizer (cls / sep / pad ids).

  Returns:
    (tokens [M, T], sentence_ids [M, T], owner [M] row index in the input)
    for the M sentences; a report without sentences keeps one row (its
    `[CLS] [SEP]`) so every report gets an embedding.
  """
  b, t = tokens.shape
  rows, sids, owner = [], [], []
  for i in range(b):
    ks = sorted(set(int(k) for k in sentence_ids[i] if k >= 0)) or [None]
    for k in ks:
      body = tokens[i][sentence_ids[i] == k] if k is not None else []
      ids = [tokenizer.cls_id, *body, tokenizer.sep_id]
      row = np.full(t, tokenizer.pad_id, np.int32)
      row[:len(ids)] = ids
      sid = np.full(t, -1, np.int32)
      sid[1:len(ids) - 1] = 0
      rows.append(row)
      sids.append(sid)
      owner.append(i)
  return np.stack(rows), np.stack(sids), np.asarray(owner)


def _sentence_mean(enc_txt, variables, put, batch: dict, tokenizer
                   ) -> np.ndarray:
  """Mean of the L2-normalised one-sentence embeddings of each report.

  Sentences go through the text encoder in chunks of the batch's own size
  (the last one padded), so the jitted encoder keeps one shape.
  """
  n = len(batch["tokens"])
  st, ss, owner = split_sentences(np.asarray(batch["tokens"]),
                                  np.asarray(batch["sentence_ids"]),
                                  tokenizer)
  m = len(st)
  pad = -m % n
  st = np.concatenate([st, np.repeat(st[:1], pad, 0)])
  ss = np.concatenate([ss, np.repeat(ss[:1], pad, 0)])
  z = np.concatenate([np.asarray(enc_txt(
      variables, put(st[j:j + n]), put(st[j:j + n] != tokenizer.pad_id),
      put(ss[j:j + n]))) for j in range(0, len(st), n)])[:m]
  z = z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  out = np.zeros((n, z.shape[-1]), np.float32)
  np.add.at(out, owner, z)
  return out


def embed_split(loaded: loading.Loaded, data_dir: str, split: str, *,
                batch_size: int = 64, limit: int | None = None,
                image_size: int | None = None,
                text_mode: str = "auto") -> Embeddings:
  """Embeds a split (all processes; results gathered on every host).

  `text_mode`: see `resolve_text_mode` ("auto" follows the training
  config).
  """
  text_mode = resolve_text_mode(loaded.config, text_mode)
  cfg = loaded.config.input
  gen, n = pipeline.eval_batches(
      data_dir, split=split, global_batch_size=batch_size * jax.process_count(),
      tokenizer=loaded.tokenizer, image_size=image_size or cfg.image_size,
      max_tokens=cfg.max_tokens, max_sentences=cfg.max_sentences,
      mean=cfg.mean, std=cfg.std, limit=limit)
  enc_img, enc_txt = _encoders(loaded.model)
  # Each process embeds its own share on its first local device. Committing
  # every input there keeps the computation (and its outputs) local even
  # inside a training loop's global `jax.set_mesh` context, where results
  # would otherwise span other hosts' devices and could not be fetched.
  # The trainer's logical-axis rules are switched off too: they name its
  # mesh axes (fsdp, model, ...), which this one-device mesh does not have,
  # and constraints mean nothing on one device.
  dev = jax.local_devices()[0]
  local_mesh = jax.sharding.Mesh(np.array([dev]), ("data",))
  variables = jax.device_put(loaded.variables, dev)
  put = lambda x: jax.device_put(np.asarray(x), dev)
  keep = {k: [] for k in ("img", "txt", "feat", "labels", "present", "sid")}
  with jax.set_mesh(local_mesh), nn.logical_axis_rules(()):
    for b in gen:
      zi, feat = enc_img(variables, put(b["image"]))
      if text_mode == "sentence_mean":
        zt = _sentence_mean(enc_txt, variables, put, b, loaded.tokenizer)
      else:
        zt = enc_txt(variables, put(b["tokens"]), put(b["text_mask"]),
                     put(b["sentence_ids"]))
      m = b["mask"]
      for key, val in (("img", zi), ("txt", zt), ("feat", feat),
                       ("labels", b["labels"]),
                       ("present", b["labels_present"]),
                       ("sid", b["study_id"])):
        keep[key].append(np.asarray(val)[m])
  arrays = {k: np.concatenate(v) for k, v in keep.items()}
  if jax.process_count() > 1:
    arrays = {k: _gather_ragged(v) for k, v in arrays.items()}
  return Embeddings(arrays["img"], arrays["txt"], arrays["feat"],
                    arrays["labels"], arrays["present"], arrays["sid"])


def _gather_ragged(x: np.ndarray) -> np.ndarray:
  """All-gathers per-process arrays of different lengths."""
  # Stacked (not tiled): [processes, 1] lengths, [processes, max, ...] data.
  n = np.asarray(multihost_utils.process_allgather(
      np.array([len(x)]))).reshape(-1)
  pad = int(n.max()) - len(x)
  padded = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
  allx = multihost_utils.process_allgather(padded)
  return np.concatenate([allx[i][:int(n[i])] for i in range(len(n))])


def run_in_training(config, model, state, tok, mesh) -> dict:
  """Cheap validation retrieval during training (uses the same modules)."""
  from jointcxr.evaluators import retrieval  # pylint: disable=g-import-not-at-top
  ev = config.get("evals", {}).get("retrieval")
  if not ev or not ev.get("limit") or not config.input.data_dir:
    return {}  # limit 0 turns the in-training evaluation off
  variables = {"params": state["params"]}
  if state.get("batch_stats"):
    variables["batch_stats"] = state["batch_stats"]
  # Every process needs the whole parameters (an all-gather under FSDP
  # across hosts, hence before the split check: all processes take part).
  loaded = loading.Loaded(config, model, sharding.host_value(variables), tok, None,
                  "training")
  try:
    pipeline.open_split(config.input.data_dir, ev.split)
  except ValueError as e:  # e.g. no validation split in this dataset
    logging.warning("in-training retrieval evaluation skipped: %s", e)
    return {}
  # Any other error is a bug and surfaces (an evaluation that silently
  # skips itself under some meshes is worse than a failed run).
  emb = embed_split(loaded, config.input.data_dir, ev.split,
                    batch_size=ev.batch_size, limit=ev.limit)
  del mesh
  return {f"val/{k}": v for k, v in retrieval.metrics(
      emb, ks=(1, 5, 10), pool_size=None).items()}
