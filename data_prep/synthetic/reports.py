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


# Phrase banks: radiologists say the same thing many ways, so a sentence
# must not identify its template (a model would match template ids, not
# findings). Every variant keeps the finding's side, zone, severity and
# certainty, so the labels stay exact.
_SEVERITY = {"small": ("small", "small", "trace", "minimal", "tiny"),
             "moderate": ("moderate", "moderate", "moderate-sized",
                          "medium-sized"),
             "large": ("large", "large", "extensive", "sizable")}
_DEGREE = {"small": ("mild", "mild", "slight", "minimal"),
           "moderate": ("moderate", "moderate", "moderately severe"),
           "large": ("severe", "marked", "pronounced")}
_ZONE_WORDS = {
    "upper": ("upper lung", "upper lobe", "upper zone", "apical region"),
    "mid": ("mid lung", "mid lung zone", "perihilar region", "mid zone"),
    "lower": ("lower lung", "lower lobe", "lung base", "lower zone",
              "basilar region")}
_HEDGES = ("Possible {x}.", "Probable {x}.", "Questionable {x}.",
           "Cannot exclude {x}.", "Findings may represent {x}.",
           "Suggestion of {x}.",
           "Findings could reflect {x}.", "Likely {x}.")
_COMPARISONS = ("new since the prior study", "unchanged from prior",
                "increased compared to the prior exam",
                "decreased since ___", "similar to the prior radiograph",
                "not significantly changed", "new from ___")


def _where(f: fnd.Finding, rng: np.random.Generator) -> str:
  """Side and zone words: "the right lower lobe", "the lung bases"..."""
  words = _choice(rng, _ZONE_WORDS[_zone(f)])
  if f.side == "bilateral":
    plural = words.replace("lobe", "lobes").replace("base", "bases").replace(
        "zone", "zones").replace("region", "regions").replace("lung ", "")
    plural = plural if plural != words else words + "s"
    return _choice(rng, [f"both {plural}", f"the {plural} bilaterally",
                         f"bilateral {plural}"])
  return f"the {_side(f)} {words}"


def _hedge(x: str, rng: np.random.Generator) -> str:
  """An uncertain statement of the noun phrase `x`."""
  form = _choice(rng, _HEDGES)
  return form.replace("{X}", x[:1].upper() + x[1:]).replace("{x}", x)


def _compare(text: str, rng: np.random.Generator, p: float = 0.3) -> str:
  """Appends a comparison to prior imaging to some positive sentences."""
  if rng.random() >= p:
    return text
  return text[:-1] + ", " + _choice(rng, _COMPARISONS) + "."


def _cap(x: str) -> str:
  return x[:1].upper() + x[1:]


