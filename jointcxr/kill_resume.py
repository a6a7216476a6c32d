r"""Kill/resume harness: interrupted training must equal uninterrupted training.

    python -m jointcxr.kill_resume --config=configs/lovt.py:tiny \
        --data_dir=D --workdir=W [--kills=3] [--signal=KILL|TERM] \
        [--steps=12] [--seed=0]

Trains the config once without interruption (W/reference), then again in
W/interrupted, sending SIGKILL (crash) or SIGTERM (graceful preemption) at
`kills` random steps and restarting the same command each time, and finally
compares the two runs: every parameter, batch statistic and optimizer-state
leaf, and the final logged metrics, must be bit-identical on CPU. Prints a
JSON report and exits non-zero on any difference.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np


def _cmd(config: str, data_dir: str, workdir: str, steps: int,
         extra=()) -> list[str]:
  """The training command every run of the harness uses."""
  return [sys.executable, "-m", "jointcxr.train", f"--config={config}",
          f"--workdir={workdir}", f"--config.input.data_dir={data_dir}",
          f"--config.total_steps={steps}", "--config.log_every_steps=1",
          "--config.ckpt_every_steps=2", "--config.evals.retrieval.limit=0",
          *extra]


def _logged_steps(workdir: str) -> int:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = [json.loads(line) for line in f if line.strip()]
  return max((r["step"] for r in lines), default=0)


def _last_metrics(workdir: str) -> dict:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  last = max(r["step"] for r in rows)
  # Re-run steps append again; keep the final occurrence of the last step.
  row = [r for r in rows if r["step"] == last][-1]
  return {k: v for k, v in row.items() if not k.endswith(("_per_sec",))}


def run_interrupted(config, data_dir, workdir, steps, kills, sig, seed,
                    env, timeout=600) -> list[int]:
  """Runs to completion, interrupting at `kills` random steps."""
  rng = np.random.default_rng(seed)
  targets = sorted(rng.choice(np.arange(1, steps), size=min(kills, steps - 1),
                              replace=False).tolist())
  stopped_at = []
  for target in targets:
    proc = subprocess.Popen(_cmd(config, data_dir, workdir, steps), env=env,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.time()
    while proc.poll() is None and _logged_steps(workdir) < target:
      if time.time() - t0 > timeout:
        proc.kill()
        raise TimeoutError(f"training did not reach step {target}")
      time.sleep(0.05)
    if proc.poll() is None:
      proc.send_signal(sig)
    proc.wait(timeout=timeout)
    stopped_at.append(_logged_steps(workdir))
  subprocess.run(_cmd(config, data_dir, workdir, steps), env=env, check=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                 timeout=timeout)
  return stopped_at


def compare(workdir_a: str, workdir_b: str) -> dict:
  """Bit-level comparison of the final checkpoints and metrics."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  def final_state(w):
    m = ocp.CheckpointManager(os.path.join(os.path.abspath(w),
                                           "checkpoints"),
                              item_names=("state", "data"))
    step = max(m.all_steps())
    return step, m.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]

  sa, a = final_state(workdir_a)
  sb, b = final_state(workdir_b)
  la = jax.tree_util.tree_flatten_with_path(a)[0]
  lb = dict(jax.tree_util.tree_flatten_with_path(b)[0])
  diffs = [jax.tree_util.keystr(k) for k, v in la
           if k not in lb or not np.array_equal(np.asarray(v),
                                                np.asarray(lb[k]))]
  ma, mb = _last_metrics(workdir_a), _last_metrics(workdir_b)
  metric_diffs = sorted(k for k in ma if ma.get(k) != mb.get(k))
  return {"steps": [sa, sb], "leaves": len(la), "differing_leaves": diffs,
          "differing_metrics": metric_diffs,
          "identical": sa == sb and not diffs and not metric_diffs}


def main(argv) -> int:
  from absl import flags  # pylint: disable=g-import-not-at-top
  fl = flags.FlagValues()
  flags.DEFINE_string("config", "configs/lovt.py:tiny", "Train config.",
                      flag_values=fl)
  flags.DEFINE_string("data_dir", None, "Converted dataset.", flag_values=fl)
  flags.DEFINE_string("workdir", None, "Scratch directory.", flag_values=fl)
  flags.DEFINE_integer("steps", 12, "Training steps.", flag_values=fl)
  flags.DEFINE_integer("kills", 3, "Interruptions.", flag_values=fl)
  flags.DEFINE_enum("signal", "KILL", ["KILL", "TERM"], "Signal.",
                    flag_values=fl)
  flags.DEFINE_integer("seed", 0, "Seed of the kill steps.", flag_values=fl)
  fl(argv)
  if not fl.data_dir or not fl.workdir:
    print("error: --data_dir and --workdir are required", file=sys.stderr)
    return 2
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  ref = os.path.join(fl.workdir, "reference")
  run = os.path.join(fl.workdir, "interrupted")
  subprocess.run(_cmd(fl.config, fl.data_dir, ref, fl.steps), env=env,
                 check=True, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)
  stopped = run_interrupted(fl.config, fl.data_dir, run, fl.steps, fl.kills,
                            getattr(signal, f"SIG{fl.signal}"), fl.seed, env)
  report = {"signal": fl.signal, "stopped_at_logged_steps": stopped,
            **compare(ref, run)}
  print(json.dumps(report, indent=2))
  return 0 if report["identical"] else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv))
