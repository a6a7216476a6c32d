r"""Do the seed papers' headline claims reproduce, in direction, here?

    python -m bench.validity --output_dir=bench/results [--seeds=3] \
        [--work_dir=/tmp/validity] [--steps=...]

On the demo's synthetic MIMIC-CXR (and localized sets), with the demo's
recipes (`jointcxr.demo.train_config`: same towers, sizes, optimiser and
augmentation for every method), each claim is checked over `seeds`
pretraining seeds on the held-out test splits:

- **JoImTeRNet**: global + local matching >= global-only (its
  `local_weight=0` ablation) on retrieval and on phrase grounding.
- **LoVT**: LoVT > ConVIRT on the localized probes, on average over tasks.
- **every pretrained model > random init on every probe** (linear-probe
  AUROC, each localized probe).
- **Hsu et al.**: retrieval vs supervision fraction for EA, Adv and EA+Adv
  (`bench.hsu_claims`): Adv at fraction 0 above chance, 10 % supervision
  within 20 % of full.

A claim compares paired runs (same seed, same data): the table shows the
mean difference with a 95 % t-interval over seeds and a verdict — "holds"
(interval above 0), "direction only" (mean above 0, interval includes 0) or
"does not hold". Nothing here is tuned to the table: the recipes are the
demo's, chosen on the validation split. Writes `validity.json` and
`validity.md`.
"""

import json
import os
import tempfile
import time
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
import numpy as np

from bench import report

# Localized probes in the claim (the demo's tasks; CIs come from the
# pretraining seeds, one probe run each).
TASKS = ("rsna/linear/frozen/100", "siim/linear/frozen/100",
         "covid_rural/linear/frozen/100", "nih/linear/frozen/100",
         "siim/unet/frozen/100", "rsna/detection/frozen/100")
MODELS = ("LoVT", "ConVIRT", "JoImTeRNet", "JoImTeRNet global-only",
          "random init")


def _define_flags() -> None:
  """Defines the command-line flags (only when run as a program)."""
  flags.DEFINE_string("output_dir", "bench/results", "Where validity.* go.")
  flags.DEFINE_string("work_dir", "", "Data/run directory (default: temp).")
  flags.DEFINE_integer("seeds", 3, "Pretraining seeds per model.")
  flags.DEFINE_integer("steps", 0, "Pretraining steps (0: the demo's).")
  flags.DEFINE_integer("subjects", 0, "Synthetic subjects (0: the demo's).")
  flags.DEFINE_bool("hsu", True, "Include the Hsu et al. claims.")
  flags.DEFINE_bool("quick", False, "Schema check: tiny sizes, 2 seeds.")


def model_config(name: str, data: dict, steps: int, seed: int,
                 size: int):
  """The training config of one benchmark model (the demo's recipes)."""
  from jointcxr import demo  # pylint: disable=g-import-not-at-top
  method = {"LoVT": "lovt", "ConVIRT": "convirt", "JoImTeRNet": "joimternet",
            "JoImTeRNet global-only": "joimternet",
            "random init": "lovt"}[name]
  cfg = demo.train_config(method, data["mimic_cxr"],
                          0 if name == "random init" else steps, size,
                          data["tokenizer"], seed)
  if name == "JoImTeRNet global-only":
    with cfg.unlocked():
      cfg.loss.local_weight = 0.0
  return cfg


def evaluate_model(workdir: str, data: dict, size: int, tasks=TASKS,
                   epochs: int = 8) -> dict:
  """eval_global (test split) + the localized probes and grounding."""
  # pylint: disable=g-import-not-at-top
  from jointcxr import demo
  from jointcxr import eval_global
  from jointcxr import eval_localized
  # pylint: enable=g-import-not-at-top
  g = eval_global.evaluate(demo.eval_config(
      "global", **{"input.data_dir": data["mimic_cxr"], "limit": 0,
                   "probe_limit": 0, "zero_shot": False}), workdir)
  lcfg = demo.localized_eval_config(data["localized"], size, tasks=tasks,
                                    epochs=epochs, seeds=1)
  loc = eval_localized.evaluate(lcfg, workdir)
  return {**g, **loc}


