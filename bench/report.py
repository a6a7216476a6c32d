"""Writing one benchmark's results: `<stem>.json` and `<stem>.md`."""

import json
import os
from typing import Any


def write_pair(output_dir: str, stem: str, result: dict[str, Any],
               markdown: str) -> tuple[str, str]:
  """Writes `<stem>.json` and `<stem>.md` atomically; returns their paths.

  Each file goes through a `.tmp` sibling and `os.replace`, so an
  interrupted benchmark never leaves a half-written result behind.
  """
  os.makedirs(output_dir, exist_ok=True)
  paths = []
  for name, text in ((f"{stem}.json", json.dumps(result, indent=1)),
                     (f"{stem}.md", markdown)):
    path = os.path.join(output_dir, name)
    with open(path + ".tmp", "w") as f:
      f.write(text + "\n")
    os.replace(path + ".tmp", path)
    paths.append(path)
  return paths[0], paths[1]
