r"""Train-step speed of each method vs a PyTorch reference, same run, same box.

    python -m bench.train_step --output_dir=bench/results [--quick] \
        [--methods=lovt,joimternet,convirt] [--pairs=3] [--steps=3] \
        [--ablation] [--allocator=tuned|default] [--notorch]

For every method, a worker process (started with the allocator settings
below, so both frameworks run under the same ones) builds the trainer's own
jitted step (`jointcxr.train.init_state` / `make_steps`: forward, backward,
the method's loss, AdamW, NaN guard) at a CPU-feasible size, reads its
FLOPs from XLA's cost analysis of the compiled step, measures this
machine's fp32 matmul peak (`bench.matmul_peak`), starts the PyTorch
reference of the same architecture and loss (`bench/torch_reference/step.py`
in its own venv, 2 threads, AdamW) and times them in interleaved A/B
pairs: `--steps` JAX steps, then `--steps` PyTorch steps, `--pairs` times.
Reported: examples/s of both, achieved FLOP/s as a fraction of the peak,
and the median over pairs of (PyTorch step time / JAX step time), i.e.
jointcxr's throughput relative to PyTorch's (> 1 = faster).

Sizes (`SIZES`): LoVT and ConVIRT: ResNet-50 at 224 px, batch 8, a 6-layer
d=512 BERT over 128 tokens (vocab 8000, 32 sentence slots); JoImTeRNet: its
CNN at 512 px, batch 8, the 3-layer BERT-512 over 160 tokens. `--quick`
shrinks everything to seconds (ResNet-18 width 8 at 64 px, ...): a schema
check, not a measurement.

`--ablation` adds the LoVT lowering table (XLA convolution + Flax
BatchNorm + XLA max-pool, then each CPU lowering of `cpu_kernels` added in
turn), each timed in A/B pairs against the default step in the same
worker, and the XLA:CPU flag variants (`XLA_FLAG_VARIANTS`): XLA reads its
flags once per process, so each variant runs in its own worker and is
compared with the default-flag worker's JAX step time (not interleaved).

Allocator: every worker and its PyTorch child run with
`GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=
68719476736:glibc.malloc.arena_max=1` (`--allocator=tuned`, ENVIRONMENT.md:
without it both frameworks lose time in page faults) or with glibc's
defaults (`--allocator=default`).

Without bench/torch_reference/.venv (or with `--notorch`) only the JAX
columns are measured; the PyTorch ones read "n/a" and the Markdown says
why. Peak memory is each process's VmHWM (the PyTorch child reports its
own). This benchmark is CPU-sized; the accelerator variant (bf16, paper
sizes, MFU) is `bench.accelerator`.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

from absl import app
from absl import flags

from bench import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_PYTHON = os.path.join(ROOT, "bench", "torch_reference", ".venv", "bin",
                            "python")
TUNED_MALLOC = ("glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold="
                "68719476736:glibc.malloc.arena_max=1")
METHODS = ("lovt", "joimternet", "convirt")

# A CPU-feasible size of each method's default architecture; `quick` is a
# seconds-long schema check. `text` overrides config.model.text.
_LOVT_TEXT = dict(hidden=512, layers=6, heads=8, mlp_dim=2048, dropout=0.1)
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "lovt": dict(batch=8, image_size=224, tokens=128, vocab=8000,
                     max_sentences=32, image=dict(depth=50),
                     text=_LOVT_TEXT),
        "convirt": dict(batch=8, image_size=224, tokens=128, vocab=8000,
                        max_sentences=32, image=dict(depth=50),
                        text=_LOVT_TEXT),
        "joimternet": dict(batch=8, image_size=512, tokens=160, vocab=8411,
                           max_sentences=32, image={}, text={}),
    },
    "quick": {
        "lovt": dict(batch=4, image_size=64, tokens=24, vocab=64,
                     max_sentences=4, image=dict(depth=18, width=8),
                     text=dict(hidden=32, layers=1, heads=2, mlp_dim=64,
                               dropout=0.1)),
        "convirt": dict(batch=4, image_size=64, tokens=24, vocab=64,
                        max_sentences=4, image=dict(depth=18, width=8),
                        text=dict(hidden=32, layers=1, heads=2, mlp_dim=64,
                                  dropout=0.1)),
        "joimternet": dict(batch=4, image_size=256, tokens=24, vocab=64,
                           max_sentences=4,
                           image=dict(channels=(4, 4, 8, 8, 16, 16),
                                      stem_channels=4, region_dim=32,
                                      global_dim=32),
                           text=dict(hidden=32, layers=1, heads=2,
                                     mlp_dim=64, dropout=0.1)),
    },
}

# LoVT lowering ablation: (name, conv_impl, norm impl, pool impl).
LOWERINGS = (
    ("xla conv + flax BN + xla pool", "xla", "flax", "xla"),
    ("im2col conv", "im2col", "flax", "xla"),
    ("im2col + fused BN", "im2col", "fused", "xla"),
    ("+ custom-VJP matmul", "cpu", "fused", "xla"),
    ("+ custom-VJP max-pool (= auto)", "cpu", "fused", "cpu"),
)
# XLA:CPU flag variants timed against the default flags (own workers).
XLA_FLAG_VARIANTS = (
    "--xla_cpu_experimental_ynn_fusion_type=",
    "--xla_cpu_experimental_ynn_fusion_type=invalid",
    "--xla_cpu_use_thunk_runtime=false",
)


# ----------------------------------------------------------- JAX side ---
def make_config(method: str, size: dict[str, Any], conv_impl: str = "auto"):
  """The method's default config shrunk to `size` (one device, no accum).

  Frozen text layers are unfrozen so both frameworks update every weight
  (at 6 layers LoVT's freeze regex would freeze the whole text tower).
  """
  import importlib  # pylint: disable=g-import-not-at-top
  cfg_mod = importlib.import_module(f"configs.{method}")
  quick = size["image_size"] <= 256 and size["batch"] <= 4
  c = cfg_mod.get_config("tiny" if quick else None)
  c.batch_size = size["batch"]
  c.accum_steps = 1
  c.mesh = "data:1"
  c.input.image_size = size["image_size"]
  c.input.max_tokens = size["tokens"]
  c.input.max_sentences = size["max_sentences"]
  c.optim.frozen = ()
  image = dict(c.model.image)
  image.update(size["image"])
  image["conv_impl"] = conv_impl
  c.model.image = image
  text = dict(c.model.text)
  text.update(size["text"])
  text.update(vocab_size=size["vocab"], max_len=size["tokens"],
              max_sentences=size["max_sentences"])
  c.model.text = text
  return c


class JaxStep:
  """The trainer's compiled step on a synthetic batch, ready to time.

  Attributes:
    flops: XLA cost-analysis FLOPs of one step.
    params: number of parameters.
    compile_s: trace + compile seconds.
  """

  def __init__(self, method: str, size: dict[str, Any], *,
               conv_impl: str = "auto", norm: str = "auto",
               pool: str = "auto", seed: int = 0, config=None):
    # pylint: disable=g-import-not-at-top
    import flax.linen as nn
    import jax
    import numpy as np
    from bench.torch_reference import batch as batch_lib
    from jointcxr import optim
    from jointcxr import sharding
    from jointcxr import train
    from jointcxr.models import cpu_kernels
    from jointcxr.models import factory
    # pylint: enable=g-import-not-at-top
    self._jax = jax
    # An explicit config (bench.accelerator: paper sizes in bf16) is used
    # as given; `size` then only shapes the synthetic batch.
    c = config if config is not None else make_config(method, size,
                                                      conv_impl)
    self.config = c
    model = factory.from_config(c, size["vocab"])
    rng = jax.random.PRNGKey(seed)
    t0 = time.perf_counter()
    with cpu_kernels.lowering(norm=norm, pool=pool):
      params_shape = nn.meta.unbox(jax.eval_shape(
          lambda: model.init({"params": rng, "dropout": rng},
                             train.dummy_batch(c))))["params"]
      self.params = int(sum(np.prod(x.shape)
                            for x in jax.tree.leaves(params_shape)))
      opt = optim.Optimizer(c.optim.to_dict(), params_shape, 1000, 1000)
      # One chip (the first) when the config names a fixed-size mesh, so
      # the step is timed alike on 1-device and multi-device hosts.
      sizes = [n for _, n in sharding.parse_mesh(c.mesh)]
      mesh = sharding.make_mesh(
          c.mesh, None if -1 in sizes else jax.devices()[:int(np.prod(sizes))])
      state, shardings = train.init_state(c, model, opt, mesh, rng)
      step, _ = train.make_steps(c, model, opt, mesh, shardings)
      host = batch_lib.make_batch(
          batch=size["batch"], image_size=size["image_size"],
          tokens=size["tokens"], vocab=size["vocab"],
          max_sentences=size["max_sentences"], seed=seed)
      self._batch = jax.device_put(host, sharding.batch_sharding(mesh))
      with jax.set_mesh(mesh), nn.logical_axis_rules(
          train.mesh_rules(c, mesh)):
        self._compiled = step.lower(state, self._batch).compile()
    self.compile_s = time.perf_counter() - t0
    cost = self._compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    self.flops = float((cost or {}).get("flops", 0.0))
    self._state = state
    self.loss = None
    self.run(1)  # warm-up: first-call allocations and page faults

  def run(self, steps: int) -> list[float]:
    """Runs `steps` steps; returns the seconds of each."""
    times = []
    for _ in range(steps):
      t = time.perf_counter()
      self._state, metrics = self._compiled(self._state, self._batch)
      loss = self._jax.block_until_ready(metrics["loss"])
      times.append(time.perf_counter() - t)
    self.loss = float(loss)
    return times

  def run_chained(self, steps: int) -> float:
    """Runs `steps` steps back to back; returns the mean seconds per step.

    Blocks only after the last step, so on an accelerator the host
    dispatches ahead and the time is the device's, not the round trips'.
    """
    t = time.perf_counter()
    for _ in range(steps):
      self._state, metrics = self._compiled(self._state, self._batch)
    self.loss = float(self._jax.block_until_ready(metrics["loss"]))
    return (time.perf_counter() - t) / steps

  def close(self) -> None:
    """Frees the device buffers (the next variant needs the memory)."""
    self._state = self._compiled = self._batch = None


# ------------------------------------------------------- PyTorch side ---
def torch_available() -> bool:
  """Whether bench/torch_reference/.venv exists (setup.sh creates it)."""
  return os.path.exists(TORCH_PYTHON)


class TorchStep:
  """A PyTorch reference step in a child process, driven over stdin.

  Attributes:
    info: the child's ready message (parameter count, threads, ...).
  """

  def __init__(self, method: str, size: dict[str, Any], threads: int = 2,
               seed: int = 0, heads: dict[str, Any] | None = None):
    spec = dict(size, method=method, threads=threads, seed=seed,
                heads=heads or {})
    self._proc = subprocess.Popen(
        [TORCH_PYTHON, "-m", "bench.torch_reference.step",
         "--spec=" + json.dumps(spec)], cwd=ROOT, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    self.info = self._read()
    self.run(1)  # warm-up

  def _read(self) -> dict[str, Any]:
    line = self._proc.stdout.readline()
    if not line:
      raise RuntimeError(f"PyTorch reference exited (code "
                         f"{self._proc.wait()}); see its stderr above")
    return json.loads(line)

  def run(self, steps: int) -> list[float]:
    """Runs `steps` steps in the child; returns the seconds of each."""
    self._proc.stdin.write(f"run {steps}\n")
    self._proc.stdin.flush()
    out = self._read()
    self.loss = out["loss"]
    self.peak_rss_mib = out.get("peak_rss_mib")
    return out["times"]

  def close(self) -> None:
    """Stops the child."""
    if self._proc.poll() is None:
      self._proc.stdin.write("quit\n")
      self._proc.stdin.flush()
      self._proc.wait(timeout=60)


# ------------------------------------------------------------- worker ---
def _median(xs: Sequence[float]) -> float:
  return float(statistics.median(xs))


def ab_pairs(a, b, *, pairs: int, steps: int,
             before_pair=None) -> dict[str, Any]:
  """Interleaved timing: `steps` of a, then `steps` of b, `pairs` times.

  Args:
    a: object with `run(steps) -> [seconds]` (the jointcxr step).
    b: the same for the reference.
    pairs: A/B repetitions.
    steps: steps per half.
    before_pair: optional callable run before each pair (the worker
      re-measures the matmul peak there, so the peak and the steps see the
      same machine state).

  Returns:
    dict with per-pair median step seconds `a_s`, `b_s`, the per-pair
    ratios b/a (a's throughput relative to b's) and their median `ratio`.
  """
  a_s, b_s = [], []
  for _ in range(pairs):
    if before_pair is not None:
      before_pair()
    a_s.append(_median(a.run(steps)))
    b_s.append(_median(b.run(steps)))
  ratios = [tb / ta for ta, tb in zip(a_s, b_s)]
  return {"a_s": a_s, "b_s": b_s, "ratios": ratios,
          "ratio": _median(ratios)}


def _peak_rss_mib() -> float:
  """This process's peak RSS in MiB (VmHWM of /proc/self/status).

  Not getrusage: a child's ru_maxrss includes the pages it inherited at
  fork (before exec), so the PyTorch child would report the JAX worker's
  size; the child reports its own VmHWM instead (`TorchStep.peak_rss_mib`).
  """
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024.0
  return float("nan")


def worker(method: str, *, quick: bool, pairs: int, steps: int,
           ablation: bool, with_torch: bool) -> dict[str, Any]:
  """Measures one method in this process (see the module docstring)."""
  from bench import matmul_peak  # pylint: disable=g-import-not-at-top
  size = SIZES["quick" if quick else "full"][method]
  # The peak is sampled before every A/B pair and at the end: on a shared
  # (cloud) CPU it drifts by 2x within minutes, and one sample taken at
  # start-up made the fraction of peak swing with it.
  samples = []

  def sample_peak() -> None:
    samples.append(matmul_peak.measure(256 if quick else 2048,
                                       repeats=3 if quick else 5)[
                                           "flops_per_s"])

  sample_peak()
  jx = JaxStep(method, size)
  row: dict[str, Any] = {
      "method": method, "size": size, "params": jx.params,
      "flops_per_step": jx.flops, "compile_s": jx.compile_s,
      "pairs": pairs,
      "steps_per_half": steps, "jax_backend": jx._jax.default_backend()}
  ref = None
  if with_torch and torch_available():
    heads = {k: v for k, v in dict(jx.config.model.heads).items()
             if k in ("dim", "hidden", "pool_heads")}
    ref = TorchStep(method, size, heads=heads)
    row["torch"] = ref.info
    ab = ab_pairs(jx, ref, pairs=pairs, steps=steps, before_pair=sample_peak)
    row.update(jax_step_s=ab["a_s"], torch_step_s=ab["b_s"],
               ratio_pairs=ab["ratios"], ratio_vs_torch=ab["ratio"])
  else:
    row["torch"] = None
    row["jax_step_s"] = []
    for _ in range(pairs):
      sample_peak()
      row["jax_step_s"].append(_median(jx.run(steps)))
  sample_peak()
  peak = _median(samples)
  row["matmul_peak_flops"] = peak
  row["matmul_peak_samples"] = samples
  t = _median(row["jax_step_s"])
  row["jax_examples_per_s"] = size["batch"] / t
  row["jax_flops_per_s"] = jx.flops / t
  row["fraction_of_peak"] = jx.flops / t / peak
  if ref is not None:
    row["torch_examples_per_s"] = size["batch"] / _median(
        row["torch_step_s"])
  if ablation and method == "lovt":
    row["ablation"] = _ablation(method, size, jx, pairs, steps,
                                peak)
  row["jax_peak_rss_mib"] = _peak_rss_mib()
  row["torch_peak_rss_mib"] = None if ref is None else ref.peak_rss_mib
  row["jax_loss"] = jx.loss
  row["torch_loss"] = None if ref is None else ref.loss
  jx.close()
  if ref is not None:
    ref.close()
  return row


def _ablation(method: str, size: dict[str, Any], default: JaxStep,
              pairs: int, steps: int, peak: float) -> list[dict[str, Any]]:
  """Each lowering variant vs the default step, interleaved pairs."""
  rows = []
  for name, conv, norm, pool in LOWERINGS:
    v = JaxStep(method, size, conv_impl=conv, norm=norm, pool=pool)
    ab = ab_pairs(v, default, pairs=pairs, steps=steps)
    rows.append({"variant": name, "conv_impl": conv, "norm": norm,
                 "pool": pool, "step_s": _median(ab["a_s"]),
                 "default_step_s": _median(ab["b_s"]),
                 "speed_vs_default": ab["ratio"],
                 "fraction_of_peak": v.flops / _median(ab["a_s"]) / peak,
                 "flops_per_step": v.flops})
    v.close()
  return rows


# ------------------------------------------------------- orchestration ---
def _allocator_env(allocator: str) -> dict[str, str]:
  """This process's environment with the chosen glibc malloc settings."""
  env = dict(os.environ)
  if allocator == "tuned":
    env["GLIBC_TUNABLES"] = TUNED_MALLOC
  elif allocator == "default":
    env.pop("GLIBC_TUNABLES", None)
  else:
    raise ValueError(f"unknown allocator {allocator!r}; expected 'tuned' or "
                     "'default'")
  return env


def _run_worker(method: str, *, quick: bool, pairs: int, steps: int,
                ablation: bool, with_torch: bool, allocator: str,
                xla_flags: str | None = None) -> dict[str, Any]:
  """Measures `method` in a fresh worker process; returns its row.

  A process per method keeps one method's heap and compiled programs from
  skewing the next, and lets glibc read GLIBC_TUNABLES at start-up (it is
  ignored once malloc is initialised). A failed worker gives a row with
  `error` instead of raising, so the other methods still run.
  """
  env = _allocator_env(allocator)
  if xla_flags is not None:
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + xla_flags).strip()
  with tempfile.TemporaryDirectory(prefix="bench_train_step_") as tmp:
    out = os.path.join(tmp, "row.json")
    cmd = [sys.executable, "-m", "bench.train_step",
           f"--worker_method={method}", f"--worker_json={out}",
           f"--pairs={pairs}", f"--steps={steps}",
           f"--quick={str(quick).lower()}",
           f"--ablation={str(ablation).lower()}",
           f"--torch={str(with_torch).lower()}"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, check=False,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0 or not os.path.exists(out):
      tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
      return {"method": method, "xla_flags": xla_flags,
              "error": f"worker exit {proc.returncode}: {tail}",
              "worker_s": wall}
    with open(out) as f:
      row = json.load(f)
  row["worker_s"] = wall
  row["xla_flags"] = xla_flags
  return row


def _torch_version(env: dict[str, str]) -> str | None:
  """The reference venv's torch version (None when it is not set up)."""
  if not torch_available():
    return None
  proc = subprocess.run(
      [TORCH_PYTHON, "-c", "import torch; print(torch.__version__)"],
      env=env, capture_output=True, text=True, check=False)
  return proc.stdout.strip() or None


def run(methods: Sequence[str] = METHODS, *, quick: bool = False,
        pairs: int = 3, steps: int = 3, ablation: bool = False,
        allocator: str = "tuned", with_torch: bool = True) -> dict[str, Any]:
  """Measures every method in its own worker (see the module docstring).

  Args:
    methods: subset of `METHODS`.
    quick: seconds-long schema check at the `quick` sizes.
    pairs: interleaved A/B pairs.
    steps: steps per half of a pair.
    ablation: add the LoVT lowering table and the XLA:CPU flag variants.
    allocator: "tuned" (GLIBC_TUNABLES=`TUNED_MALLOC`) or "default".
    with_torch: time the PyTorch reference when its venv exists.

  Returns:
    dict with `config` (arguments, machine, torch version or None) and
    `rows` (one per method; `error` instead of numbers if its worker
    failed); with `ablation`, also `xla_flag_variants`.
  """
  unknown = sorted(set(methods) - set(METHODS))
  if unknown:
    raise ValueError(f"unknown methods {unknown}; expected some of {METHODS}")
  if pairs < 1 or steps < 1:
    raise ValueError(f"pairs and steps must be >= 1, got {pairs}, {steps}")
  env = _allocator_env(allocator)
  use_torch = with_torch and torch_available()
  config = {
      "methods": list(methods), "quick": quick, "pairs": pairs,
      "steps": steps, "ablation": ablation, "allocator": allocator,
      "glibc_tunables": env.get("GLIBC_TUNABLES"),
      "torch_requested": with_torch, "torch_available": torch_available(),
      "torch_version": _torch_version(env) if use_torch else None,
      "torch_threads": 2, "cpu_count": os.cpu_count(),
      "machine": platform.machine(), "python": platform.python_version(),
      "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
      "load_average_start": list(os.getloadavg())}
  rows = [_run_worker(m, quick=quick, pairs=pairs, steps=steps,
                      ablation=ablation, with_torch=use_torch,
                      allocator=allocator) for m in methods]
  result: dict[str, Any] = {"config": config, "rows": rows}
  if ablation and "lovt" in methods:
    default = next(r for r in rows if r["method"] == "lovt")
    variants = []
    for flag in XLA_FLAG_VARIANTS:
      # XLA reads its flags once per process, so each variant is its own
      # worker; compared with the default-flag worker's JAX step time.
      v = _run_worker("lovt", quick=quick, pairs=pairs, steps=steps,
                      ablation=False, with_torch=False, allocator=allocator,
                      xla_flags=flag)
      if "error" not in v and "error" not in default:
        v["speed_vs_default_flags"] = (_median(default["jax_step_s"])
                                       / _median(v["jax_step_s"]))
      variants.append(v)
    result["xla_flag_variants"] = variants
  config["load_average_end"] = list(os.getloadavg())
  return result


def _fmt(x: float | None, spec: str = ".2f") -> str:
  return "n/a" if x is None else format(x, spec)


def _peak_cell(r: dict[str, Any]) -> str:
  """Median peak GFLOP/s and the range of its samples."""
  xs = r.get("matmul_peak_samples") or [r["matmul_peak_flops"]]
  return (f"{r['matmul_peak_flops'] / 1e9:.1f} ({min(xs) / 1e9:.0f}-"
          f"{max(xs) / 1e9:.0f})")


def to_markdown(result: dict[str, Any]) -> str:
  """Markdown tables of a `run` result."""
  c = result["config"]
  torch_note = (f"PyTorch {c['torch_version']} (CPU, {c['torch_threads']} "
                "threads)" if c["torch_version"] else
                "PyTorch reference not run (bench/torch_reference/.venv "
                "missing: `bash bench/torch_reference/setup.sh`); torch "
                "columns are n/a")
  lines = [
      "# Train step: jointcxr (JAX) vs PyTorch reference", "",
      f"{c['date']}, {c['machine']}, {c['cpu_count']} CPUs, "
      f"allocator {c['allocator']}, {torch_note}. "
      f"{c['pairs']} interleaved A/B pairs of {c['steps']} steps each; "
      "ratio = median over pairs of (PyTorch step s / JAX step s), > 1 = "
      "jointcxr faster. Fraction of peak = XLA cost-analysis FLOPs per "
      "step / JAX step time / the worker's fp32 matmul peak (median of "
      "samples taken before every pair and at the end; min-max shown)."
      + (" **Quick mode: a schema check, not a measurement.**"
         if c["quick"] else ""), "",
      "| method | batch | image px | params JAX / torch | GFLOP/step | "
      "JAX ex/s | PyTorch ex/s | ratio (per pair) | fraction of peak | "
      "peak GFLOP/s | compile s | peak RSS MiB JAX / torch |",
      "|---|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---|"]
  for r in result["rows"]:
    if "error" in r:
      lines.append(f"| {r['method']} | failed: {r['error'][-200:]!r} |"
                   + " |" * 10)
      continue
    t = r.get("torch") or {}
    pairs = ", ".join(f"{x:.2f}" for x in r.get("ratio_pairs", []))
    ratio = (f"{r['ratio_vs_torch']:.2f} ({pairs})"
             if "ratio_vs_torch" in r else "n/a")
    torch_rss = _fmt(r.get("torch_peak_rss_mib"), ".0f")
    lines.append(
        f"| {r['method']} | {r['size']['batch']} | "
        f"{r['size']['image_size']} | {r['params'] / 1e6:.2f}M / "
        f"{_fmt(t.get('params') and t['params'] / 1e6)}M | "
        f"{r['flops_per_step'] / 1e9:.1f} | {r['jax_examples_per_s']:.2f} | "
        f"{_fmt(r.get('torch_examples_per_s'))} | {ratio} | "
        f"{r['fraction_of_peak']:.3f} | "
        f"{_peak_cell(r)} | {r['compile_s']:.1f} | "
        f"{r['jax_peak_rss_mib']:.0f} / {torch_rss} |")
  ablations = [r for r in result["rows"] if r.get("ablation")]
  for r in ablations:
    lines += ["", f"## {r['method']} lowering ablation", "",
              "| variant | step s | default step s | speed vs default | "
              "fraction of peak |", "|---|---:|---:|---:|---:|"]
    for a in r["ablation"]:
      lines.append(f"| {a['variant']} | {a['step_s']:.3f} | "
                   f"{a['default_step_s']:.3f} | "
                   f"{a['speed_vs_default']:.2f} | "
                   f"{a['fraction_of_peak']:.3f} |")
  if result.get("xla_flag_variants"):
    lines += ["", "## XLA:CPU flag variants (LoVT, own worker each)", "",
              "| XLA_FLAGS | step s | speed vs default flags |",
              "|---|---:|---:|"]
    for v in result["xla_flag_variants"]:
      if "error" in v:
        lines.append(f"| `{v['xla_flags']}` | failed | n/a |")
        continue
      lines.append(f"| `{v['xla_flags']}` | "
                   f"{_median(v['jax_step_s']):.3f} | "
                   f"{_fmt(v.get('speed_vs_default_flags'))} |")
  return "\n".join(lines) + "\n"


def write(result: dict[str, Any], output_dir: str) -> tuple[str, str]:
  """Writes train_step.json / .md atomically; returns their paths."""
  return report.write_pair(output_dir, "train_step", result,
                           to_markdown(result))


def _define_flags() -> None:
  """Defines the command-line flags (only when run as a program).

  Kept out of import time so bench.run_all can import this module next to
  the other benchmarks' `--output_dir`.
  """
  flags.DEFINE_string("output_dir", "bench/results",
                      "Where train_step.{json,md} go.")
  flags.DEFINE_boolean("quick", False, "Seconds-long schema check.")
  flags.DEFINE_list("methods", list(METHODS), "Methods to time.")
  flags.DEFINE_integer("pairs", 3, "Interleaved A/B pairs.")
  flags.DEFINE_integer("steps", 3, "Steps per half of a pair.")
  flags.DEFINE_boolean("ablation", False, "Add the LoVT lowering ablation "
                       "and the XLA:CPU flag variants.")
  flags.DEFINE_enum("allocator", "tuned", ["tuned", "default"],
                    "glibc malloc settings of the workers.")
  flags.DEFINE_boolean("torch", True, "Time the PyTorch reference (when "
                       "bench/torch_reference/.venv exists).")
  flags.DEFINE_string("worker_method", None, "Internal: measure this "
                      "method in this process.")
  flags.DEFINE_string("worker_json", None, "Internal: where the worker "
                      "writes its row.")


def main(argv: Sequence[str]) -> None:
  """absl entry point: orchestrates, or (internal) is one method's worker."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if f.worker_method:
    row = worker(f.worker_method, quick=f.quick, pairs=f.pairs,
                 steps=f.steps, ablation=f.ablation, with_torch=f.torch)
    with open(f.worker_json, "w") as out:
      json.dump(row, out)
    return
  result = run(f.methods, quick=f.quick, pairs=f.pairs, steps=f.steps,
               ablation=f.ablation, allocator=f.allocator,
               with_torch=f.torch)
  result["config"]["command"] = " ".join(
      ["python -m bench.train_step"] + list(sys.argv[1:]))
  for path in write(result, f.output_dir):
    print(path)
  print(to_markdown(result))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