def describe(f: fnd.Finding, rng: np.random.Generator) -> Sentence:
  """One sentence stating `f` with its side, zone, severity and certainty."""
  side, sev = _side(f), f.severity
  where = _where(f, rng)
  size = _choice(rng, _SEVERITY[sev])
  degree = _choice(rng, _DEGREE[sev])
  unc = f.certainty == "uncertain"
  label = f.label
  t = f.type
  extra: dict[str, float] = {}
  small = _choice(rng, _SEVERITY["small"])
  if t == "pleural_effusion":
    eff = "effusions" if side == "bilateral" else "effusion"
    if side == "bilateral" and rng.random() < 0.5:
      side_eff = _choice(rng, [f"bilateral pleural {eff}",
                               f"pleural {eff} bilaterally"])
    else:
      side_eff = f"{side} pleural {eff}"
    text = (_hedge(f"{small} {side_eff}", rng) if unc else _compare(
        _choice(rng, [
            f"{_cap(size)} {side_eff}.",
            f"There is a {size} {side_eff}.",
            f"{_cap(size)} {side_eff} with blunting of the costophrenic "
            "angle.",
            f"{_cap(side_eff)}, {size} in size.",
            f"A {size} {side_eff} is present.",
            f"Layering {size} {side_eff}.",
            f"{_cap(size)} {side_eff} with adjacent basilar opacity."]),
        rng))
    if "adjacent basilar opacity" in text:
      extra["Lung Opacity"] = 1.0
  elif t == "pneumothorax":
    text = (_hedge(f"{small} {side} apical pneumothorax", rng) if unc else
            _compare(_choice(rng, [
                f"{_cap(size)} {side} apical pneumothorax.",
                f"There is a {size} {side} pneumothorax.",
                f"{_cap(side)} pneumothorax, {size} in size.",
                f"A {size} {side} pneumothorax is seen along the apex.",
                f"{_cap(size)} {side} apicolateral pneumothorax."]), rng))
  elif t == "consolidation":
    text = (_hedge(f"consolidation in {where}", rng) if unc else _compare(
        _choice(rng, [f"Consolidation in {where}.",
                      f"Dense consolidation in {where}.",
                      f"There is consolidation of {where}.",
                      f"Focal consolidation is seen in {where}.",
                      f"{_cap(where)} demonstrates consolidation."]), rng))
  elif t == "lung_opacity":
    text = (_choice(rng, [
        f"Subtle {side} {_zone(f)} lung opacity may be due to overlapping "
        "soft tissue.",
        _hedge(f"a faint opacity in {where}", rng)]) if unc else _compare(
            _choice(rng, [f"Patchy opacity in {where}.",
                          f"There is an ill-defined opacity in {where}.",
                          f"Hazy opacity projects over {where}.",
                          f"Increased opacity in {where}.",
                          f"{_cap(where)} shows a patchy opacity."]), rng))
  elif t == "pneumonia":
    text = (_choice(rng, [f"Cannot exclude early pneumonia in {where}.",
                          _hedge(f"pneumonia in {where}", rng)])
            if unc else _compare(_choice(rng, [
                f"Pneumonia in {where}.",
                f"Findings consistent with pneumonia in {where}.",
                f"Opacity in {where} compatible with pneumonia.",
                f"Pneumonia involving {where}."]), rng))
    if "Opacity" in text:
      extra["Lung Opacity"] = 1.0
  elif t == "atelectasis":
    if unc:
      text = _choice(rng, [
          f"Streaky {side} basilar opacity, possibly atelectasis.",
          f"{_cap(side)} basilar opacity, which may reflect atelectasis."])
      extra["Lung Opacity"] = 1.0
    elif side == "bilateral":
      text = _compare(_choice(rng, [
          "Bibasilar atelectasis.", "Bilateral basilar atelectasis.",
          f"{_cap(degree)} bibasilar atelectasis.",
          "Atelectasis at both lung bases.",
          "Discoid atelectasis at the lung bases."]), rng)
    else:
      text = _compare(_choice(rng, [
          f"Linear atelectasis at the {side} lung base.",
          f"{_cap(side)} basilar atelectasis.",
          f"{_cap(degree)} {side} basilar atelectasis.",
          f"Discoid atelectasis at the {side} base.",
          f"Subsegmental atelectasis in the {side} lower lobe."]), rng)
  elif t == "edema":
    text = (_hedge(f"{_choice(rng, _DEGREE['small'])} pulmonary edema", rng)
            if unc else _compare(_choice(rng, [
                f"{_cap(degree)} pulmonary edema.",
                "Bilateral perihilar haziness consistent with "
                f"{degree} pulmonary edema.",
                f"{_cap(degree)} interstitial pulmonary edema.",
                f"There is {degree} pulmonary edema.",
                "Vascular congestion with "
                f"{degree} pulmonary edema."]), rng))
  elif t in ("nodule", "mass"):
    size_txt = (f"{int(rng.integers(6, 15))} mm" if t == "nodule" else
                f"{rng.uniform(3.1, 5.5):.1f} cm")
    text = (_hedge(f"{t} in {where}", rng) if unc else _compare(_choice(rng, [
        f"A {size_txt} {t} in {where}.",
        f"There is a {size_txt} {t} projecting over {where}.",
        f"{_cap(size_txt)} {t} in {where}.",
        f"A rounded {t} measuring {size_txt} is seen in {where}.",
        f"{_cap(where)} contains a {size_txt} {t}."]), rng))
  elif t == "cardiomegaly":
    text = (_choice(rng, ["Borderline cardiomegaly.",
                          _hedge("mild cardiomegaly", rng)]) if unc else
            _compare(_choice(rng, [
                f"{_cap(degree)} cardiomegaly.",
                f"The heart is {degree}ly enlarged."
                if degree in ("mild", "moderate", "severe", "marked") else
                f"{_cap(degree)} enlargement of the cardiac silhouette.",
                f"{_cap(degree)} enlargement of the cardiac silhouette.",
                f"The cardiac silhouette is {degree}ly enlarged."
                if degree in ("mild", "moderate", "severe", "marked") else
                f"{_cap(degree)} cardiomegaly.",
                f"Cardiomegaly, {degree}."]), rng))
  elif t == "enlarged_cardiomediastinum":
    text = (_hedge("mediastinal widening", rng) if unc else _compare(
        _choice(rng, ["The mediastinum is widened.",
                      "Widening of the mediastinum.",
                      "The superior mediastinum appears widened.",
                      "Mediastinal widening is noted.",
                      "Widened upper mediastinal contour."]), rng))
  elif t == "rib_fracture":
    text = (_hedge(f"{side} rib fracture", rng) if unc else _compare(
        _choice(rng, [f"Acute fracture of a {side} posterior rib.",
                      f"Displaced {side} posterior rib fracture.",
                      f"Fracture of a {side} posterior rib.",
                      f"There is a {side} posterior rib fracture."]), rng))
  elif t == "et_tube":
    text = _choice(rng, [
        f"Endotracheal tube terminates {int(rng.integers(3, 7))} cm above "
        "the carina.", "Endotracheal tube in standard position.",
        f"ET tube tip is {int(rng.integers(3, 7))} cm above the carina.",
        "The endotracheal tube is appropriately positioned."])
  elif t == "ng_tube":
    text = _choice(rng, ["Nasogastric tube courses below the diaphragm into "
                         "the stomach.", "Enteric tube tip in the stomach.",
                         "NG tube tip projects over the stomach.",
                         "A feeding tube terminates in the stomach."])
  elif t == "central_line":
    text = _choice(rng, ["Right subclavian central venous line ends in the "
                         "SVC.", "Right-sided central line tip in the SVC.",
                         "Right subclavian catheter tip in the low SVC.",
                         "A right central venous catheter terminates in the "
                         "superior vena cava."])
  elif t == "pacemaker":
    text = _choice(rng, [
        "Left-sided pacemaker with lead terminating in the right ventricle.",
        "Left chest wall pacemaker with a single lead in the right "
        "ventricle.", "A left-sided pacing device is in place."])
  elif t == "pleural_thickening":
    text = (_hedge(f"{side} pleural thickening", rng) if unc else _compare(
        _choice(rng, [f"{_cap(side)} pleural thickening.",
                      f"Mild {side} pleural thickening.",
                      f"There is {side} apical pleural thickening.",
                      f"{_cap(side)} pleural thickening is noted."]), rng))
  else:
    raise ValueError(f"unknown finding type {t!r}")
  text = " ".join(text.split())  # drop double spaces from empty slots
  labels = {label: -1.0 if unc else 1.0, **extra}
  return Sentence(text, labels)


