"""Safe by default: no pickle / eval / exec on any load path; no report text
in converter logs."""

import ast
import logging
import pathlib

from data_prep import mimic_cxr

ROOT = pathlib.Path(__file__).resolve().parents[1]
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "marshal", "shelve",
                  "joblib"}


def _unsafe(tree: ast.AST) -> list[tuple[int, str]]:
  """Imports of pickle-like modules, eval/exec, torch.load, allow_pickle."""
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [(node.lineno, a.name) for a in node.names
              if a.name.split(".")[0] in UNSAFE_MODULES]
    elif isinstance(node, ast.ImportFrom) and (node.module or "").split(
        ".")[0] in UNSAFE_MODULES:
      out.append((node.lineno, node.module))
    elif isinstance(node, ast.Call):
      f = node.func
      if isinstance(f, ast.Name) and f.id in ("eval", "exec"):
        out.append((node.lineno, f.id))
      if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and (
          f.value.id == "torch" and f.attr == "load"):
        out.append((node.lineno, "torch.load"))
      for kw in node.keywords:
        if kw.arg == "allow_pickle" and getattr(kw.value, "value", False):
          out.append((node.lineno, "allow_pickle=True"))
  return out


def test_no_pickle_or_eval_in_library_code():
  offenders = []
  for pkg in ("jointcxr", "data_prep", "configs"):
    for path in (ROOT / pkg).rglob("*.py"):
      for line, what in _unsafe(ast.parse(path.read_text())):
        offenders.append(f"{path.relative_to(ROOT)}:{line}: {what}")
  assert not offenders, "\n".join(offenders)


def test_the_checker_catches_what_it_should():
  bad = ast.parse("import pickle\nfrom dill import loads\neval('1')\n"
                  "torch.load(p)\nnp.load(f, allow_pickle=True)\n")
  assert [w for _, w in _unsafe(bad)] == ["pickle", "dill", "eval",
                                          "torch.load", "allow_pickle=True"]


def test_converter_logs_carry_no_report_text(synthetic_root, tmp_path,
                                              caplog):
  caplog.set_level(logging.DEBUG)
  mimic_cxr.convert(mimic_cxr_jpg_dir=str(synthetic_root / "mimic-cxr-jpg"),
                    reports_dir=str(synthetic_root / "mimic-cxr-reports"),
                    output_dir=str(tmp_path / "o"), image_size=32,
                    progress=False)
  text = caplog.text.lower()
  for phrase in ("pleural effusion", "pneumothorax", "cardiomegaly",
                 "consolidation", "atelectasis"):
    assert phrase not in text
