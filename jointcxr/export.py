r"""Export trained towers for fine-tuning elsewhere, and import pretrained ones.

    python -m jointcxr.export --workdir=W --output=DIR [--format=flax|torch]

`flax` (default) writes `image_encoder.safetensors`, `text_encoder.safetensors`
and `heads.safetensors` (flattened "a/b/c" keys; BatchNorm statistics under
"batch_stats/..."), `config.json`, the tokenizer, `export.json` and a model
card. `torch` additionally writes the ResNet in torchvision's `state_dict`
layout (`resnet_torchvision.safetensors`) and the BERT tower in the HF BERT
layout (`bert_hf.safetensors`). Everything is safetensors/JSON: nothing is
pickled, nothing is executed on load.

In Flax: `load_image_encoder(DIR)` / `load_text_encoder(DIR)` return
`(module, variables)` ready for fine-tuning. Import: `config.model_init =
"image=resnet50.safetensors,text=bert.safetensors"` initialises the towers
from a local torchvision ResNet or HF BERT file (convert a `.pth` once with
`safetensors.torch.save_file(torch.load(p), out)`; `.pth` pickles are never
opened here), or from an exported directory.
"""

import importlib
import json
import os
import shutil
import sys
from typing import Any

from absl import app
from absl import flags
from flax import traverse_util
import numpy as np
from safetensors.numpy import load_file, save_file

