r"""Image->text retrieval over an N x N pool with the project's evaluator.

    python -m bench.retrieval --output_dir=bench/results [--quick] [--n=100000]

Builds N gallery embeddings (d = 128, fp32, random unit vectors) and N
queries that are noisy copies of them (planted matches: query i's true
match is gallery i), then times `jointcxr.evaluators.retrieval_metrics.
ranks_and_topk` (the blocked pass `retrieval.metrics` uses: `chunk_size`
queries per call, scored against the gallery one cache-sized block at a
time, with the rank count and top-k candidates taken per block) side by
side with the previous, unfused implementation (`unfused_ranks_and_topk`:
each chunk's whole [chunk, N] score matrix, then a rank pass and a full-row
top-k), interleaved in one run. Reported:

* wall time of each path's second full-pool call (the first compiles),
  the matmul-bound lower bound 2 N^2 d / peak with the fp32 matmul peak
  measured in the same run (`bench.matmul_peak.measure`), wall / bound and
  unfused / blocked; and the unfused same-shape floor (the thin d=128
  [chunk, N] product plus one pass over its scores, times the chunks);
* peak RSS of the process (getrusage ru_maxrss) next to the N x N fp32
  similarity matrix neither path materialises, and the scores each holds
  per call ([chunk, block] against [chunk, N]);
* correctness: every planted pair must be retrieved first (R@1 == 1.0),
  and the paths may differ only where last-bit rounding of differently
  blocked products swaps near-equal neighbours (counted; more than 0.1 % of
  ranks or 1 % of top-k rows fails the run);
* the CPU model and ISA flags (`bench.report.machine`).

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


def unfused_ranks_and_topk(q: Any, g: Any, k: int, chunk_size: int
                           ) -> tuple[Any, Any]:
  """The evaluator before the blocked pass (the side-by-side baseline).

  Each chunk's whole [c, N] score matrix is materialised, then read again
  by the rank count and by `lax.top_k` over the full rows.
  """
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jointcxr.evaluators import retrieval_metrics as rm
  # pylint: enable=g-import-not-at-top

  @jax.jit
  def chunk(qc, gal, pos_idx):
    sim = qc @ gal.T
    pos = jnp.take_along_axis(sim, pos_idx[:, None], axis=1)
    not_self = jnp.arange(gal.shape[0])[None, :] != pos_idx[:, None]
    return (1 + jnp.sum((sim >= pos) & not_self, axis=1),
            jax.lax.top_k(sim, k)[1])

  qn, gn = rm.l2_normalize(q), rm.l2_normalize(g)
  n = qn.shape[0]
  ranks, tops = [], []
  for start in range(0, n, chunk_size):
    idx = np.arange(start, start + chunk_size) % n
    r, t = chunk(qn[idx], gn, jnp.asarray(idx))
    ranks.append(np.asarray(r)[: min(chunk_size, n - start)])
    tops.append(np.asarray(t)[: min(chunk_size, n - start)])
  return np.concatenate(ranks), np.concatenate(tops)


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
    AssertionError: when a planted pair is not retrieved first, or the
      evaluator and the unfused baseline disagree.
  """
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from bench import matmul_peak
  from jointcxr.evaluators import retrieval_metrics as rm
  # pylint: enable=g-import-not-at-top
  rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
  q, g = planted_embeddings(n, d)
  peak = matmul_peak.measure(peak_n, repeats=peak_repeats)
  # Each path runs twice on the full pool; the second call is timed (the
  # first compiles for these shapes). Interleaved, so drift in the VM's
  # matmul throughput hits both alike.
  timings: dict[str, list[float]] = {"blocked": [], "unfused": []}
  out = {}
  for _ in range(2):
    for name, fn in (("blocked", lambda: rm.ranks_and_topk(
        q, g, k=k, chunk_size=chunk_size)),
                     ("unfused", lambda: unfused_ranks_and_topk(
                         q, g, k, chunk_size))):
      t = time.perf_counter()
      out[name] = fn()
      timings[name].append(time.perf_counter() - t)
  ranks, topk = out["blocked"]
  # The two paths multiply in differently shaped blocks, so a score may
  # differ in its last bit and swap two near-equal neighbours: count those,
  # and fail on anything more.
  rank_diff = int(np.sum(ranks != out["unfused"][0]))
  topk_diff = int(np.sum(np.any(topk != out["unfused"][1], axis=1)))
  if rank_diff > n // 1000 or topk_diff > n // 100:
    raise AssertionError(f"blocked and unfused retrieval disagree on "
                         f"{rank_diff} ranks / {topk_diff} top-k rows of {n}")
  wall, wall_unfused = timings["blocked"][1], timings["unfused"][1]
  # The same-shape floor: one chunk's [c, d] x [d, N] product plus a single
  # pass over its scores (a row max), times the number of chunks. A d=128
  # product is far thinner than the square peak matmul, so this, not the
  # peak bound, is what the rank and top-k passes add to.
  c = min(chunk_size, n)
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
                 "block_size": rm.BLOCK_SIZE,
                 "dtype": "float32", "backend": jax.default_backend(),
                 **report.machine(),
                 "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                 "load_average": list(os.getloadavg())},
      "matmul_peak": peak,
      "first_call_s": timings["blocked"][0],
      "wall_s": wall, "flops": flops, "bound_s": bound,
      "wall_over_bound": wall / bound,
      "unfused_wall_s": wall_unfused,
      "unfused_over_bound": wall_unfused / bound,
      "unfused_over_blocked": wall_unfused / wall,
      "same_shape_matmul_s": floor_s, "wall_over_same_shape": wall / floor_s,
      "achieved_flops_per_s": flops / wall,
      "host_machine": report.machine(),
      "metrics": metrics, "topk_shape": list(topk.shape),
      "ranks_differing": rank_diff, "topk_rows_differing": topk_diff,
      "peak_rss_mib": peak_rss, "rss_before_embeddings_mib": rss_start,
      "embeddings_mib": 2 * n * d * 4 / MIB,
      "full_matrix_mib": n * n * 4 / MIB,
      "chunk_block_mib": c * n * 4 / MIB,
      "chunk_size_block_mib": c * min(rm.BLOCK_SIZE, n) * 4 / MIB,
  }


