r"""Compiled per-device memory of the cross-batch losses vs global batch size.

For the global InfoNCE loss and the DAMSM word loss (value and gradients
w.r.t. the embeddings), compiles the step for a 1-device and an 8-device
`data` mesh and reads XLA's buffer assignment
(`jax.jit(...).lower(...).compile().memory_analysis()`: temp, argument and
output bytes of the per-device program). Versions:

* `gspmd`: the plain loss over globally sharded arrays (XLA partitions it);
* `shard_map`: `jointcxr.losses.sharded` (each device scores its own rows
  against all-gathered candidates);
* `shard_map_chunk<k>` (DAMSM only): the same, scoring k texts at a time.

Nothing is executed, so large batches cost compile time only. The 8 devices
are fake CPU devices: `run` re-launches this module in a subprocess with
`XLA_FLAGS=--xla_force_host_platform_device_count=8`.

  python -m bench.loss_memory --output_dir=bench/results \
      --batch_sizes=256,512,1024,2048

writes `loss_memory.json` and `loss_memory.md` (tables with the D=1 / D=8
ratio and the growth from the previous batch size: 4x per doubling is the
B^2 regime).
"""

import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Sequence

from absl import app
from absl import flags

from bench import report
from tqdm import tqdm

def _define_flags() -> None:
  """Defines the command-line flags (only when run as a program).

  Kept out of import time so the benchmark modules import together (tests
  import several; absl refuses a flag defined twice).
  """
  flags.DEFINE_string("output_dir", "bench/results",
                      "Where loss_memory.{json,md} go.")
  flags.DEFINE_list("batch_sizes", ["256", "512", "1024", "2048"],
                    "Global batch sizes (multiples of 8).")
  flags.DEFINE_integer("dim", 32, "Embedding dimension.")
  flags.DEFINE_integer("regions", 16, "DAMSM regions per image.")
  flags.DEFINE_integer("words", 16, "DAMSM words per text.")
  flags.DEFINE_integer("chunk", 8, "Texts per DAMSM chunk.")
  flags.DEFINE_list("select", None, "Only these loss:version pairs, e.g. "
                    "damsm_word:shard_map (default: all).")
  flags.DEFINE_string("worker_json", None, "Internal: measure in this "
                      "process (it must have 8 devices) and write the rows "
                      "here.")


DEVICE_COUNTS = (1, 8)
MIB = 2.0 ** 20


def _loss_fns(mesh: Any, cfg: dict[str, Any]) -> dict[str, Any]:
  """(loss, version) -> f(x, y) for value_and_grad, x/y the embeddings."""
  from jointcxr import losses  # pylint: disable=g-import-not-at-top
  from jointcxr.losses import sharded  # pylint: disable=g-import-not-at-top
  mask_t = lambda y: y[..., 0] == y[..., 0]  # noqa: E731  all-valid, traced
  g = dict(gamma1=4.0, gamma2=5.0, gamma3=10.0)
  return {
      ("infonce", "gspmd"): lambda x, y: losses.infonce(
          x, y, temperature=0.1)[0],
      ("infonce", "shard_map"): lambda x, y: sharded.infonce(
          x, y, mesh=mesh, temperature=0.1)[0],
      ("damsm_word", "gspmd"): lambda x, y: losses.damsm_word(
          x, y, mask_t(y), **g)[0],
      ("damsm_word", "shard_map"): lambda x, y: sharded.damsm_word(
          x, y, mask_t(y), mesh=mesh, **g)[0],
      ("damsm_word", f"shard_map_chunk{cfg['chunk']}"):
          lambda x, y: sharded.damsm_word(x, y, mask_t(y), mesh=mesh,
                                          chunk_size=cfg["chunk"], **g)[0],
  }