from jointcxr import torch_layout
from jointcxr.data import tokenizer as tok_lib

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Flags of the binary (defined only when run as a program)."""
  flags.DEFINE_string("workdir", None, "Training workdir.")
  flags.DEFINE_string("output", None, "Export directory.")
  flags.DEFINE_enum("format", "flax", ["flax", "torch"],
                    "torch also writes torchvision/HF layouts.")


class ImportError_(ValueError):
  """Pretrained weights that do not fit the model (named keys/shapes)."""


def flatten(tree: Any) -> dict[str, np.ndarray]:
  """{"a/b/c": contiguous array} of a nested dict (safetensors' layout)."""
  return {k: np.ascontiguousarray(np.asarray(v))
          for k, v in traverse_util.flatten_dict(tree, sep="/").items()}


def unflatten(flat: dict[str, np.ndarray]) -> dict:
  """The nested dict of `flatten`'s "a/b/c" keys."""
  return traverse_util.unflatten_dict(flat, sep="/")


def _split_variables(variables: dict) -> dict[str, dict]:
  groups = {"image_encoder": {}, "text_encoder": {}, "heads": {}}
  for coll, tree in variables.items():
    for name, sub in tree.items():
      g = ("image_encoder" if name == "img" else "text_encoder" if name ==
           "txt" else "heads")
      groups[g].setdefault(coll, {})[name] = sub
  return groups


def export(workdir: str, output: str, fmt: str = "flax") -> dict:
  """Writes the export directory; returns its export.json contents."""
  from jointcxr.evaluators import common  # pylint: disable=g-import-not-at-top
  loaded = common.load_workdir(workdir)
  os.makedirs(output, exist_ok=True)
  import jax  # pylint: disable=g-import-not-at-top
  variables = jax.device_get(loaded.variables)
  files = []
  for name, vars_ in _split_variables(variables).items():
    path = os.path.join(output, f"{name}.safetensors")
    save_file(flatten(vars_), path)
    files.append(os.path.basename(path))
  cfg = json.loads(loaded.config.to_json_best_effort())
  with open(os.path.join(output, "config.json"), "w") as f:
    json.dump(cfg, f, indent=2, sort_keys=True)
  tok_src = tok_lib.run_tokenizer_path(loaded.config, workdir)
  tok_name = "vocab.txt" if tok_src.endswith(".txt") else "tokenizer.model"
  shutil.copy(tok_src, os.path.join(output, tok_name))
  if fmt == "torch":
    m = loaded.config.model
    if m.image_model == "resnet":
      save_file(torch_layout.resnet_to_torchvision(
          variables["params"]["img"], variables.get("batch_stats", {}).get(
              "img", {})), os.path.join(output,
                                        "resnet_torchvision.safetensors"))
      files.append("resnet_torchvision.safetensors")
    if m.text_model == "bert":
      save_file(torch_layout.bert_to_hf(variables["params"]["txt"]),
                os.path.join(output, "bert_hf.safetensors"))
      files.append("bert_hf.safetensors")
  evals = {}
  for name in ("global", "localized"):
    p = os.path.join(workdir, "eval", f"{name}.json")
    if os.path.exists(p):
      with open(p) as f:
        evals[name] = json.load(f)
  meta = {"method": loaded.config.method, "step": loaded.step,
          "data_dir": loaded.config.input.data_dir, "files": files,
          "tokenizer": tok_name, "format": fmt, "source": os.path.abspath(
              workdir)}
  with open(os.path.join(output, "export.json"), "w") as f:
    json.dump(meta, f, indent=2, sort_keys=True)
  with open(os.path.join(output, "model_card.md"), "w") as f:
    f.write(model_card(meta, cfg, evals))
  return meta


def model_card(meta: dict, cfg: dict, evals: dict) -> str:
  """A short Markdown model card."""
  m = cfg["model"]
  lines = [f"# jointcxr {meta['method']} model", "",
           f"- method: {meta['method']} (trained {meta['step']} steps)",
           f"- image tower: {m['image_model']} {m['image']}",
           f"- text tower: {m['text_model']} {m['text']}",
           f"- data: {meta['data_dir']}",
           f"- input: {cfg['input']['image_size']} px grayscale, "
           f"normalised (x/255 - {cfg['input']['mean']}) / "
           f"{cfg['input']['std']}; tokenizer `{meta['tokenizer']}`",
           "- files: " + ", ".join(meta["files"]), "",
           "Load in Flax: `jointcxr.export.load_image_encoder(DIR)` / "
           "`load_text_encoder(DIR)` -> (module, variables).", ""]
  for name, res in evals.items():
    keys = [k for k in sorted(res) if k.endswith(("R@1", "auroc_mean",
                                                  "dice_mean", "map_mean",
                                                  "pointing_game"))]
    if keys:
      lines += [f"## {name} evaluation", "", "| metric | value |",
                "|---|---|"] + [f"| {k} | {res[k]} |" for k in keys] + [""]
  lines.append("Numbers on synthetic data validate the machinery, not "
               "clinical performance.")
  return "\n".join(lines) + "\n"


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


def _tower(cfg: dict, kind: str):
  m = cfg["model"]
  name = m["image_model"] if kind == "image" else m["text_model"]
  kwargs = dict(m["image"] if kind == "image" else m["text"])
  return importlib.import_module(f"jointcxr.models.{name}").Model(**kwargs)


def _load_group(directory: str, name: str, key: str) -> dict:
  flat = load_file(os.path.join(directory, f"{name}.safetensors"))
  tree = unflatten(flat)
  return {coll: sub[key] for coll, sub in tree.items() if key in sub}


def load_image_encoder(directory: str):
  """(image tower module, {"params", "batch_stats"}) from an export."""
  _, cfg = _meta(directory)
  return _tower(cfg, "image"), _load_group(directory, "image_encoder", "img")


def load_text_encoder(directory: str):
  """(text tower module, {"params"}) from an export (+ its tokenizer path)."""
  meta, cfg = _meta(directory)
  tower = _tower_with_vocab(cfg, directory, meta)
  return tower, _load_group(directory, "text_encoder", "txt")


def _tower_with_vocab(cfg, directory, meta):
  text = dict(cfg["model"]["text"])
  if text.get("vocab_size", -1) == -1:
    text["vocab_size"] = tok_lib.load_tokenizer(os.path.join(
        directory, meta["tokenizer"])).vocab_size
  return importlib.import_module(
      f"jointcxr.models.{cfg['model']['text_model']}").Model(**text)


def load_model(directory: str):
  """The whole two-tower model as `evaluators.common.Loaded`."""
  import ml_collections as mlc  # pylint: disable=g-import-not-at-top
  from jointcxr.evaluators import common  # pylint: disable=g-import-not-at-top
  from jointcxr.models import factory  # pylint: disable=g-import-not-at-top
  meta, cfg = _meta(directory)
  config = mlc.ConfigDict(cfg)
  tok = tok_lib.load_tokenizer(os.path.join(directory, meta["tokenizer"]))
  variables: dict = {}
  for name in ("image_encoder", "text_encoder", "heads"):
    for coll, sub in unflatten(load_file(os.path.join(
        directory, f"{name}.safetensors"))).items():
      variables.setdefault(coll, {}).update(sub)
  return common.Loaded(config, factory.from_config(config, tok.vocab_size),
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
      src = load_model(path).variables
      for k in ("img", "txt"):
        _check_fit(flatten(params[k]), flatten(src["params"][k]),
                   f"{path}:{k}")
        params[k] = src["params"][k]
        if k in stats:
          _check_fit(flatten(stats[k]), flatten(src.get(
              "batch_stats", {}).get(k, {})), f"{path}:{k} batch_stats")
          stats[k] = src["batch_stats"][k]
    elif kind == "image":
      flat = load_file(path)
      conv = torch_layout.torchvision_to_resnet(
          flat, in_channels=config.model.image.get("in_channels", 1))
      _check_fit(flatten(params["img"]), flatten(conv["params"]), path)
      params["img"] = conv["params"]
      if "img" in stats:
        _check_fit(flatten(stats["img"]), flatten(conv["batch_stats"]),
                   f"{path} (running statistics)")
        stats["img"] = conv["batch_stats"]
    elif kind == "text":
      conv = torch_layout.hf_to_bert(load_file(path))
      target = flatten(params["txt"])
      _check_fit({k: v for k, v in target.items() if not k.startswith(
          "mlm")}, flatten(conv), path)
      params["txt"] = unflatten({**target, **flatten(conv)})
    else:
      raise ImportError_(f"model_init entry {entry!r}: expected image=..., "
                         "text=... or an export directory")
  return {"params": params, "batch_stats": stats}


def main(argv):
  del argv
  if not FLAGS.workdir or not FLAGS.output:
    print("error: --workdir and --output are required", file=sys.stderr)
    sys.exit(2)
  try:
    meta = export(FLAGS.workdir, FLAGS.output, FLAGS.format)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(f"exported {meta['method']} (step {meta['step']}) to {FLAGS.output}:"
        f" {', '.join(meta['files'])}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
