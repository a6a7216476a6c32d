"""One-line errors for bad configs instead of tracebacks.

ml_collections raises a raw AttributeError for an unknown `--config.foo=...`
key (ENVIRONMENT.md G12), buries an error raised inside `get_config` under a
multi-line traceback, and reports a missing config file only when the config
is first read. `parse_flags` (the `flags_parser` of `app.run`) turns all of
these into a single `error: ...` line on stderr and exit status 2; `check`
adds the cross-field checks that the type system cannot express, as one
`ValueError` naming every problem.
"""

import sys
from typing import Any, Sequence

from absl import flags

METHODS = ("convirt", "clip", "siglip", "lovt", "joimternet", "hsu")


def _last_line(text: str) -> str:
  """The root cause of a message that may embed a formatted traceback."""
  lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  if not lines:
    return ""
  if any(ln.startswith("Traceback") for ln in lines):
    return lines[-1]
  return lines[0]


def _unknown_key_message(err: Exception, argv: Sequence[str]) -> str:
  """`unknown config key 'k' in --config.a.k=v` (the offending flag)."""
  key = str(err.args[0] if err.args else err).strip("\"'")
  for arg in argv:
    name = arg.split("=", 1)[0].lstrip("-")
    if name.split(".")[-1] == key and "." in name:
      return f"unknown config key {key!r} in {arg}"
  return f"unknown config key {key!r}"


def parse_flags(argv: Sequence[str],
                config_flags: Sequence[str] = ("config",)) -> list[str]:
  """absl `flags_parser` for `app.run`: parses, or exits 2 with one line.

  Args:
    argv: the command line.
    config_flags: names of `DEFINE_config_file` flags to load eagerly (a
      missing config file is only noticed when the config is first read).

  Returns:
    The remaining positional arguments (as `flags.FLAGS(argv)`).
  """
  try:
    rest = flags.FLAGS(argv)
    for name in config_flags:
      value = flags.FLAGS[name].value if name in flags.FLAGS else None
      if value is not None:
        value.keys()  # a lazily failed load raises here, not mid-run
    return rest
  except (AttributeError, KeyError) as e:
    msg = _unknown_key_message(e, argv)
  except flags.Error as e:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    cause = _last_line(str(e))
    # "flag --config=x.py:arg: Error whilst parsing config file:" says where;
    # the last line of the embedded traceback says why.
    msg = first if cause == first else (
        first.replace("Error whilst parsing config file:", "").rstrip(": ")
        + ": " + cause)
  except (ValueError, TypeError, SyntaxError, ImportError, OSError) as e:
    # A missing file: "Failed loading config file ... [Errno 2] No such
    # file or directory: 'x.py'"; the last line names the file.
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    msg = f"cannot load config: {lines[-1] if lines else type(e).__name__}"
  print(f"error: {msg}", file=sys.stderr)
  sys.exit(2)


def check(config: Any) -> None:
  """Cross-field checks of a training config.

  Args:
    config: the (ml_collections) training config.

  Raises:
    ValueError: one line naming every problem found.
  """
  problems = []
  if config.method not in METHODS:
    problems.append(f"method {config.method!r} is not one of {METHODS}")
  # total_steps 0 initialises, saves and evaluates: the random-init baseline.
  if config.total_steps < 0:
    problems.append(f"total_steps must be >= 0, got {config.total_steps}")
  for key in ("batch_size", "ckpt_every_steps", "log_every_steps",
              "keep_checkpoints", "accum_steps"):
    if config[key] < 1:
      problems.append(f"{key} must be >= 1, got {config[key]}")
  if config.accum_steps >= 1 and config.batch_size % config.accum_steps:
    problems.append(f"batch_size {config.batch_size} is not divisible by "
                    f"accum_steps {config.accum_steps}")
  if config.nan_policy not in ("stop", "skip"):
    problems.append(f"nan_policy {config.nan_policy!r} is not stop|skip")
  if not 0.0 <= config.mlm_prob < 1.0:
    problems.append(f"mlm_prob {config.mlm_prob} is not in [0, 1)")
  if config.method != "hsu" and not config.input.data_dir:
    problems.append("input.data_dir is empty (set --config.input.data_dir)")
  if config.dtype not in ("float32", "bfloat16", "float16"):
    problems.append(f"dtype {config.dtype!r} is not float32|bfloat16|"
                    "float16")
  from jointcxr import sharding  # pylint: disable=g-import-not-at-top
  for parse, value in ((sharding.parse_mesh, config.mesh),
                       (sharding.parse_rules, config.sharding_rules)):
    try:
      parse(value)
    except ValueError as e:
      problems.append(str(e))
  problems += _health_problems(config)
  if problems:
    raise ValueError("bad config: " + "; ".join(problems))


def _health_problems(config: Any) -> list[str]:
  """Problems of the `val`, `early_stopping` and `health` sections."""
  problems = []
  v, es, h = config.val, config.early_stopping, config.health
  if v.every_steps < -1:
    problems.append(f"val.every_steps must be -1 (every epoch), 0 (off) or "
                    f"> 0, got {v.every_steps}")
  if v.batches < 0:
    problems.append(f"val.batches must be >= 0 (0: the whole split), got "
                    f"{v.batches}")
  if v.every_steps and not v.split:
    problems.append("val.split is empty")
  if es.patience < 0:
    problems.append(f"early_stopping.patience must be >= 0, got "
                    f"{es.patience}")
  if es.patience > 0 and not v.every_steps:
    problems.append(f"early_stopping.patience {es.patience} needs a "
                    "validation loss: set val.every_steps (-1: every epoch)")
  if es.min_delta < 0:
    problems.append(f"early_stopping.min_delta must be >= 0, got "
                    f"{es.min_delta}")
  if es.mode not in ("min", "max"):
    problems.append(f"early_stopping.mode {es.mode!r} is not min|max")
  if not str(es.metric).startswith("val/"):
    problems.append(f"early_stopping.metric {es.metric!r} is not a "
                    "validation value (val/...)")
  if not 0.0 < h.chance_tol < 1.0:
    problems.append(f"health.chance_tol {h.chance_tol} is not in (0, 1)")
  if h.chance_window < 1:
    problems.append(f"health.chance_window must be >= 1, got "
                    f"{h.chance_window}")
  if not 0.0 <= h.chance_after <= 1.0:
    problems.append(f"health.chance_after {h.chance_after} is not in "
                    "[0, 1]")
  return problems
