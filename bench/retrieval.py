r"""Image->text retrieval over an N x N pool with the project's evaluator.

    python -m bench.retrieval --output_dir=bench/results [--quick] [--n=100000]

Builds N gallery embeddings (d = 128, fp32, random unit vectors) and N
queries that are noisy copies of them (planted matches: query i's true
match is gallery i), then times `jointcxr.evaluators.retrieval_metrics.
ranks_and_topk` (the chunked path `retrieval.metrics` uses: `chunk_size`
queries scored against the whole gallery per call, only ranks and top-k
indices come back) and `recall_metrics` over all N queries. Reported:

* wall time (after one warm-up call on a single chunk, so compilation is
  excluded), the matmul-bound lower bound 2 N^2 d / peak with the fp32
  matmul peak measured in the same run (`bench.matmul_peak.measure`), and
  wall / bound; and the same-shape floor (the chunk's own thin d=128
  product plus one pass over its scores, times the chunks), which is
  what the rank and top-k passes are really added to;
* peak RSS of the process (getrusage ru_maxrss) next to the N x N fp32
  similarity matrix the chunking avoids materialising (and the
  chunk_size x N block it does materialise);
* correctness: every planted pair must be retrieved first (R@1 == 1.0),
  else the run fails.

`--quick` uses N = 4096 (a schema check).
"""

import os
import platform
import resource
import statistics
import time
from typing import Any, Sequence

from absl import app
from absl import flags

from bench import report

MIB = 2.0 ** 20


