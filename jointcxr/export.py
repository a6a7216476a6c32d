r"""Export trained towers for fine-tuning elsewhere (the binary).

    python -m jointcxr.export --workdir=W --output=DIR [--format=flax|torch]

`flax` (default) writes `image_encoder.safetensors`, `text_encoder.safetensors`
and `heads.safetensors` (flattened "a/b/c" keys; BatchNorm statistics under
"batch_stats/..."), `config.json`, the tokenizer, `export.json` and a model
card. `torch` additionally writes the ResNet in torchvision's `state_dict`
layout (`resnet_torchvision.safetensors`) and the BERT tower in the HF BERT
layout (`bert_hf.safetensors`). Everything is safetensors/JSON: nothing is
pickled, nothing is executed on load.

Loading lives in `jointcxr.loading`: `load_image_encoder(DIR)` /
`load_text_encoder(DIR)` return `(module, variables)` ready for
fine-tuning, `load(DIR)` the whole model; `config.model_init =
"image=resnet50.safetensors,text=bert.safetensors"` initialises the towers
from a local torchvision ResNet or HF BERT file (convert a `.pth` once with
`safetensors.torch.save_file(torch.load(p), out)`; `.pth` pickles are never
opened), or from an exported directory (`loading.load_pretrained`).
"""

import json
import os
import shutil
import sys
from typing import Any

from absl import app
from absl import flags
from flax import traverse_util
import numpy as np
from safetensors.numpy import save_file

from jointcxr import loading
from jointcxr import torch_layout
from jointcxr.data import tokenizer as tok_lib

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Flags of the binary (defined only when run as a program)."""
  flags.DEFINE_string("workdir", None, "Training workdir.")
  flags.DEFINE_string("output", None, "Export directory.")
  flags.DEFINE_enum("format", "flax", ["flax", "torch"],
                    "torch also writes torchvision/HF layouts.")


def flatten(tree: Any) -> dict[str, np.ndarray]:
  """{"a/b/c": contiguous array} of a nested dict (safetensors' layout)."""
  return {k: np.ascontiguousarray(np.asarray(v))
          for k, v in traverse_util.flatten_dict(tree, sep="/").items()}


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
  loaded = loading.load_workdir(workdir)
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
           "Load in Flax: `jointcxr.loading.load_image_encoder(DIR)` / "
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
