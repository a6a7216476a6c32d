"""MIMIC-style report text that agrees with the rendered findings.

Every sentence carries the CheXpert labels it implies (what a CheXpert-style
labeler reading it would assign), so study labels can be aggregated from the
section the real pipeline labels (impression, else findings, else the last
paragraph) with the labeler's own rules.
"""

import dataclasses
import textwrap
from typing import Mapping, Sequence

import numpy as np

from data_prep.synthetic import findings as fnd

NAN = float("nan")


@dataclasses.dataclass(frozen=True)
class Sentence:
  """A report sentence and the CheXpert labels it implies on its own."""
  text: str
  labels: Mapping[str, float]  # observation -> 1 / 0 / -1


def _choice(rng: np.random.Generator, options: Sequence[str]) -> str:
  return options[int(rng.integers(len(options)))]


def _side(f: fnd.Finding) -> str:
  return {"right": "right", "left": "left", "bilateral": "bilateral",
          None: ""}[f.side]


def _zone(f: fnd.Finding) -> str:
  return {"upper": "upper", "middle": "mid", "lower": "lower",
          None: "lower"}[f.zone]


def _where(f: fnd.Finding) -> str:
  """"the right lower lung" / "both lower lungs" (side and zone words)."""
  if f.side == "bilateral":
    return f"both {_zone(f)} lungs"
  return f"the {_side(f)} {_zone(f)} lung"


def describe(f: fnd.Finding, rng: np.random.Generator) -> Sentence:
  """One sentence stating `f` with its side, zone, severity and certainty."""
  side, zone, sev = _side(f), _zone(f), f.severity
  where = _where(f)
  sev_adj = {"small": "mild", "moderate": "moderate", "large": "severe"}[sev]
  unc = f.certainty == "uncertain"
  label = f.label
  t = f.type
  extra: dict[str, float] = {}
  if t == "pleural_effusion":
    eff = "effusions" if side == "bilateral" else "effusion"
    text = (_choice(rng, [f"Possible small {side} pleural {eff}.",
                          f"A small {side} pleural {eff} cannot be excluded."])
            if unc else _choice(rng, [
                f"{sev.capitalize()} {side} pleural {eff}.",
                f"There is a {sev} {side} pleural {eff}.",
                f"{sev.capitalize()} {side} pleural {eff} with blunting of "
                "the costophrenic angle."]))
  elif t == "pneumothorax":
    text = (f"Possible tiny {side} apical pneumothorax." if unc else
            _choice(rng, [f"{sev.capitalize()} {side} apical pneumothorax.",
                          f"There is a {sev} {side} pneumothorax."]))
  elif t == "consolidation":
    text = (f"Possible consolidation in {where}." if unc else
            _choice(rng, [f"Consolidation in {where}.",
                          f"Dense {side} {zone} lung consolidation."]))
  elif t == "lung_opacity":
    text = (f"Subtle {side} {zone} lung opacity may be due to overlapping "
            "soft tissue." if unc else _choice(rng, [
                f"Patchy opacity in {where}.",
                f"There is an ill-defined opacity in {where}."]))
    if unc:
      label = "Lung Opacity"
  elif t == "pneumonia":
    text = (f"Cannot exclude early pneumonia in {where}."
            if unc else _choice(rng, [
                f"{side.capitalize()} {zone} lung pneumonia.",
                f"Findings consistent with pneumonia in {where}."]))
  elif t == "atelectasis":
    if unc:
      text = f"Streaky {side} basilar opacity, possibly atelectasis."
      extra["Lung Opacity"] = 1.0
    elif side == "bilateral":
      text = _choice(rng, ["Bibasilar atelectasis.",
                           "Bilateral basilar atelectasis."])
    else:
      text = _choice(rng, [f"Linear atelectasis at the {side} lung base.",
                           f"{side.capitalize()} basilar atelectasis."])
  elif t == "edema":
    text = ("Possible mild pulmonary edema." if unc else _choice(rng, [
        f"{sev_adj.capitalize()} pulmonary edema.",
        f"Bilateral perihilar haziness consistent with {sev_adj} pulmonary "
        "edema."]))
  elif t in ("nodule", "mass"):
    size = (f"{int(rng.integers(6, 15))} mm" if t == "nodule" else
            f"{rng.uniform(3.1, 5.5):.1f} cm")
    text = (f"Possible {t} in {where}." if unc else
            _choice(rng, [f"A {size} {t} in {where}.",
                          f"There is a {size} {t} projecting over {where}."]))
  elif t == "cardiomegaly":
    text = ("Borderline cardiomegaly." if unc else _choice(rng, [
        f"{sev_adj.capitalize()} cardiomegaly.",
        f"The heart is {sev_adj}ly enlarged."]))
  elif t == "enlarged_cardiomediastinum":
    text = ("Possible mediastinal widening." if unc else _choice(rng, [
        "The mediastinum is widened.", "Widening of the mediastinum."]))
  elif t == "rib_fracture":
    text = (f"Possible {side} rib fracture." if unc else _choice(rng, [
        f"Acute fracture of a {side} posterior rib.",
        f"Displaced {side} posterior rib fracture."]))
  elif t == "et_tube":
    text = _choice(rng, [
        f"Endotracheal tube terminates {int(rng.integers(3, 7))} cm above "
        "the carina.", "Endotracheal tube in standard position."])
  elif t == "ng_tube":
    text = _choice(rng, ["Nasogastric tube courses below the diaphragm into "
                         "the stomach.", "Enteric tube tip in the stomach."])
  elif t == "central_line":
    text = _choice(rng, ["Right subclavian central venous line ends in the "
                         "SVC.", "Right-sided central line tip in the SVC."])
  elif t == "pacemaker":
    text = "Left-sided pacemaker with lead terminating in the right ventricle."
  elif t == "pleural_thickening":
    text = (f"Possible {side} pleural thickening." if unc else
            f"{side.capitalize()} pleural thickening.")
  else:
    raise ValueError(f"unknown finding type {t!r}")
  text = " ".join(text.split())  # drop double spaces from empty slots
  labels = {label: -1.0 if unc else 1.0, **extra}
  return Sentence(text, labels)


