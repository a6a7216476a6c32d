r"""Runs every benchmark and writes their results plus a combined summary.

    python -m bench.run_all --output_dir=bench/results [--quick]

(`make bench`.) In order: `matmul_peak`, `loss_memory`, `data_prep`,
`retrieval`, `train_step`, `input_pipeline` (compared with this run's
train step), `accelerator` (on a CPU backend it records that nothing was
measured). Each runs as its own subprocess
(`python -m bench.<name> --output_dir=...`): they define clashing absl
flags, loss_memory needs a fresh JAX with 8 fake devices, and a crash or
out-of-memory in one must not take the others down. Each writes
`<name>.json` and `<name>.md` into `--output_dir`; this module then writes
`summary.md` with the command, the date and machine, and every table (or
the failure: exit status and the end of its stderr); with `--only`, the
others' tables from an earlier run are kept, marked as such. The exit
status is 1 when any benchmark failed.

`--quick` passes each benchmark's smallest settings (seconds to a few
minutes in all): a check that the suite and its output schema work, not a
measurement.
"""

import os
import platform
import subprocess
import sys
import time
from typing import Any, Sequence

from absl import app
from absl import flags

from bench import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (full-run flags, quick flags).
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "matmul_peak": ([], ["--size=256", "--repeats=3"]),
    "loss_memory": ([], ["--batch_sizes=8,16"]),
    # Fewer than ~8 subjects can leave no study after planning (exclusions).
    "data_prep": ([], ["--num_subjects=8", "--repeats=1", "--copies=1",
                       "--workers=1"]),
    "retrieval": ([], ["--quick"]),
    # --ablation: the lowering table and XLA flag variants (issue 8).
    "train_step": (["--ablation"], ["--quick", "--pairs=1", "--steps=1"]),
    # Reads train_step.json of this run for its input / step ratio.
    "input_pipeline": ([], ["--subjects=12", "--batch=8", "--batches=2"]),
    # On a CPU backend this writes "not measured" (no accelerator).
    "accelerator": ([], ["--smoke"]),
}


def run_one(name: str, output_dir: str, quick: bool,
            timeout_s: float | None = None) -> dict[str, Any]:
  """Runs `bench.<name>` in a subprocess; returns its status and table.

  Returns:
    dict with `name`, `command`, `ok`, `wall_s`, and `markdown` (the
    benchmark's .md) when it succeeded, or `error` (exit status and the
    last lines of its stderr) when it did not.
  """
  full, small = BENCHMARKS[name]
  cmd = [sys.executable, "-m", f"bench.{name}",
         f"--output_dir={output_dir}"] + (small if quick else full)
  env = dict(os.environ)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  t = time.perf_counter()
  try:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=False,
                          timeout=timeout_s)
    code, err = proc.returncode, proc.stderr
  except subprocess.TimeoutExpired as e:
    code = "timeout"
    err = e.stderr if isinstance(e.stderr, str) else (
        e.stderr or b"").decode(errors="replace")
  wall = time.perf_counter() - t
  row: dict[str, Any] = {"name": name, "command": " ".join(
      ["python -m", f"bench.{name}"] + cmd[3:]), "wall_s": wall}
  md = os.path.join(output_dir, f"{name}.md")
  if code == 0 and os.path.exists(md):
    with open(md, encoding="utf-8") as f:
      row.update(ok=True, markdown=f.read())
  else:
    tail = "\n".join((err or "").strip().splitlines()[-8:])
    row.update(ok=False, error=f"exit {code}: {tail}")
  return row


def _status(row: dict[str, Any]) -> str:
  if row.get("earlier"):
    return "earlier run (not re-run)"
  return "ok" if row["ok"] else "FAILED"


