"""One-line errors for bad configs instead of tracebacks.

ml_collections raises a raw AttributeError for an unknown
`--config.foo=...` key (ENVIRONMENT.md G12) and absl prints a multi-line
usage dump for a wrong type. `parse_flags` wraps flag parsing so both come
out as a single `error: ...` line with exit status 2.
"""

import sys
from typing import Sequence

from absl import flags


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl `flags_parser` for `app.run`: parse or exit 2 with one line."""
  try:
    return flags.FLAGS(argv)
  except flags.IllegalFlagValueError as e:
    msg = str(e).splitlines()[0]
  except flags.Error as e:
    msg = str(e).splitlines()[0]
  except (AttributeError, KeyError) as e:
    msg = f"unknown config key: {str(e).splitlines()[0]}"
  except (ValueError, TypeError, SyntaxError, ImportError, OSError) as e:
    msg = f"bad config: {type(e).__name__}: {str(e).splitlines()[0]}"
  print(f"error: {msg}", file=sys.stderr)
  sys.exit(2)


def check(config) -> None:
  """Cross-field checks that the type system cannot express."""
  problems = []
  if config.batch_size % max(1, config.accum_steps):
    problems.append(f"batch_size {config.batch_size} is not divisible by "
                    f"accum_steps {config.accum_steps}")
  if config.nan_policy not in ("stop", "skip"):
    problems.append(f"nan_policy {config.nan_policy!r} is not stop|skip")
  if config.method != "hsu" and not config.input.data_dir:
    problems.append("input.data_dir is empty (set --config.input.data_dir)")
  if config.dtype not in ("float32", "bfloat16", "float16"):
    problems.append(f"dtype {config.dtype!r} is not float32|bfloat16|"
                    "float16")
  if problems:
    raise ValueError("; ".join(problems))
