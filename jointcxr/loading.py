r"""Loading a trained model: one home for workdirs, exports and imports.

- `load(path, checkpoint)`: a training workdir (its `config.json`,
  tokenizer and the newest, best-by-validation or a given checkpoint, read
  through `checkpointing.read_variables`: params and batch_stats only) or
  an export directory (`jointcxr.export` writes them) as a `Loaded`.
- `load_image_encoder(DIR)` / `load_text_encoder(DIR)`: one tower of an
  export as `(module, variables)`, ready for fine-tuning.
- `load_pretrained(config, variables)`: `config.model_init` ("image=<file>",
  "text=<file>" in torchvision / HF BERT safetensors layouts, or an export
  directory) applied to freshly initialised variables. Pickles are never
  opened.

Evaluators, the exporter, the trainer and users' fine-tuning code all load
through here; none opens orbax or safetensors files its own way.
"""

import dataclasses
import importlib
import json
import os
from typing import Any

from flax import traverse_util
import ml_collections as mlc
import numpy as np
from safetensors.numpy import load_file

from jointcxr import checkpointing
from jointcxr import torch_layout
from jointcxr.data import tokenizer as tok_lib
from jointcxr.models import factory


@dataclasses.dataclass
class Loaded:
  """A model ready to apply: config, module, variables, tokenizer."""
  config: mlc.ConfigDict
  model: Any
  variables: dict       # {"params": ..., "batch_stats": ...}
  tokenizer: Any
  step: int | None
  source: str


def _config_from_json(path: str) -> mlc.ConfigDict:
  """A training run's saved `config.json` as a ConfigDict."""
  with open(path) as f:
    return mlc.ConfigDict(json.load(f))


def checkpoint_choice(value: Any) -> int | str | None:
  """Parses an eval config's `checkpoint`: "latest" | "best" | a step.

  Returns:
    None (the newest), "best", or the step number.

  Raises:
    ValueError: anything else.
  """
  text = str(value).strip().lower()
  if text in ("", "latest", "none"):
    return None
  if text == "best":
    return "best"
  if text.isdigit():
    return int(text)
  raise ValueError(f"checkpoint={value!r}: expected 'latest', 'best' or a "
                   "step number")


def load_workdir(workdir: str, step: int | str | None = None) -> Loaded:
  """Model + variables from a training workdir.

  Args:
    workdir: the training workdir.
    step: None / "latest" for the newest checkpoint, a step number, or
      "best": the best state by the validation metric that the trainer
      kept in `checkpoints_best/` (`config.val`, `config.early_stopping`).

  Returns:
    The loaded model (`step` says which step it is).

  Raises:
    FileNotFoundError: not a workdir, or no (best) checkpoint in it.
  """
  step = checkpoint_choice(step) if isinstance(step, str) else step
  cfg_path = os.path.join(workdir, "config.json")
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(f"{workdir} is not a training workdir (no "
                            "config.json)")
  config = _config_from_json(cfg_path)
  tok = tok_lib.load_tokenizer(tok_lib.run_tokenizer_path(config, workdir))
  model = factory.from_config(config, tok.vocab_size)
  sub = checkpointing.BEST_DIR if step == "best" else "checkpoints"
  directory = os.path.join(os.path.abspath(workdir), sub)
  if step == "best" and not os.path.isdir(directory):
    raise FileNotFoundError(
        f"{workdir} has no best checkpoint ({sub}/): it is kept only when "
        "training validates (config.val.every_steps, val.keep_best)")
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"{workdir}/{sub} holds no checkpoint")
  # The best directory keeps one state (an older one only until the newer
  # save commits): its newest step is the best.
  try:
    step, variables = checkpointing.read_variables(
        directory, None if step in (None, "best") else step)
  except checkpointing.CheckpointError as e:
    raise FileNotFoundError(str(e)) from None
  return Loaded(config, model, variables, tok, step, workdir)


def load(path: str, checkpoint: Any = "latest") -> Loaded:
  """A training workdir or an exported model directory.

  Args:
    path: the directory.
    checkpoint: of a workdir, "latest", "best" or a step number
      (`checkpoint_choice`); an exported model has one state ("latest").

  Returns:
    The loaded model.
  """
  choice = checkpoint_choice(checkpoint)
  if os.path.exists(os.path.join(path, "model_card.md")) or os.path.exists(
      os.path.join(path, "export.json")):
    if choice is not None:
      raise ValueError(f"checkpoint={checkpoint!r} selects among a training "
                       f"workdir's checkpoints; {path} is an exported model")
    return load_export(path)
  return load_workdir(path, choice)


class ImportError_(ValueError):  # pylint: disable=invalid-name
  """Pretrained weights that do not fit the model (named keys/shapes)."""


def _flat(tree: Any) -> dict[str, np.ndarray]:
  """{"a/b/c": array} of a nested dict (the safetensors layout)."""
  return traverse_util.flatten_dict(tree, sep="/")


def _meta(directory: str) -> tuple[dict, dict]:
  for name in ("export.json", "config.json"):
    if not os.path.exists(os.path.join(directory, name)):
      raise FileNotFoundError(f"{directory} is not a jointcxr export (no "
                              f"{name})")
  with open(os.path.join(directory, "export.json")) as f:
    meta = json.load(f)
  with open(os.path.join(directory, "config.json")) as f:
    cfg = json.load(f)
  return meta, cfg


