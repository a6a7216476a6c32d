r"""Exit stress: every stop/resume cycle of the trainer exits 0, under load.

    python -m jointcxr.exit_stress --data_dir=D --workdir=W [--cycles=10] \
        [--load=1] [--config=configs/convirt.py:tiny] [--steps_per_cycle=2] \
        [--extra=--config.input.prefetch=64]

Runs the trainer `cycles` times in the same workdir, each run continuing
from the previous one's checkpoint for `steps_per_cycle` more steps
(`--config.ckpt_every_steps=2`, the config's in-training evaluation on),
while `load` other training jobs keep the CPU busy. A cycle passes when the
run exits 0, its stderr holds no abort or fatal-signal trace ("Fatal
Python error", "terminate called", "FATAL: exception not rethrown", ...),
it printed its final metrics and its last checkpoint is the expected step.
Prints a JSON report and exits 1 if any cycle failed.

This is the check behind RELIABILITY.md's "exit" row: a run that finished
its work must not then abort at interpreter exit (a scheduler sees a
failed job). `tests/test_reliability.py` runs a 2-cycle version.
"""

import json
import os
import signal
import subprocess
import sys
import time

# What an abort or a fatal signal at exit leaves on stderr.
FATAL_MARKERS = ("Fatal Python error", "terminate called", "FATAL:",
                 "Segmentation fault", "Aborted", "core dumped",
                 "*** SIG", "Check failed")


def train_cmd(config: str, data_dir: str, workdir: str, steps: int,
              extra=()) -> list[str]:
  """The trainer command of one cycle (and of the load jobs)."""
  return [sys.executable, "-m", "jointcxr.train", f"--config={config}",
          f"--workdir={workdir}", f"--config.input.data_dir={data_dir}",
          f"--config.total_steps={steps}", "--config.ckpt_every_steps=2",
          *extra]


def _last_checkpoint(workdir: str) -> int | None:
  d = os.path.join(workdir, "checkpoints")
  steps = [int(n) for n in os.listdir(d) if n.isdigit()] if os.path.isdir(
      d) else []
  return max(steps) if steps else None


def check_cycle(rc: int, stdout: str, stderr: str, workdir: str,
                steps: int) -> list[str]:
  """Problems of one finished cycle (empty: it passed)."""
  problems = []
  if rc != 0:
    problems.append(f"exit status {rc}" + (
        f" ({signal.Signals(-rc).name})" if rc < 0 else
        " (SIGABRT)" if rc == 134 else ""))
  for marker in FATAL_MARKERS:
    if marker in stderr:
      line = next(ln for ln in stderr.splitlines() if marker in ln)
      problems.append(f"stderr: {line.strip()[:200]}")
  finals = [ln for ln in stdout.splitlines() if ln.startswith("{")]
  if not finals or json.loads(finals[-1]).get("step") != steps:
    problems.append("no final metrics line for step %d" % steps)
  if _last_checkpoint(workdir) != steps:
    problems.append(f"last checkpoint {_last_checkpoint(workdir)}, expected "
                    f"{steps}")
  return problems


def start_load(n: int, config: str, data_dir: str, workdir: str, env,
               extra=()) -> list[subprocess.Popen]:
  """`n` long training jobs that keep the CPU busy (stop with stop_load)."""
  procs = []
  for i in range(n):
    w = os.path.join(workdir, f"load{i}")
    procs.append(subprocess.Popen(
        train_cmd(config, data_dir, w, 10 ** 7, extra) + [
            "--config.ckpt_every_steps=1000000",
            "--config.evals.retrieval.limit=0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True))
  return procs


def stop_load(procs: list[subprocess.Popen]) -> None:
  for p in procs:
    if p.poll() is None:
      p.kill()
    p.wait()


def run(config: str, data_dir: str, workdir: str, *, cycles: int,
        steps_per_cycle: int = 2, load: int = 1, extra=(), env=None,
        timeout: float = 1800) -> dict:
  """Runs the cycles; returns the report (see the module docstring)."""
  env = dict(os.environ if env is None else env)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  run_dir = os.path.join(workdir, "run")
  load_procs = start_load(load, config, data_dir, workdir, env, extra)
  results = []
  t0 = time.time()
  try:
    for c in range(1, cycles + 1):
      steps = c * steps_per_cycle
      t = time.time()
      proc = subprocess.run(train_cmd(config, data_dir, run_dir, steps,
                                      extra), env=env, capture_output=True,
                            text=True, timeout=timeout, check=False)
      problems = check_cycle(proc.returncode, proc.stdout, proc.stderr,
                             run_dir, steps)
      load_alive = sum(p.poll() is None for p in load_procs)
      results.append({"cycle": c, "steps": steps, "rc": proc.returncode,
                      "seconds": round(time.time() - t, 1),
                      "load_jobs_running": load_alive,
                      "problems": problems})
      print(json.dumps(results[-1]), file=sys.stderr, flush=True)
      if problems:
        name = os.path.join(workdir, f"cycle{c}.stderr")
        with open(name, "w") as f:
          f.write(proc.stderr)
        results[-1]["stderr_file"] = name
  finally:
    stop_load(load_procs)
  failed = [r["cycle"] for r in results if r["problems"]]
  return {"cycles": cycles, "exit_codes": [r["rc"] for r in results],
          "failed_cycles": failed, "load_jobs": load,
          "extra": list(extra), "seconds": round(time.time() - t0, 1),
          "results": results, "ok": not failed}


def main(argv) -> int:
  from absl import flags  # pylint: disable=g-import-not-at-top
  fl = flags.FlagValues()
  flags.DEFINE_string("config", "configs/convirt.py:tiny", "Train config.",
                      flag_values=fl)
  flags.DEFINE_string("data_dir", None, "Converted dataset.", flag_values=fl)
  flags.DEFINE_string("workdir", None, "Scratch directory.", flag_values=fl)
  flags.DEFINE_integer("cycles", 10, "Stop/resume cycles.", flag_values=fl)
  flags.DEFINE_integer("steps_per_cycle", 2, "Steps each run adds.",
                       flag_values=fl)
  flags.DEFINE_integer("load", 1, "Training jobs loading the CPU meanwhile.",
                       flag_values=fl)
  flags.DEFINE_multi_string("extra", [], "More trainer flags (each cycle "
                            "and the load jobs).", flag_values=fl)
  fl(argv)
  if not fl.data_dir or not fl.workdir:
    print("error: --data_dir and --workdir are required", file=sys.stderr)
    return 2
  if _last_checkpoint(os.path.join(fl.workdir, "run")) is not None:
    print(f"error: {fl.workdir}/run already holds checkpoints; use a fresh "
          "--workdir", file=sys.stderr)
    return 2
  report = run(fl.config, fl.data_dir, fl.workdir, cycles=fl.cycles,
               steps_per_cycle=fl.steps_per_cycle, load=fl.load,
               extra=fl.extra)
  print(json.dumps({k: v for k, v in report.items() if k != "results"},
                   indent=2))
  return 0 if report["ok"] else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv))