_NEGATIVES = {
    "pe_ptx": ("No pleural effusion or pneumothorax.",
               "There is no pleural effusion or pneumothorax.",
               "No pneumothorax or pleural effusion is seen.",
               "No evidence of pleural effusion or pneumothorax.",
               "There is no pneumothorax or effusion."),
    "ptx": ("No pneumothorax.", "There is no pneumothorax.",
            "No pneumothorax is identified."),
    "pe": ("No pleural effusion.", "There is no pleural effusion.",
           "No effusion is seen."),
    "consolidation": ("No focal consolidation.",
                      "No focal airspace consolidation.",
                      "There is no consolidation.",
                      "No consolidation is identified."),
    "edema": ("No pulmonary edema.", "There is no pulmonary edema.",
              "No evidence of pulmonary edema."),
    "cardiomegaly": ("Heart size is normal.", "The heart size is normal.",
                     "The cardiac silhouette is normal in size.",
                     "Normal heart size.", "The heart is not enlarged."),
    "mediastinum": ("The mediastinal contours are normal.",
                    "Mediastinal contours are unremarkable.",
                    "The mediastinum is not widened."),
}
# Sentences that carry no label at all (realistic filler: they are in real
# reports, and they make the text harder to match by length or template).
_FILLER = ("The osseous structures are unremarkable.",
           "Degenerative changes of the thoracic spine.",
           "No acute osseous abnormality.",
           "The visualized upper abdomen is unremarkable.",
           "Overlying EKG leads.",
           "Compared to the prior study, there is no other significant "
           "change.", "No prior studies are available for comparison.",
           "The hila are unremarkable.",
           "Lung volumes are within normal limits.")