def measure(batch_sizes: Sequence[int], *, dim: int, regions: int,
            words: int, chunk: int,
            device_counts: Sequence[int] = DEVICE_COUNTS,
            select: Sequence[tuple[str, str]] | None = None,
            progress: bool = True) -> list[dict[str, Any]]:
  """Compiles every (loss, version, D, B) in this process; returns rows.

  Needs `max(device_counts)` JAX devices in this process. `select` keeps
  only the listed (loss, version) pairs.
  """
  # Imported here so that the parent of `run(use_subprocess=True)` never
  # starts a JAX backend. pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import Mesh
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  if jax.device_count() < max(device_counts):
    raise RuntimeError(f"need {max(device_counts)} devices, have "
                       f"{jax.device_count()}; use run(subprocess=True)")
  cfg = {"chunk": chunk}
  known = set(_loss_fns(None, cfg))
  unknown = [s for s in select or () if tuple(s) not in known]
  if unknown:
    raise ValueError(f"unknown loss:version {unknown}; known: "
                     f"{sorted(known)}")
  jobs = []
  for ndev in device_counts:
    mesh = Mesh(np.array(jax.devices()[:ndev]), ("data",))
    for (loss, version), fn in _loss_fns(mesh, cfg).items():
      if select is not None and (loss, version) not in select:
        continue
      for b in batch_sizes:
        if b % ndev:
          raise ValueError(f"batch size {b} is not divisible by {ndev}")
        jobs.append((loss, version, ndev, b, mesh, fn))
  rows = []
  for loss, version, ndev, b, mesh, fn in tqdm(
      jobs, desc="compile", disable=not progress):
    sharding = NamedSharding(mesh, P("data"))
    if loss == "infonce":
      shapes = [(b, dim), (b, dim)]
    else:
      shapes = [(b, regions, dim), (b, words, dim)]
    args = [jax.ShapeDtypeStruct(s, jnp.float32, sharding=sharding)
            for s in shapes]
    step = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
    stats = step.lower(*args).compile().memory_analysis()
    row = {"loss": loss, "version": version, "devices": ndev, "batch": b,
           "temp_bytes": int(stats.temp_size_in_bytes),
           "argument_bytes": int(stats.argument_size_in_bytes),
           "output_bytes": int(stats.output_size_in_bytes)}
    row["total_bytes"] = (row["temp_bytes"] + row["argument_bytes"]
                          + row["output_bytes"])
    rows.append(row)
  return rows


def run(batch_sizes: Sequence[int] = (256, 512, 1024, 2048), *,
        dim: int = 32, regions: int = 16, words: int = 16, chunk: int = 8,
        select: Sequence[tuple[str, str]] | None = None,
        use_subprocess: bool = True) -> dict[str, Any]:
  """Measures the table; returns `{"config": ..., "rows": [...]}`.

  Args:
    batch_sizes: global batch sizes (multiples of 8).
    dim: embedding dimension.
    regions: DAMSM regions per image (R).
    words: DAMSM words per text (T).
    chunk: texts per chunk of the chunked DAMSM version.
    select: only these (loss, version) pairs, e.g.
      `[("damsm_word", "shard_map")]`; None = all.
    use_subprocess: run in a child process with 8 fake CPU devices (the
      current process's device count is fixed once JAX has started). False =
      measure here (this process must already have 8 devices, as the tests
      do).

  Returns:
    dict with `config` (the arguments and device kind) and `rows`, one per
    (loss, version, devices, batch) with temp/argument/output/total bytes per
    device.
  """
  config = {"batch_sizes": [int(b) for b in batch_sizes], "dim": dim,
            "regions": regions, "words": words, "chunk": chunk,
            "device_counts": list(DEVICE_COUNTS),
            "devices": "fake CPU devices (XLA host platform)"}
  if not use_subprocess:
    rows = measure(batch_sizes, dim=dim, regions=regions, words=words,
                   chunk=chunk, select=select, progress=False)
    return {"config": config, "rows": rows}
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "rows.json")
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    cmd = [sys.executable, "-m", "bench.loss_memory", f"--worker_json={out}",
           f"--batch_sizes={','.join(str(b) for b in batch_sizes)}",
           f"--dim={dim}", f"--regions={regions}", f"--words={words}",
           f"--chunk={chunk}"]
    if select is not None:
      pairs = [f"{loss}:{version}" for loss, version in select]
      cmd.append("--select=" + ",".join(pairs))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(cmd, env=env, cwd=root, check=False)
    if proc.returncode != 0 or not os.path.exists(out):
      raise RuntimeError(f"measurement subprocess failed (exit "
                         f"{proc.returncode}): {' '.join(cmd)}")
    with open(out) as f:
      rows = json.load(f)
  return {"config": config, "rows": rows}