def to_markdown(r: dict[str, Any]) -> str:
  """One-row Markdown table of a `run` result."""
  c = r["config"]
  return "\n".join([
      "# Retrieval (chunked, image->text, planted pairs)", "",
      f"{c['date']}, {report.machine_line(c)}, backend "
      f"{c['backend']}; N = {c['n']:,}, d = {c['d']}, {c['dtype']}, "
      f"chunk {c['chunk_size']}, gallery block {c.get('block_size', 'n/a')},"
      f" top-{c['k']}. Bound = 2 N^2 d / fp32 "
      f"matmul peak measured in this run "
      f"({r['matmul_peak']['flops_per_s'] / 1e9:.1f} GFLOP/s, median of "
      f"{len(r['matmul_peak']['seconds'])} {r['matmul_peak']['n']}^3 "
      "matmuls). Same-shape floor = the unfused path's [chunk, d] x "
      "[d, N] product plus one pass over its scores, per chunk, times the "
      "chunks (the blocked pass never forms that product, so it can run "
      "below it). Each path's second full-pool call is timed; both are "
      "interleaved in one process.", "",
      "| implementation | N | wall s | bound s | wall / bound | "
      "same-shape floor s | wall / floor | achieved GFLOP/s | "
      "scores held per call MiB |",
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
      _row("blocked pass (the evaluator)", r, r["wall_s"],
           r["chunk_size_block_mib"] if "chunk_size_block_mib" in r
           else r["chunk_block_mib"]),
      _row("unfused (before): [chunk, N] scores, then rank and top-k passes",
           r, r["unfused_wall_s"], r["chunk_block_mib"])
      if "unfused_wall_s" in r else "", "",
      f"R@1 = {r['metrics']['R@1']:.3f} (planted pairs). The paths differ "
      f"on {r.get('ranks_differing', 0)} ranks and "
      f"{r.get('topk_rows_differing', 0)} top-k rows of {r['config']['n']:,}"
      " (last-bit rounding of differently blocked products swapping "
      "near-equal neighbours). "
      + (f"Unfused / blocked = {r['unfused_over_blocked']:.2f}x. "
         if "unfused_over_blocked" in r else "")
      + f"Peak RSS {r['peak_rss_mib']:.0f} MiB (the whole process, both "
      f"paths); the N x N fp32 matrix neither materialises would be "
      f"{r['full_matrix_mib']:,.0f} MiB.", ""])


def _row(name: str, r: dict[str, Any], wall: float, held_mib: float) -> str:
  """One implementation's row of the table."""
  return (f"| {name} | {r['config']['n']:,} | {wall:.2f} | "
          f"{r['bound_s']:.2f} | {wall / r['bound_s']:.2f} | "
          f"{r['same_shape_matmul_s']:.2f} | "
          f"{wall / r['same_shape_matmul_s']:.2f} | "
          f"{r['flops'] / wall / 1e9:.1f} | {held_mib:.0f} |")


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