def pertinent_negatives(present: set[str], rng: np.random.Generator,
                        impression: bool) -> list[Sentence]:
  """Negated statements about observations the study does not have
  (and, in findings, a few unlabeled sentences)."""
  out = []
  pe, ptx = "Pleural Effusion" in present, "Pneumothorax" in present
  if not pe and not ptx:
    out.append(Sentence(_choice(rng, _NEGATIVES["pe_ptx"]),
                        {"Pleural Effusion": 0.0, "Pneumothorax": 0.0}))
  elif not ptx:
    out.append(Sentence(_choice(rng, _NEGATIVES["ptx"]),
                        {"Pneumothorax": 0.0}))
  elif not pe:
    out.append(Sentence(_choice(rng, _NEGATIVES["pe"]),
                        {"Pleural Effusion": 0.0}))
  if impression:
    return out[:1] if rng.random() < 0.5 else []
  if "Consolidation" not in present and "Pneumonia" not in present and (
      rng.random() < 0.7):
    out.append(Sentence(_choice(rng, _NEGATIVES["consolidation"]),
                        {"Consolidation": 0.0}))
  if "Edema" not in present and rng.random() < 0.6:
    out.append(Sentence(_choice(rng, _NEGATIVES["edema"]), {"Edema": 0.0}))
  if "Cardiomegaly" not in present and rng.random() < 0.7:
    out.append(Sentence(_choice(rng, _NEGATIVES["cardiomegaly"]),
                        {"Cardiomegaly": 0.0}))
  if "Enlarged Cardiomediastinum" not in present and rng.random() < 0.5:
    out.append(Sentence(_choice(rng, _NEGATIVES["mediastinum"]),
                        {"Enlarged Cardiomediastinum": 0.0}))
  for _ in range(int(rng.integers(0, 3))):
    out.append(Sentence(_choice(rng, _FILLER), {}))
  # Radiologists do not list negatives in a fixed order.
  return [out[i] for i in rng.permutation(len(out))]


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
  # Never break at hyphens: MIMIC reports keep "right-sided" on one line,
  # and a break there would change the words a sentence splitter sees.
  if numbered and len(sentences) > 1:
    lines = []
    for i, s in enumerate(sentences, 1):
      lines += textwrap.wrap(f"{i}. {s}", 78, break_on_hyphens=False)
    return lines
  return textwrap.wrap("  ".join(sentences), 78, break_on_hyphens=False)


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
      parts = textwrap.wrap(ln, 78, break_on_hyphens=False) or [ln]
      lines += [" " + part for part in parts]
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