def _read_group(directory: str, name: str) -> dict:
  """{collection: {tower: ...}} of one `<name>.safetensors` of an export."""
  return traverse_util.unflatten_dict(
      load_file(os.path.join(directory, f"{name}.safetensors")), sep="/")


def _image_tower(cfg: dict):
  m = cfg["model"]
  return importlib.import_module(f"jointcxr.models.{m['image_model']}").Model(
      **m["image"])


def _text_tower(cfg: dict, directory: str, meta: dict):
  """The text tower; a vocabulary size of -1 is read from the tokenizer."""
  text = dict(cfg["model"]["text"])
  if text.get("vocab_size", -1) == -1:
    text["vocab_size"] = tok_lib.load_tokenizer(os.path.join(
        directory, meta["tokenizer"])).vocab_size
  return importlib.import_module(
      f"jointcxr.models.{cfg['model']['text_model']}").Model(**text)


def load_image_encoder(directory: str):
  """(image tower module, {"params", "batch_stats"}) from an export."""
  _, cfg = _meta(directory)
  tree = _read_group(directory, "image_encoder")
  return _image_tower(cfg), {c: sub["img"] for c, sub in tree.items()
                             if "img" in sub}


def load_text_encoder(directory: str):
  """(text tower module, {"params"}) from an export (+ its tokenizer path)."""
  meta, cfg = _meta(directory)
  tree = _read_group(directory, "text_encoder")
  return _text_tower(cfg, directory, meta), {c: sub["txt"] for c, sub in
                                             tree.items() if "txt" in sub}


def load_export(directory: str) -> Loaded:
  """The whole two-tower model of an export directory."""
  meta, cfg = _meta(directory)
  config = mlc.ConfigDict(cfg)
  tok = tok_lib.load_tokenizer(os.path.join(directory, meta["tokenizer"]))
  variables: dict = {}
  for name in ("image_encoder", "text_encoder", "heads"):
    for coll, sub in _read_group(directory, name).items():
      variables.setdefault(coll, {}).update(sub)
  return Loaded(config, factory.from_config(config, tok.vocab_size),
                variables, tok, meta.get("step"), directory)


def _check_fit(target: dict, source: dict, what: str) -> None:
  missing = sorted(set(target) - set(source))
  bad = [(k, source[k].shape, target[k].shape) for k in target
         if k in source and tuple(source[k].shape) != tuple(target[k].shape)]
  if missing or bad:
    parts = []
    if missing:
      parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
    if bad:
      parts.append("shape mismatches (e.g. " + ", ".join(
          f"{k}: file {s} vs model {t}" for k, s, t in bad[:3]) + ")")
    raise ImportError_(f"{what} does not fit the model: " + "; ".join(parts))


def load_pretrained(config, variables: dict) -> dict:
  """Applies `config.model_init` to the model's parameters *and* BatchNorm
  statistics.

  Entries: "image=<file>", "text=<file>" (torchvision / HF BERT layouts in
  safetensors) or an exported directory (both towers). A torchvision file
  brings its `running_mean` / `running_var` with it: a tower evaluated or
  frozen before any training step must normalise with them, not with the
  fresh initialisation's 0 / 1.

  Args:
    config: the training config (`model_init`, `model.image`).
    variables: {"params": ..., "batch_stats": ...} of the initialised model
      (host arrays; "batch_stats" may be absent or empty).

  Returns:
    New {"params", "batch_stats"} with the imported towers replaced.

  Raises:
    ImportError_: a pickle, a missing file, or weights that do not fit the
      model (named keys and shapes).
  """
  params = dict(variables["params"])
  stats = dict(variables.get("batch_stats") or {})
  for entry in filter(None, (e.strip() for e in config.model_init.split(
      ","))):
    kind, _, path = entry.partition("=") if "=" in entry else ("dir", "",
                                                               entry)
    if path.endswith((".pth", ".pt", ".bin", ".ckpt")):
      raise ImportError_(f"{path}: pickled PyTorch files are never loaded; "
                         "convert once with safetensors.torch.save_file("
                         "torch.load(path), 'weights.safetensors')")
    if not os.path.exists(path):
      raise ImportError_(f"model_init file {path} does not exist")
    if kind == "dir":
      src = load_export(path).variables
      for k in ("img", "txt"):
        _check_fit(_flat(params[k]), _flat(src["params"][k]),
                   f"{path}:{k}")
        params[k] = src["params"][k]
        if k in stats:
          _check_fit(_flat(stats[k]), _flat(src.get(
              "batch_stats", {}).get(k, {})), f"{path}:{k} batch_stats")
          stats[k] = src["batch_stats"][k]
    elif kind == "image":
      flat = load_file(path)
      conv = torch_layout.torchvision_to_resnet(
          flat, in_channels=config.model.image.get("in_channels", 1))
      _check_fit(_flat(params["img"]), _flat(conv["params"]), path)
      params["img"] = conv["params"]
      if "img" in stats:
        _check_fit(_flat(stats["img"]), _flat(conv["batch_stats"]),
                   f"{path} (running statistics)")
        stats["img"] = conv["batch_stats"]
    elif kind == "text":
      conv = torch_layout.hf_to_bert(load_file(path))
      target = _flat(params["txt"])
      _check_fit({k: v for k, v in target.items() if not k.startswith(
          "mlm")}, _flat(conv), path)
      params["txt"] = traverse_util.unflatten_dict({**target, **_flat(conv)},
                                                   sep="/")
    else:
      raise ImportError_(f"model_init entry {entry!r}: expected image=..., "
                         "text=... or an export directory")
  return {"params": params, "batch_stats": stats}