def paired_claim(a: Sequence[float], b: Sequence[float]) -> dict:
  """Mean and 95 % t-CI of a - b over paired seeds, and the verdict."""
  from jointcxr.evaluators import localized_metrics  # pylint: disable=g-import-not-at-top
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  s = localized_metrics.mean_std_ci(d)
  lo, hi = s["ci95"]
  if s["n"] < 2:  # no interval from one seed: direction only at best
    verdict = ("direction only (1 seed)" if s["mean"] > 0 else
               "does not hold (1 seed)")
  else:
    verdict = ("holds" if lo > 0 else "direction only" if s["mean"] > 0
               else "does not hold")
  return {"mean_diff": s["mean"], "ci95": [lo, hi], "n": s["n"],
          "a": [float(x) for x in a], "b": [float(x) for x in b],
          "verdict": verdict}


def _metric(res: dict, key: str) -> float:
  """A task's metric mean from an eval dict (`<task>/...` or exact key)."""
  if key in res:
    return float(res[key])
  k = next((k for k in res if k.startswith(key + "/") and k.endswith(
      "_mean")), None)
  return float(res[k]) if k else float("nan")


def task_key(spec: str) -> str:
  """eval_localized's key prefix of a task spec ("rsna/linear/frozen/100"
  -> "seg/rsna/linear-frozen-100")."""
  dataset, kind, mode, pct = spec.split("/")
  fam = "det" if kind == "detection" else "seg"
  return f"{fam}/{dataset}/{kind}-{mode}-{pct}"


def claims(results: dict[str, list[dict]], tasks=TASKS) -> dict:
  """Every claim from per-model lists of per-seed eval dicts."""
  get = lambda m, k: [_metric(r, k) for r in results[m]]
  out: dict[str, Any] = {}
  if "JoImTeRNet" in results and "JoImTeRNet global-only" in results:
    for k, name in (("retrieval/i2t/R@10", "I->R R@10"),
                    ("retrieval/t2i/R@10", "R->I R@10"),
                    ("grounding/ms_cxr/pointing_game", "pointing game")):
      out[f"JoImTeRNet: global+local >= global-only ({name})"] = (
          paired_claim(get("JoImTeRNet", k),
                       get("JoImTeRNet global-only", k)))
  if "LoVT" in results and "ConVIRT" in results:
    mean_over = lambda m: np.nanmean(
        [get(m, task_key(t)) for t in tasks], axis=0)
    out["LoVT > ConVIRT (localized probes, mean over tasks)"] = (
        paired_claim(mean_over("LoVT"), mean_over("ConVIRT")))
  probes = [("probe/auroc_mean", "linear-probe AUROC")] + [
      (task_key(t), t) for t in tasks]
  for m in results:
    if m == "random init":
      continue
    for k, name in probes:
      out[f"{m} > random init ({name})"] = paired_claim(
          get(m, k), get("random init", k))
  return out