def earlier_row(name: str, output_dir: str) -> dict[str, Any] | None:
  """A row for a benchmark not run now, from its `.md` if one exists.

  So `--only=x` refreshes x's table while summary.md keeps the others,
  marked as coming from an earlier run.
  """
  md = os.path.join(output_dir, f"{name}.md")
  if not os.path.exists(md):
    return None
  when = time.strftime("%Y-%m-%d %H:%M UTC",
                       time.gmtime(os.path.getmtime(md)))
  with open(md, encoding="utf-8") as f:
    return {"name": name, "ok": True, "earlier": True, "wall_s": 0.0,
            "command": f"python -m bench.{name} (earlier run, {when})",
            "markdown": f.read()}


def summary(rows: Sequence[dict[str, Any]], command: str) -> str:
  """The combined Markdown: header line, then each benchmark's table."""
  failed = [r["name"] for r in rows if not r["ok"]]
  lines = [
      "# Benchmark summary", "",
      f"`{command}`", "",
      f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {platform.node()}, "
      f"{report.machine_line(report.machine())}, Python "
      f"{platform.python_version()}, load average "
      f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}.", "",
      "| benchmark | status | wall s |", "|---|---|---:|"]
  lines += [f"| {r['name']} | {_status(r)} | "
            f"{'' if r.get('earlier') else format(r['wall_s'], '.1f')} |"
            for r in rows]
  if failed:
    lines += ["", f"Failed: {', '.join(failed)} (details below)."]
  for r in rows:
    lines += ["", "---", "", f"`{r['command']}`", ""]
    if r["ok"]:
      # Demote the benchmark's own headings one level under the summary.
      lines.append("\n".join("#" + ln if ln.startswith("#") else ln
                             for ln in r["markdown"].rstrip().splitlines()))
    else:
      lines += [f"## {r['name']}: FAILED", "", "```", r["error"], "```"]
  return "\n".join(lines) + "\n"


def run(output_dir: str, *, quick: bool = False,
        names: Sequence[str] = tuple(BENCHMARKS),
        command: str = "python -m bench.run_all") -> list[dict[str, Any]]:
  """Runs `names` in order, writes `summary.md`; returns the status rows."""
  os.makedirs(output_dir, exist_ok=True)
  rows = []
  for name in names:
    print(f"[bench.run_all] {name} ...", flush=True)
    row = run_one(name, output_dir, quick)
    print(f"[bench.run_all] {name}: {'ok' if row['ok'] else 'FAILED'} "
          f"({row['wall_s']:.1f} s)", flush=True)
    rows.append(row)
  ran = {r["name"] for r in rows}
  rows += [r for r in (earlier_row(n, output_dir) for n in BENCHMARKS
                       if n not in ran) if r is not None]
  rows.sort(key=lambda r: list(BENCHMARKS).index(r["name"]))
  path = os.path.join(output_dir, "summary.md")
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write(summary(rows, command))
  os.replace(path + ".tmp", path)
  print(path)
  return rows


def _define_flags() -> None:
  """Defines the command-line flags (only when run as a program).

  Kept out of import time so the benchmark modules import together (tests
  import several; absl refuses a flag defined twice).
  """
  flags.DEFINE_string("output_dir", "bench/results",
                      "Where every result and summary.md go.")
  flags.DEFINE_boolean("quick", False, "Smallest settings: a schema "
                       "check, not a measurement.")
  flags.DEFINE_list("only", None, "Run only these benchmarks (default: "
                    f"all of {', '.join(BENCHMARKS)}).")


def main(argv: Sequence[str]) -> None:
  """absl entry point; exits 1 if any benchmark failed."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  names = flags.FLAGS.only or list(BENCHMARKS)
  unknown = sorted(set(names) - set(BENCHMARKS))
  if unknown:
    raise app.UsageError(f"unknown benchmarks {unknown}; expected some of "
                         f"{list(BENCHMARKS)}")
  command = " ".join(["python -m bench.run_all"] + sys.argv[1:])
  rows = run(flags.FLAGS.output_dir, quick=flags.FLAGS.quick, names=names,
             command=command)
  if not all(r["ok"] for r in rows):
    sys.exit(1)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
