"""Name/layout conversion between our Flax towers and PyTorch checkpoints.

ResNet <-> torchvision `state_dict`: `layer{s}_{i}` <-> `layer{s}.{i}`,
`downsample_conv/_bn` <-> `downsample.0/.1`, conv kernels HWIO <-> OIHW, BN
`scale/bias` + batch stats `mean/var` <-> `weight/bias/running_mean/
running_var` (+ `num_batches_tracked`). A 1-channel stem is exported as a
3-channel one with the kernel split evenly over RGB (the same output for a
gray image replicated to RGB) and folded back by summing on import.

BERT <-> HF BERT: see the table in `jointcxr/models/bert.py`; dense kernels
are transposed, an optional "bert." prefix and the pooler are ignored.
"""

import re

import numpy as np


def _bn(out, tv_prefix, scale_bias, stats):
  out[f"{tv_prefix}.weight"] = np.asarray(scale_bias["scale"])
  out[f"{tv_prefix}.bias"] = np.asarray(scale_bias["bias"])
  out[f"{tv_prefix}.running_mean"] = np.asarray(stats["mean"])
  out[f"{tv_prefix}.running_var"] = np.asarray(stats["var"])
  out[f"{tv_prefix}.num_batches_tracked"] = np.asarray(0, np.int64)


def _tv_name(flax_name: str) -> str:
  m = re.fullmatch(r"layer(\d+)_(\d+)", flax_name)
  return f"layer{m.group(1)}.{m.group(2)}" if m else flax_name


def resnet_to_torchvision(params: dict, batch_stats: dict,
                          rgb_stem: bool = True) -> dict[str, np.ndarray]:
  """Flax ResNet params + stats -> torchvision state_dict arrays."""
  out = {}
  for name, sub in params.items():
    if name.startswith("conv"):
      k = np.asarray(sub["kernel"]).transpose(3, 2, 0, 1)
      if name == "conv1" and rgb_stem and k.shape[1] == 1:
        k = np.repeat(k / 3.0, 3, axis=1)
      out[f"{name}.weight"] = np.ascontiguousarray(k)
    elif name.startswith("bn"):
      _bn(out, name, sub, batch_stats[name])
    else:  # a block
      tv = _tv_name(name)
      for child, leaf in sub.items():
        cname = {"downsample_conv": "downsample.0",
                 "downsample_bn": "downsample.1"}.get(child, child)
        if "conv" in child:
          out[f"{tv}.{cname}.weight"] = np.ascontiguousarray(
              np.asarray(leaf["kernel"]).transpose(3, 2, 0, 1))
        else:
          _bn(out, f"{tv}.{cname}", leaf, batch_stats[name][child])
  return out


def torchvision_to_resnet(sd: dict[str, np.ndarray], in_channels: int = 1
                          ) -> dict:
  """torchvision state_dict -> {"params", "batch_stats"} of our ResNet."""
  params, stats = {}, {}
  for key, val in sd.items():
    if key.startswith("fc.") or key.endswith("num_batches_tracked"):
      continue
    parts = key.split(".")
    if parts[0].startswith("layer"):
      block = f"{parts[0]}_{parts[1]}"
      child = parts[2]
      if child == "downsample":
        child = "downsample_conv" if parts[3] == "0" else "downsample_bn"
      leaf = parts[-1]
      p_node = params.setdefault(block, {}).setdefault(child, {})
      s_node = stats.setdefault(block, {}).setdefault(child, {})
    else:
      child, leaf = parts[0], parts[-1]
      p_node = params.setdefault(child, {})
      s_node = stats.setdefault(child, {})
    v = np.asarray(val, np.float32)
    if leaf == "weight" and v.ndim == 4:
      k = v.transpose(2, 3, 1, 0)
      if child == "conv1" and in_channels == 1 and k.shape[2] == 3:
        k = k.sum(axis=2, keepdims=True)
      p_node["kernel"] = k
    elif leaf == "weight":
      p_node["scale"] = v
    elif leaf == "bias":
      p_node["bias"] = v
    elif leaf == "running_mean":
      s_node["mean"] = v
    elif leaf == "running_var":
      s_node["var"] = v
  prune = lambda t: {k: prune(v) if isinstance(v, dict) else v
                     for k, v in t.items() if not isinstance(v, dict) or v}
  return {"params": prune(params), "batch_stats": prune(stats)}


_BERT_LAYER = {
    ("attn", "query"): "attention.self.query",
    ("attn", "key"): "attention.self.key",
    ("attn", "value"): "attention.self.value",
    ("attn", "out"): "attention.output.dense",
    ("ln_attn",): "attention.output.LayerNorm",
    ("mlp_in",): "intermediate.dense",
    ("mlp_out",): "output.dense",
    ("ln_mlp",): "output.LayerNorm",
}
_BERT_EMB = {"embed_word": "embeddings.word_embeddings",
             "embed_position": "embeddings.position_embeddings",
             "embed_type": "embeddings.token_type_embeddings",
             "embed_ln": "embeddings.LayerNorm"}


def _leaf(name: str, arr) -> tuple[str, np.ndarray]:
  arr = np.asarray(arr)
  if name == "kernel":
    return "weight", np.ascontiguousarray(arr.T)
  if name in ("scale", "embedding"):
    return "weight", arr
  return name, arr


def bert_to_hf(params: dict) -> dict[str, np.ndarray]:
  """Our BERT tower params -> HF BERT `BertModel` state_dict keys."""
  out = {}
  for name, hf in _BERT_EMB.items():
    for leaf, arr in params[name].items():
      k, v = _leaf(leaf, arr)
      out[f"{hf}.{k}"] = v
  for lname, layer in params["encoder"].items():
    i = int(lname.split("_")[1])
    for path, hf in _BERT_LAYER.items():
      node = layer
      for p in path:
        node = node[p]
      for leaf, arr in node.items():
        k, v = _leaf(leaf, arr)
        out[f"encoder.layer.{i}.{hf}.{k}"] = v
  return out


def hf_to_bert(sd: dict[str, np.ndarray]) -> dict:
  """HF BERT state_dict (optionally "bert."-prefixed) -> our BERT params."""
  sd = {k[5:] if k.startswith("bert.") else k: v for k, v in sd.items()}
  out: dict = {}
  inv_emb = {v: k for k, v in _BERT_EMB.items()}
  inv_layer = {v: k for k, v in _BERT_LAYER.items()}
  for key, val in sd.items():
    v = np.asarray(val, np.float32)
    base, _, leaf = key.rpartition(".")
    if base in inv_emb:
      name = "embedding" if "LayerNorm" not in base else (
          "scale" if leaf == "weight" else "bias")
      out.setdefault(inv_emb[base], {})[name if leaf == "weight" or
                                        "LayerNorm" in base else leaf] = v
      continue
    m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", base)
    if not m or m.group(2) not in inv_layer:
      continue  # pooler, position_ids, heads of other tasks
    node = out.setdefault("encoder", {}).setdefault(f"layer_{m.group(1)}",
                                                    {})
    for p in inv_layer[m.group(2)]:
      node = node.setdefault(p, {})
    if "LayerNorm" in m.group(2):
      node["scale" if leaf == "weight" else "bias"] = v
    else:
      node["kernel" if leaf == "weight" else "bias"] = v.T if (
          leaf == "weight") else v
  return out
