r"""This machine's practical fp32 matmul peak: a jitted 2048^3 JAX matmul.

    python -m bench.matmul_peak --output_dir=bench/results [--size=2048]

The train-step benchmark divides achieved FLOP/s by this number, measured
in the same run (ENVIRONMENT.md §4: about 150-170 GFLOP/s on the 2-core
dev box; shared cores make any single number noisy, so the median of
`repeats` timed calls is reported along with the best).
"""

import time
from typing import Any, Callable, Sequence

from absl import app
from absl import flags

from bench import report


def _define_flags() -> None:
  """Defines the command-line flags (only when run as a program).

  Kept out of import time so bench.train_step, bench.retrieval and
  bench.run_all can import `measure` next to their own `--output_dir`.
  """
  flags.DEFINE_string("output_dir", "bench/results",
                      "Where matmul_peak.{json,md} go.")
  flags.DEFINE_integer("size", 2048, "Square matrix side n.")
  flags.DEFINE_integer("repeats", 10, "Timed calls.")


def time_calls(fn: Callable[..., Any], *args: Any,
               repeats: int) -> list[float]:
  """Seconds of `repeats` blocking calls `fn(*args)` after one warm-up."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(fn(*args))
  seconds = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    seconds.append(time.perf_counter() - t)
  return seconds


def measure(n: int = 2048, repeats: int = 10,
            dtype: str = "float32") -> dict[str, Any]:
  """Times `x @ y` for n x n matrices under `jax.jit`.

  Args:
    n: matrix side.
    repeats: timed calls after one warm-up call.
    dtype: "float32" or "bfloat16".

  Returns:
    dict with `n`, `dtype`, `flops_per_s` (median), `best_flops_per_s`,
    `seconds` (each call) and the JAX `backend`.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(n, n)), dtype)
  y = jnp.asarray(rng.normal(size=(n, n)), dtype)
  seconds = time_calls(jax.jit(lambda a, b: a @ b), x, y, repeats=repeats)
  flops = 2.0 * n ** 3
  return {"n": n, "dtype": dtype, "backend": jax.default_backend(),
          "flops_per_s": flops / float(np.median(seconds)),
          "best_flops_per_s": flops / min(seconds), "seconds": seconds}


def to_markdown(r: dict[str, Any]) -> str:
  """One-row Markdown table of a `measure` result."""
  return "\n".join([
      "# Matmul peak", "",
      "| backend | n | dtype | median GFLOP/s | best GFLOP/s |",
      "|---|---:|---|---:|---:|",
      f"| {r['backend']} | {r['n']} | {r['dtype']} | "
      f"{r['flops_per_s'] / 1e9:.1f} | {r['best_flops_per_s'] / 1e9:.1f} |",
      ""])


def write(r: dict[str, Any], output_dir: str) -> tuple[str, str]:
  """Writes matmul_peak.json / .md atomically; returns their paths."""
  return report.write_pair(output_dir, "matmul_peak", r, to_markdown(r))


def main(argv: Sequence[str]) -> None:
  """absl entry point."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if f.size < 1 or f.repeats < 1:
    raise app.UsageError("--size and --repeats must be positive")
  json_path, md_path = write(measure(f.size, f.repeats), f.output_dir)
  print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
