r"""MFU of the LoVT and JoImTeRNet train steps in bf16 at paper sizes.

    python -m bench.accelerator --output_dir=bench/results \
        [--methods=lovt,joimternet] [--steps=20] [--epoch_examples=222758] \
        [--peak_tflops=...] [--smoke]

Runs on a GPU or TPU host (one chip: the step's mesh is `data=1`). For each
method it builds the trainer's own jitted step (`bench.train_step.JaxStep`:
forward, backward, the method's loss, AdamW, NaN guard) from the method's
unmodified default config (`configs/<method>.py`) with `dtype=bfloat16`:

* LoVT: ResNet-50 at 224 px, BERT-base text tower (12 x 768, 512 tokens,
  vocabulary 28,996 as Bio_ClinicalBERT), batch 512 as 16 accumulated
  micro-batches of 32, the first 6 text layers frozen;
* JoImTeRNet: its CNN at 2048 px, 3-layer BERT-512 over 160 tokens, batch
  128 (`--joimternet_size` shrinks the image if the chip runs out of memory).

Reported per method: examples/s (mean of `--steps` chained steps after a
warm-up, synthetic device-resident batch, so the input pipeline is not in
the number), the step's model FLOPs from XLA's cost analysis, MFU =
FLOP/s / the chip's dense bf16 peak (`PEAK_BF16_TFLOPS`, by `device_kind`,
or `--peak_tflops`), and the fraction of a bf16 matmul peak measured here.
XLA counts a `scan` body once, so for an accumulated step (LoVT: K = 16)
the model FLOPs are K times the cost analysis of the un-accumulated
micro-step (compiled for that alone); the GradCache re-forward is
recomputation and not counted, as MFU conventionally does.

For LoVT it also projects the wall time of the paper's 100-epoch schedule
on MIMIC-CXR: epochs x `--epoch_examples` / examples/s, on this one chip
and under ideal linear data-parallel scaling to 8 and 64 chips. The default
epoch is the official train split's 222,758 studies (DATA_FORMATS.md), an
upper bound: LoVT keeps frontal studies with findings or impression; pass
the converted train split's size for the exact figure.

On a CPU backend it measures nothing and writes a result saying so (the
CPU-sized step is `bench.train_step`), unless `--smoke`: the tiny configs,
2 steps, the measured matmul peak as the only denominator; a check that
this code works, not a measurement.
"""

import math
import os
import platform
import time
from typing import Any, Sequence

from absl import app
from absl import flags

from bench import report

METHODS = ("lovt", "joimternet")
# Dense bf16 peak per chip (vendor spec sheets), matched as a substring of
# jax.Device.device_kind, first match wins (so "H100 PCIe" precedes "H100").
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4),
    ("GH200", 989.4), ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0),
    ("L4", 121.0), ("A10G", 70.0), ("TPU v6 lite", 918.0),
    ("TPU v5 lite", 197.0), ("TPU v5e", 197.0), ("TPU v5p", 459.0),
    ("TPU v5", 459.0), ("TPU v4", 275.0),
)
LOVT_EPOCHS = 100
MIMIC_TRAIN_STUDIES = 222_758  # official split, DATA_FORMATS.md
VOCAB = {"lovt": 28_996, "joimternet": 8_411}  # Bio_ClinicalBERT; JoImTeR


def spec_peak_flops(device_kind: str) -> float | None:
  """The chip's dense bf16 peak in FLOP/s, or None when not in the table."""
  for name, tflops in PEAK_BF16_TFLOPS:
    if name.lower() in device_kind.lower():
      return tflops * 1e12
  return None


def paper_config(method: str, *, smoke: bool, joimternet_size: int):
  """The method's default config in bf16 on one chip (tiny when smoke)."""
  import importlib  # pylint: disable=g-import-not-at-top
  c = importlib.import_module(f"configs.{method}").get_config(
      "tiny" if smoke else None)
  c.dtype = "bfloat16"
  c.mesh = "data:1"
  if method == "joimternet" and not smoke:
    c.input.image_size = joimternet_size
  return c


def batch_spec(c, method: str, smoke: bool) -> dict[str, int]:
  """The synthetic batch's shape for config `c` (bench.torch_reference)."""
  return dict(batch=c.batch_size, image_size=c.input.image_size,
              tokens=min(c.input.max_tokens, c.model.text.max_len),
              vocab=64 if smoke else VOCAB[method],
              max_sentences=c.input.max_sentences)