def pertinent_negatives(present: set[str], rng: np.random.Generator,
                        impression: bool) -> list[Sentence]:
  """Negated statements about observations the study does not have."""
  out = []
  pe, ptx = "Pleural Effusion" in present, "Pneumothorax" in present
  if not pe and not ptx:
    out.append(Sentence(_choice(rng, ["No pleural effusion or pneumothorax.",
                                      "There is no pleural effusion or "
                                      "pneumothorax."]),
                        {"Pleural Effusion": 0.0, "Pneumothorax": 0.0}))
  elif not ptx:
    out.append(Sentence("No pneumothorax.", {"Pneumothorax": 0.0}))
  elif not pe:
    out.append(Sentence("No pleural effusion.", {"Pleural Effusion": 0.0}))
  if impression:
    return out[:1] if rng.random() < 0.5 else []
  if "Consolidation" not in present and "Pneumonia" not in present and (
      rng.random() < 0.7):
    out.append(Sentence("No focal consolidation.", {"Consolidation": 0.0}))
  if "Edema" not in present and rng.random() < 0.6:
    out.append(Sentence("No pulmonary edema.", {"Edema": 0.0}))
  if "Cardiomegaly" not in present and rng.random() < 0.7:
    out.append(Sentence(_choice(rng, ["Heart size is normal.",
                                      "The heart size is normal."]),
                        {"Cardiomegaly": 0.0}))
  if "Enlarged Cardiomediastinum" not in present and rng.random() < 0.5:
    out.append(Sentence("The mediastinal contours are normal.",
                        {"Enlarged Cardiomediastinum": 0.0}))
  return out


def aggregate(sentences: Sequence[Sentence],
              labels: Sequence[str]) -> dict[str, float]:
  """Study labels from sentence labels, with the CheXpert labeler's rules.

  Several mentions: {neg, unc} -> unc; any positive -> positive. No Finding
  is 1 iff nothing other than Support Devices is positive or uncertain
  (blank otherwise, never 0 / -1).
  """
  out = {name: NAN for name in labels}
  for s in sentences:
    for k, val in s.labels.items():
      cur = out[k]
      if np.isnan(cur) or val == 1.0 or (val == -1.0 and cur == 0.0):
        out[k] = val
  abnormal = any(v in (1.0, -1.0) for k, v in out.items()
                 if k not in ("No Finding", "Support Devices"))
  out["No Finding"] = NAN if abnormal else 1.0
  return out


