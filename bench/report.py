"""Writing one benchmark's results: `<stem>.json` and `<stem>.md`."""

import json
import os
import platform
from typing import Any

# The ISA features that change CPU kernel choice (and so every speed ratio).
_ISA = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
        "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8")


def machine() -> dict[str, Any]:
  """CPU model, core count and ISA flags of this host, for result headers.

  Speed figures are only comparable on one CPU model and ISA, so every
  benchmark records them (read from /proc/cpuinfo; "unknown" elsewhere).
  """
  model, flags = "unknown", set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
          model = value.strip()
        elif key.strip() == "flags" and not flags:
          flags = set(value.split())
  except OSError:
    pass
  return {"cpu_model": model, "cpu_count": os.cpu_count(),
          "machine": platform.machine(),
          "isa": [f for f in _ISA if f in flags]}


def machine_line(c: dict[str, Any]) -> str:
  """One header phrase from a `machine()` dict (older results: partial)."""
  isa = c.get("isa")
  return (f"{c.get('cpu_model', 'CPU model not recorded')}, "
          f"{c.get('cpu_count', '?')} CPUs ({c.get('machine', '?')}; ISA: "
          f"{', '.join(isa) if isa else 'not recorded'})")


def write_pair(output_dir: str, stem: str, result: dict[str, Any],
               markdown: str, *, measured_here: bool = True
               ) -> tuple[str, str]:
  """Writes `<stem>.json` and `<stem>.md` atomically; returns their paths.

  Each file goes through a `.tmp` sibling and `os.replace`, so an
  interrupted benchmark never leaves a half-written result behind. A result
  `measured_here` (every benchmark's own run) is stamped with this host's
  `machine()` under "host_machine" unless it has one; the Markdown gets a
  "Host:" line under its title unless it already names the host, so no
  figure is compared across CPUs by accident.
  """
  if measured_here and "host_machine" not in result:
    result = {**result, "host_machine": machine()}
  host = result.get("host_machine")
  line = f"Host: {machine_line(host) if host else 'not recorded'}."
  if host is None or machine_line(host) not in markdown:
    head, sep, rest = markdown.partition("\n")
    markdown = f"{head}\n\n{line}{sep}{rest}"
  os.makedirs(output_dir, exist_ok=True)
  paths = []
  for name, text in ((f"{stem}.json", json.dumps(result, indent=1)),
                     (f"{stem}.md", markdown)):
    path = os.path.join(output_dir, name)
    with open(path + ".tmp", "w") as f:
      f.write(text + "\n")
    os.replace(path + ".tmp", path)
    paths.append(path)
  return paths[0], paths[1]