def measure(work_dir: str, seeds: int = 3, steps: int = 0,
            subjects: int = 0, hsu: bool = True, quick: bool = False,
            log: Callable[[str], None] = print) -> dict:
  """Builds the data, trains and evaluates every model per seed."""
  # pylint: disable=g-import-not-at-top
  from jointcxr import demo
  from jointcxr import train
  # pylint: enable=g-import-not-at-top
  t0 = time.time()
  size = demo.DEFAULT_SIZE
  subjects = subjects or (60 if quick else demo.DEFAULT_SUBJECTS)
  steps = steps or (4 if quick else demo.DEFAULT_STEPS)
  tasks = TASKS[:1] + TASKS[-1:] if quick else TASKS
  demo.generate_data(work_dir, subjects, 0)
  data = demo.convert_data(work_dir, size)
  results: dict[str, list[dict]] = {m: [] for m in MODELS}
  timing: dict[str, float] = {}
  # Finished (model, seed) evaluations are kept in work_dir, so a run that
  # stops midway continues where it was (the trainer resumes likewise).
  done_path = os.path.join(work_dir, "validity_runs.json")
  done = {}
  if os.path.exists(done_path):
    with open(done_path) as f:
      done = json.load(f)
  for seed in range(seeds):
    for m in MODELS:
      t = time.time()
      name = f"{m}/{seed}/{steps}"
      if name not in done:
        wd = os.path.join(work_dir, "runs", f"{m.replace(' ', '_')}_{seed}")
        train.train_and_evaluate(model_config(m, data, steps, seed, size), wd)
        res = evaluate_model(wd, data, size, tasks, epochs=2 if quick else 8)
        done[name] = {"result": {k: v for k, v in res.items()
                                 if isinstance(v, (int, float))},
                      "seconds": time.time() - t}
        with open(done_path + ".tmp", "w") as f:
          json.dump(done, f)
        os.replace(done_path + ".tmp", done_path)
      results[m].append(done[name]["result"])
      timing[f"{m}/{seed}"] = done[name]["seconds"]
      log(f"[validity] {m} seed {seed}: {timing[f'{m}/{seed}']:.0f}s")
  out = {"seeds": seeds, "steps": steps, "subjects": subjects,
         "image_size": size, "tasks": list(tasks), "results": results,
         "claims": claims(results, tasks), "seconds_per_run": timing}
  if hsu:
    from bench import hsu_claims  # pylint: disable=g-import-not-at-top
    t = time.time()
    out["hsu"] = hsu_claims.measure(
        data["mimic_cxr"], data["tokenizer"], os.path.join(work_dir, "hsu"),
        seeds=tuple(range(seeds)), **({"tower_steps": 4, "dims": (8,)}
                                      if quick else {}))
    timing["hsu"] = time.time() - t
  out["seconds"] = time.time() - t0
  return out


def to_markdown(r: dict) -> str:
  """The claims table (and the Hsu table when present)."""
  lines = [f"# Seed-paper claims on the demo data ({r['subjects']} "
           f"subjects, {r['image_size']} px, {r['steps']} steps, "
           f"{r['seeds']} seeds)", "",
           "Each row compares paired runs (same seed): mean difference "
           "[95% t-CI over seeds]. Written by `python -m bench.validity`.",
           "", "| claim | a (per seed) | b (per seed) | a - b [95% CI] | "
           "verdict |", "|---|---|---|---|---|"]
  fmt = lambda xs: ", ".join(f"{x:.3f}" for x in xs)
  for name, c in r["claims"].items():
    lines.append(f"| {name} | {fmt(c['a'])} | {fmt(c['b'])} | "
                 f"{c['mean_diff']:+.3f} [{c['ci95'][0]:+.3f}, "
                 f"{c['ci95'][1]:+.3f}] | {c['verdict']} |")
  verdicts = [c["verdict"].split(" (")[0] for c in r["claims"].values()]
  lines += ["", f"{verdicts.count('holds')} of {len(verdicts)} hold, "
            f"{verdicts.count('direction only')} in direction only, "
            f"{verdicts.count('does not hold')} do not hold. "
            f"{r['seconds'] / 60:.0f} min wall; "
            f"{sum(r['seconds_per_run'].values()) / 60:.0f} min of "
            "train + evaluate runs (this invocation or the earlier ones "
            "it continued)."]
  if "hsu" in r:
    from bench import hsu_claims  # pylint: disable=g-import-not-at-top
    lines += ["", hsu_claims.to_markdown(r["hsu"])]
  return "\n".join(lines)


def main(argv):
  del argv
  f = flags.FLAGS
  work = f.work_dir or tempfile.mkdtemp(prefix="jointcxr_validity_")
  os.makedirs(work, exist_ok=True)
  r = measure(work, 2 if f.quick else f.seeds, f.steps, f.subjects, f.hsu,
              f.quick)
  md = to_markdown(r)
  paths = report.write_pair(f.output_dir, "validity", r, md)
  print(md)
  print("wrote", *paths)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