def _wrap(sentences: Sequence[str], numbered: bool = False) -> list[str]:
  if numbered and len(sentences) > 1:
    lines = []
    for i, s in enumerate(sentences, 1):
      lines += textwrap.wrap(f"{i}. {s}", 78, subsequent_indent="")
    return lines
  return textwrap.wrap("  ".join(sentences), 78)


def _technique(view_desc: str, rng: np.random.Generator) -> str:
  """The TECHNIQUE line, consistent with the views taken."""
  if "AP" in view_desc.replace("(", " ").replace(")", " ").split():
    return _choice(rng, ["Portable AP chest.", "Chest AP upright.",
                         "Single frontal view of the chest."])
  if "LAT" in view_desc:
    return _choice(rng, ["Chest PA and lateral.",
                         "PA and lateral views of the chest."])
  return "Chest PA."


def format_report(
    findings: Sequence[str], impression: Sequence[str], *, style: str,
    view_desc: str, rng: np.random.Generator,
) -> str:
  """MIMIC-CXR report text: centred title, one leading space per line.

  Args:
    findings: FINDINGS sentences.
    impression: IMPRESSION sentences.
    style: "standard", "impression_only", "findings_only", "combined"
      (FINDINGS AND IMPRESSION:), "view_header" (free-text under a view
      header such as "PA AND LATERAL CHEST:"), "last_paragraph" (an unlabeled
      final paragraph), "no_text" (no findings or impression at all),
      "addendum" (standard, with an addendum on top).
    view_desc: e.g. "CHEST (PA AND LAT)".
    rng: randomness for the boilerplate.
  """
  reason = _choice(rng, ["cough", "shortness of breath", "fever", "chest pain",
                         "hypoxia", "line placement", "s/p intubation"])
  question = _choice(rng, ["eval for pneumonia", "eval for effusion",
                           "interval change?", "eval for acute process",
                           "assess tube position"])
  sex = _choice(rng, ["man", "woman"])
  comparison = "Chest radiograph from ___"
  title = f" {'FINAL REPORT':^78}".rstrip()
  body: list[list[str]] = [
      [f"EXAMINATION:  {view_desc}"],
      [f"INDICATION:  ___ year old {sex} with {reason}  // {question}"],
      [f"TECHNIQUE:  {_technique(view_desc, rng)}"],
      [f"COMPARISON:  {_choice(rng, ['___', 'None.', comparison])}"],
  ]
  # Single-section styles carry the FINDINGS sentences only (the impression
  # would repeat them).
  if style in ("standard", "addendum"):
    body += [["FINDINGS: "], _wrap(findings), ["IMPRESSION: "],
             _wrap(impression, numbered=rng.random() < 0.3)]
  elif style == "impression_only":
    body += [["IMPRESSION: "], _wrap(findings)]
  elif style == "findings_only":
    body += [["FINDINGS: "], _wrap(findings)]
  elif style == "combined":
    body += [["FINDINGS AND IMPRESSION: "], _wrap(findings)]
  elif style == "view_header":
    body[:] = body[:2] + [["PA AND LATERAL CHEST:"], _wrap(findings)]
  elif style == "last_paragraph":
    body += [_wrap(findings)]
  elif style == "no_text":
    body += [["NOTIFICATION:  The study was reviewed with Dr. ___ at ___."]]
  else:
    raise ValueError(f"unknown report style {style!r}")
  lines = [title]
  for block in body:
    lines.append(" ")
    for ln in block:
      lines += [" " + part for part in (textwrap.wrap(ln, 78) or [ln])]
  text = "\n".join(lines) + "\n"
  if style == "addendum":
    # Addenda sit on top, separated from the original by a line of "_".
    text = (title + "\n ADDENDUM:\n \n The above findings were communicated"
            " to ___ by telephone at ___.\n " + "_" * 78 + "\n" + text)
  return text


def labeled_section(style: str, findings: Sequence[Sentence],
                    impression: Sequence[Sentence]) -> list[Sentence] | None:
  """The sentences the labeler reads (None: no usable text, no label row)."""
  if style in ("standard", "addendum"):
    return list(impression)
  if style == "no_text":
    return None
  return list(findings)