def planted_embeddings(n: int, d: int, noise: float = 0.1,
                       seed: int = 0) -> tuple[Any, Any]:
  """Random unit gallery [n, d] and queries = gallery + noise (fp32).

  With noise 0.1 (relative to a unit vector) the true pair's cosine is
  about 0.995, far above the best random match among 1e5 random d = 128
  vectors (about 0.45), so R@1 must be exactly 1.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  g = rng.standard_normal((n, d), dtype=np.float32)
  g /= np.linalg.norm(g, axis=1, keepdims=True)
  q = g + (noise / np.sqrt(d)) * rng.standard_normal((n, d),
                                                      dtype=np.float32)
  return q, g


def run(n: int = 100_000, *, d: int = 128, chunk_size: int = 1024,
        k: int = 10, peak_n: int = 2048,
        peak_repeats: int = 10) -> dict[str, Any]:
  """Times chunked retrieval over an n x n pool (see the module docstring).

  Args:
    n: pool size N (queries = gallery = N).
    d: embedding width.
    chunk_size: queries per device call (the evaluator's default 1024).
    k: top-k indices kept per query.
    peak_n: matrix side of the matmul-peak measurement.
    peak_repeats: timed matmuls of the peak measurement.

  Returns:
    The results dict (also what `write` stores).

  Raises:
    AssertionError: when a planted pair is not retrieved first.
  """
  # pylint: disable=g-import-not-at-top
  import jax
  from bench import matmul_peak
  from jointcxr.evaluators import retrieval_metrics as rm
  # pylint: enable=g-import-not-at-top
  rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
  q, g = planted_embeddings(n, d)
  peak = matmul_peak.measure(peak_n, repeats=peak_repeats)
  # Warm-up on one chunk so the timed call reuses the compiled kernels
  # (ranks_and_topk pads every chunk to chunk_size, so shapes match).
  c = min(chunk_size, n)
  t = time.perf_counter()
  rm.ranks_and_topk(q[:c], g[:c], k=k, chunk_size=chunk_size)
  warm_s = time.perf_counter() - t
  # The warm-up compiled for an [c, c] gallery; the timed call's gallery is
  # [n, d], so compile that too on a gallery of the full size, one chunk.
  t = time.perf_counter()
  jax.block_until_ready(rm._chunk_stats(  # pylint: disable=protected-access
      rm.l2_normalize(q[:c]), rm.l2_normalize(g),
      jax.numpy.arange(c), jax.numpy.ones((n,), bool), min(k, n)))
  compile_s = time.perf_counter() - t
  t = time.perf_counter()
  ranks, topk = rm.ranks_and_topk(q, g, k=k, chunk_size=chunk_size)
  wall = time.perf_counter() - t
  # The same-shape floor: one chunk's [c, d] x [d, N] product plus a single
  # pass over its scores (a row max), times the number of chunks. A d=128
  # product is far thinner than the square peak matmul, so this, not the
  # peak bound, is what the rank and top-k passes add to.
  chunk_s = matmul_peak.time_calls(
      jax.jit(lambda a, b: (a @ b.T).max(axis=1)), rm.l2_normalize(q[:c]),
      rm.l2_normalize(g), repeats=5)
  floor_s = statistics.median(chunk_s) * -(-n // c)
  metrics = rm.recall_metrics(ranks, (1, 5, 10))
  if metrics["R@1"] != 1.0:
    raise AssertionError(f"planted pairs not retrieved first: R@1 = "
                         f"{metrics['R@1']} (N={n})")
  flops = 2.0 * n * n * d
  bound = flops / peak["flops_per_s"]
  peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
  return {
      "config": {"n": n, "d": d, "chunk_size": chunk_size, "k": k,
                 "dtype": "float32", "backend": jax.default_backend(),
                 "cpu_count": os.cpu_count(), "machine": platform.machine(),
                 "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                 "load_average": list(os.getloadavg())},
      "matmul_peak": peak,
      "warmup_s": warm_s, "compile_full_gallery_s": compile_s,
      "wall_s": wall, "flops": flops, "bound_s": bound,
      "wall_over_bound": wall / bound,
      "same_shape_matmul_s": floor_s, "wall_over_same_shape": wall / floor_s,
      "achieved_flops_per_s": flops / wall,
      "metrics": metrics, "topk_shape": list(topk.shape),
      "peak_rss_mib": peak_rss, "rss_before_embeddings_mib": rss_start,
      "embeddings_mib": 2 * n * d * 4 / MIB,
      "full_matrix_mib": n * n * 4 / MIB,
      "chunk_block_mib": c * n * 4 / MIB,
  }


def to_markdown(r: dict[str, Any]) -> str:
  """One-row Markdown table of a `run` result."""
  c = r["config"]
  return "\n".join([
      "# Retrieval (chunked, image->text, planted pairs)", "",
      f"{c['date']}, {c['machine']}, {c['cpu_count']} CPUs, backend "
      f"{c['backend']}; N = {c['n']:,}, d = {c['d']}, {c['dtype']}, "
      f"chunk {c['chunk_size']}, top-{c['k']}. Bound = 2 N^2 d / fp32 "
      f"matmul peak measured in this run "
      f"({r['matmul_peak']['flops_per_s'] / 1e9:.1f} GFLOP/s, median of "
      f"{len(r['matmul_peak']['seconds'])} {r['matmul_peak']['n']}^3 "
      "matmuls). Same-shape floor = the evaluator's own [chunk, d] x "
      "[d, N] product plus one pass over its scores, per chunk, times the "
      "chunks. Peak RSS = the whole process (JAX runtime included).", "",
      "| N | wall s | bound s | wall / bound | same-shape floor s | "
      "wall / floor | achieved GFLOP/s | R@1 | "
      "peak RSS MiB | N x N fp32 MiB (avoided) | chunk block MiB |",
      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
      f"| {c['n']:,} | {r['wall_s']:.2f} | {r['bound_s']:.2f} | "
      f"{r['wall_over_bound']:.2f} | {r['same_shape_matmul_s']:.2f} | "
      f"{r['wall_over_same_shape']:.2f} | "
      f"{r['achieved_flops_per_s'] / 1e9:.1f} | "
      f"{r['metrics']['R@1']:.3f} | {r['peak_rss_mib']:.0f} | "
      f"{r['full_matrix_mib']:,.0f} | {r['chunk_block_mib']:.0f} |", ""])


def write(r: dict[str, Any], output_dir: str) -> tuple[str, str]:
  """Writes retrieval.json / .md atomically; returns their paths."""
  return report.write_pair(output_dir, "retrieval", r, to_markdown(r))


def _define_flags() -> None:
  """Defines the command-line flags (only when run as a program)."""
  flags.DEFINE_string("output_dir", "bench/results",
                      "Where retrieval.{json,md} go.")
  flags.DEFINE_boolean("quick", False, "N = 4096 (a schema check).")
  flags.DEFINE_integer("n", 100_000, "Pool size N (ignored with --quick).")
  flags.DEFINE_integer("chunk_size", 1024, "Queries per device call.")


def main(argv: Sequence[str]) -> None:
  """absl entry point."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  n = 4096 if f.quick else f.n
  r = (run(n, chunk_size=f.chunk_size, peak_n=256, peak_repeats=3)
       if f.quick else run(n, chunk_size=f.chunk_size))
  for path in write(r, f.output_dir):
    print(path)
  print(to_markdown(r))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