def project(examples_per_s: float, epoch_examples: int,
            epochs: int = LOVT_EPOCHS,
            chips: Sequence[int] = (1, 8, 64)) -> dict[str, float]:
  """Hours for `epochs` x `epoch_examples` at `examples_per_s` per chip.

  Ideal linear data-parallel scaling: a lower bound for more than one chip
  (the cross-device negative gather and the input pipeline are not free).
  """
  seconds = epochs * epoch_examples / examples_per_s
  return {f"hours_{n}_chips": seconds / n / 3600.0 for n in chips}


def measure_method(method: str, *, steps: int, smoke: bool,
                   joimternet_size: int, peak: float | None,
                   matmul_peak: float) -> dict[str, Any]:
  """Builds and times one method's bf16 step; returns its result row."""
  from bench import train_step  # pylint: disable=g-import-not-at-top
  c = paper_config(method, smoke=smoke, joimternet_size=joimternet_size)
  k = c.accum_steps
  micro_flops = None
  if k > 1:
    # XLA's cost analysis counts a scan body once, so the accumulated
    # step's figure is about 1/K of its work. Model FLOPs (what MFU
    # counts) are K un-accumulated micro-steps; the GradCache re-forward
    # is recomputation and is left out.
    m = paper_config(method, smoke=smoke, joimternet_size=joimternet_size)
    m.batch_size, m.accum_steps = c.batch_size // k, 1
    micro = train_step.JaxStep(method, batch_spec(m, method, smoke),
                               config=m)
    micro_flops = micro.flops
    micro.close()
  spec = batch_spec(c, method, smoke)
  step = train_step.JaxStep(method, spec, config=c)
  flops = step.flops if micro_flops is None else k * micro_flops
  step.run_chained(2)  # past the first calls' allocations
  step_s = step.run_chained(steps)
  row = {"method": method, "batch": c.batch_size, "accum_steps": k,
         "image_size": c.input.image_size, "tokens": spec["tokens"],
         "params": step.params, "flops_per_step": flops,
         "micro_step_flops": micro_flops,
         "xla_flops_of_step_program": step.flops,
         "compile_s": step.compile_s, "step_s": step_s,
         "examples_per_s": c.batch_size / step_s,
         "flops_per_s": flops / step_s,
         "mfu": None if peak is None else flops / step_s / peak,
         "fraction_of_matmul_peak": flops / step_s / matmul_peak,
         "loss": step.loss}
  step.close()
  return row