def _ratio(a: float, b: float) -> str:
  return f"{a / b:.2f}" if b else "-"


def to_markdown(results: dict[str, Any]) -> str:
  """Markdown tables: per loss, one row per (version, B) with D=1 and D=8."""
  cfg = results["config"]
  rows = results["rows"]
  key = {(r["loss"], r["version"], r["devices"], r["batch"]): r for r in rows}
  lines = [
      "# Per-device compiled memory of the cross-batch losses",
      "",
      f"value_and_grad w.r.t. the embeddings; embedding dim {cfg['dim']}; "
      f"DAMSM R={cfg['regions']} regions, T={cfg['words']} words; "
      f"{cfg['devices']}. Bytes from XLA's buffer assignment of the "
      "per-device program (`memory_analysis()`), nothing executed. "
      "`temp` = scratch buffers, `total` = temp + arguments + outputs.",
      "",
      "Columns: `D1/D8 temp` = temp bytes on one device over temp bytes per "
      "device with 8 (8 means perfect B^2/D scaling); `growth` = temp over "
      "temp at the previous batch size (4.0 per doubling is the B^2 "
      "regime, 2.0 linear).",
      "",
  ]
  for loss in dict.fromkeys(r["loss"] for r in rows):
    lines += [f"## {loss}", "",
              "| version | B | temp D=1 (MiB) | temp D=8 (MiB) | "
              "total D=1 (MiB) | total D=8 (MiB) | D1/D8 temp | "
              "growth D=1 | growth D=8 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    versions = dict.fromkeys(r["version"] for r in rows if r["loss"] == loss)
    for version in versions:
      prev = None
      for b in cfg["batch_sizes"]:
        one = key[(loss, version, 1, b)]
        eight = key[(loss, version, 8, b)]
        growth1 = _ratio(one["temp_bytes"], prev[0]["temp_bytes"]) \
            if prev else "-"
        growth8 = _ratio(eight["temp_bytes"], prev[1]["temp_bytes"]) \
            if prev else "-"
        lines.append(
            f"| {version} | {b} | {one['temp_bytes'] / MIB:.2f} | "
            f"{eight['temp_bytes'] / MIB:.2f} | "
            f"{one['total_bytes'] / MIB:.2f} | "
            f"{eight['total_bytes'] / MIB:.2f} | "
            f"{_ratio(one['temp_bytes'], eight['temp_bytes'])} | "
            f"{growth1} | {growth8} |")
        prev = (one, eight)
    lines.append("")
  return "\n".join(lines)


def write(results: dict[str, Any], output_dir: str) -> tuple[str, str]:
  """Writes loss_memory.json and loss_memory.md atomically; returns paths."""
  return report.write_pair(output_dir, "loss_memory", results,
                           to_markdown(results))


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    sizes = [int(b) for b in flags.FLAGS.batch_sizes]
  except ValueError:
    raise app.UsageError(f"--batch_sizes must be integers, got "
                         f"{flags.FLAGS.batch_sizes}") from None
  bad = [b for b in sizes if b <= 0 or b % max(DEVICE_COUNTS)]
  if bad:
    raise app.UsageError(f"--batch_sizes must be positive multiples of "
                         f"{max(DEVICE_COUNTS)}: {bad}")
  select = None
  if flags.FLAGS.select:
    select = [tuple(s.split(":", 1)) for s in flags.FLAGS.select]
    if any(len(s) != 2 for s in select):
      raise app.UsageError(f"--select wants loss:version pairs, got "
                           f"{flags.FLAGS.select}")
  fl = flags.FLAGS
  kw = dict(dim=fl.dim, regions=fl.regions, words=fl.words, chunk=fl.chunk,
            select=select)
  if flags.FLAGS.worker_json:
    try:
      rows = measure(sizes, **kw)
    except ValueError as e:
      print(f"loss_memory: {e}", file=sys.stderr)
      sys.exit(1)
    with open(flags.FLAGS.worker_json, "w") as f:
      json.dump(rows, f)
    return
  try:
    results = run(sizes, **kw)
  except RuntimeError as e:
    print(f"loss_memory: {e}", file=sys.stderr)
    sys.exit(1)
  json_path, md_path = write(results, flags.FLAGS.output_dir)
  print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
