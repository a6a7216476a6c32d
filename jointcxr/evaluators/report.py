"""Writing evaluation results: flat JSON + a Markdown table, atomically."""

import json
import math
import os
from typing import Mapping


def _fmt(v) -> str:
  if isinstance(v, float):
    if math.isnan(v):
      return "n/a"
    return f"{v:.4f}" if abs(v) < 1000 else f"{v:.0f}"
  return str(v)


def markdown_table(metrics: Mapping[str, object], title: str) -> str:
  """Two-column table, keys grouped by their first path component."""
  lines = [f"## {title}", "", "| metric | value |", "|---|---|"]
  for k in sorted(metrics):
    lines.append(f"| {k} | {_fmt(metrics[k])} |")
  return "\n".join(lines) + "\n"


def write(out_dir: str, name: str, metrics: Mapping[str, object],
          title: str, extra_md: str = "") -> tuple[str, str]:
  """Writes `<out_dir>/<name>.json` and `.md`; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  jpath, mpath = (os.path.join(out_dir, f"{name}.{ext}") for ext in ("json",
                                                                    "md"))
  clean = {k: (None if isinstance(v, float) and math.isnan(v) else v)
           for k, v in metrics.items()}
  for path, text in ((jpath, json.dumps(clean, indent=2, sort_keys=True)),
                     (mpath, markdown_table(metrics, title) + extra_md)):
    with open(path + ".tmp", "w") as f:
      f.write(text)
    os.replace(path + ".tmp", path)
  return jpath, mpath