def to_markdown(r: dict[str, Any]) -> str:
  """The result as a Markdown section."""
  head = ["# Accelerator: bf16 steps at paper sizes", ""]
  if r.get("skipped"):
    return "\n".join(head + [f"Not measured: {r['skipped']}", ""])
  peak = r["spec_peak_flops"]
  smoke = " [--smoke: tiny configs, not a measurement]" if r["smoke"] else ""
  peak_s = "n/a" if peak is None else f"{peak / 1e12:.0f} TFLOP/s"
  head += [
      f"{r['date']}, JAX {r['jax_version']} on {r['backend']} "
      f"({r['device_kind']}){smoke}. Dense bf16 peak {peak_s}; "
      f"measured bf16 matmul peak {r['matmul_peak_flops'] / 1e12:.1f} "
      f"TFLOP/s. Mean of {r['steps']} chained steps on a device-resident "
      "synthetic batch.", "",
      "| method | batch (accum) | image px | params | TFLOP/step | ex/s | "
      "TFLOP/s | MFU | of matmul peak | compile s |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for m in r["methods"]:
    if "error" in m:
      head.append(f"| {m['method']} | failed: {m['error']} |||||||||")
      continue
    mfu = "n/a" if m["mfu"] is None else f"{m['mfu']:.3f}"
    head.append(
        f"| {m['method']} | {m['batch']} ({m['accum_steps']}) | "
        f"{m['image_size']} | {m['params'] / 1e6:.1f}M | "
        f"{m['flops_per_step'] / 1e12:.2f} | {m['examples_per_s']:.1f} | "
        f"{m['flops_per_s'] / 1e12:.1f} | {mfu} | "
        f"{m['fraction_of_matmul_peak']:.3f} | {m['compile_s']:.0f} |")
  if r.get("lovt_projection"):
    p = r["lovt_projection"]
    head += ["", f"LoVT {LOVT_EPOCHS} epochs x {r['epoch_examples']:,} "
             "examples: " + ", ".join(
                 f"{v:.1f} h on {k.split('_')[1]} chip(s)"
                 for k, v in p.items()) +
             " (more than one chip: ideal linear scaling, a lower bound)."]
  return "\n".join(head + [""])


def run(*, methods: Sequence[str], steps: int, smoke: bool,
        epoch_examples: int, joimternet_size: int,
        peak_tflops: float | None) -> dict[str, Any]:
  """Measures every method (see the module docstring); returns the result."""
  import jax  # pylint: disable=g-import-not-at-top
  from bench import matmul_peak as mp  # pylint: disable=g-import-not-at-top
  backend = jax.default_backend()
  r: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                       "host": platform.node(), "backend": backend,
                       "jax_version": jax.__version__, "smoke": smoke}
  if backend == "cpu" and not smoke:
    r["skipped"] = ("the JAX backend is cpu; run `python -m bench.accelerator`"
                    " on a GPU or TPU host (the CPU step is in "
                    "train_step.md).")
    return r
  kind = jax.devices()[0].device_kind
  peak = peak_tflops * 1e12 if peak_tflops else spec_peak_flops(kind)
  mm = mp.measure(256 if smoke else 8192, repeats=3 if smoke else 20,
                  dtype="bfloat16")
  r.update(device_kind=kind, spec_peak_flops=peak,
           matmul_peak_flops=mm["flops_per_s"], steps=steps,
           epoch_examples=epoch_examples, methods=[])
  for method in methods:
    print(f"[bench.accelerator] {method} ...", flush=True)
    try:
      row = measure_method(method, steps=steps, smoke=smoke,
                           joimternet_size=joimternet_size, peak=peak,
                           matmul_peak=mm["flops_per_s"])
    except Exception as e:  # pylint: disable=broad-except
      # One method running out of device memory must not lose the other.
      row = {"method": method,
             "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    r["methods"].append(row)
    if method == "lovt" and "error" not in row:
      r["lovt_projection"] = project(row["examples_per_s"], epoch_examples)
  return r


def _define_flags() -> None:
  """Defines the command-line flags (only when run as a program).

  Kept out of import time so tests can import this module next to
  bench.run_all, which has its own `--output_dir`.
  """
  flags.DEFINE_string("output_dir", "bench/results",
                      "Where accelerator.{json,md} go.")
  flags.DEFINE_list("methods", list(METHODS), "Methods to time.")
  flags.DEFINE_integer("steps", 20, "Timed steps per method.")
  flags.DEFINE_integer("epoch_examples", MIMIC_TRAIN_STUDIES,
                       "Training examples per LoVT epoch.")
  flags.DEFINE_integer("joimternet_size", 2048,
                       "JoImTeRNet image side (paper: 2048).")
  flags.DEFINE_float("peak_tflops", None, "Override the chip's dense bf16 "
                     "peak (TFLOP/s) used for MFU.")
  flags.DEFINE_boolean("smoke", False, "Tiny configs on any backend: a "
                       "check of this code, not a measurement.")


def main(argv: Sequence[str]) -> None:
  """absl entry point."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  unknown = sorted(set(f.methods) - set(METHODS))
  if unknown:
    raise app.UsageError(f"unknown methods {unknown}; expected some of "
                         f"{list(METHODS)}")
  if f.steps < 1 or f.epoch_examples < 1:
    raise app.UsageError("--steps and --epoch_examples must be positive")
  if f.peak_tflops is not None and not (math.isfinite(f.peak_tflops)
                                        and f.peak_tflops > 0):
    raise app.UsageError(f"--peak_tflops must be positive, got "
                         f"{f.peak_tflops}")
  r = run(methods=f.methods, steps=2 if f.smoke else f.steps,
          smoke=f.smoke, epoch_examples=f.epoch_examples,
          joimternet_size=f.joimternet_size, peak_tflops=f.peak_tflops)
  paths = report.write_pair(f.output_dir, "accelerator", r, to_markdown(r))
  print(f"wrote {paths[0]} and {paths[1]}")
  if any("error" in m for m in r.get("methods", [])):
    raise SystemExit(1)


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  _define_flags()
  app.run(main)
