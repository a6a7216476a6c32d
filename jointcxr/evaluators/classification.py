"""Classification from frozen features: linear probe and zero-shot prompts.

Linear probe (JoImTeRNet §2.5 / LoVT's online probes): one logistic
regression per CheXpert label on frozen pre-projection image features,
the regularisation strength chosen on the validation split, AUROC per
label on the test split and the mean over the 13 labels other than "No
Finding" (plus the prevalence-weighted mean). Labels: positive = 1,
uncertain -> `uncertain` policy ("ones" by default, U-ones), negative and
missing = 0. Zero-shot: each label's score is cos(image, positive prompt) -
cos(image, negative prompt) (CheXzero style), scored by AUROC.
"""

from typing import Sequence

import numpy as np
from sklearn import linear_model
from sklearn import metrics as skm
from sklearn import preprocessing

from jointcxr.data.features import CHEXPERT_LABELS
from jointcxr.data.features import NO_FINDING_INDEX
from jointcxr.evaluators import retrieval_metrics as rm


def binary_labels(labels: np.ndarray, present: np.ndarray,
                  uncertain: str = "ones") -> np.ndarray:
  """{1, 0, -1, missing} -> {0, 1} with the chosen uncertainty policy."""
  y = np.where(present, labels, 0.0)
  if uncertain == "ones":
    y = np.where(y == -1, 1.0, y)
  elif uncertain == "zeros":
    y = np.where(y == -1, 0.0, y)
  else:
    raise ValueError(f"uncertain policy {uncertain!r}: expected ones|zeros")
  return (y == 1).astype(np.int32)


def auroc_table(y: np.ndarray, scores: np.ndarray, prefix: str) -> dict:
  """Per-label AUROC (labels with both classes only) and the means."""
  out, aucs, weights = {}, [], []
  for j, name in enumerate(CHEXPERT_LABELS):
    if len(np.unique(y[:, j])) < 2:
      continue
    auc = float(skm.roc_auc_score(y[:, j], scores[:, j]))
    out[f"{prefix}/auroc/{name}"] = auc
    if j != NO_FINDING_INDEX:
      aucs.append(auc)
      weights.append(y[:, j].mean())
  if aucs:
    out[f"{prefix}/auroc_mean"] = float(np.mean(aucs))
    out[f"{prefix}/auroc_weighted"] = float(np.average(aucs, weights=weights))
    out[f"{prefix}/num_labels"] = float(len(aucs))
  return out


def linear_probe(train_x, train_y, val_x, val_y, test_x, test_y, *,
                 cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
                 seed: int = 0) -> dict:
  """Fits per-label logistic regressions; returns the test AUROC table."""
  scaler = preprocessing.StandardScaler().fit(train_x)
  tx, vx, sx = (scaler.transform(a) for a in (train_x, val_x, test_x))
  scores = np.zeros((len(sx), train_y.shape[1]))
  chosen = {}
  for j in range(train_y.shape[1]):
    if len(np.unique(train_y[:, j])) < 2:
      scores[:, j] = train_y[:, j].mean()
      continue
    best, best_c = -1.0, cs[0]
    for c in cs:
      clf = linear_model.LogisticRegression(C=c, max_iter=2000,
                                            random_state=seed)
      clf.fit(tx, train_y[:, j])
      if len(np.unique(val_y[:, j])) < 2:
        best_c = c
        break
      auc = skm.roc_auc_score(val_y[:, j], clf.decision_function(vx))
      if auc > best:
        best, best_c = auc, c
    clf = linear_model.LogisticRegression(C=best_c, max_iter=2000,
                                          random_state=seed).fit(
                                              tx, train_y[:, j])
    scores[:, j] = clf.decision_function(sx)
    chosen[CHEXPERT_LABELS[j]] = best_c
  out = auroc_table(test_y, scores, "probe")
  return out


PROMPTS = {
    "Atelectasis": ("Bibasilar atelectasis.", "No atelectasis."),
    "Cardiomegaly": ("Moderate cardiomegaly.", "Heart size is normal."),
    "Consolidation": ("Focal consolidation.", "No focal consolidation."),
    "Edema": ("Mild pulmonary edema.", "No pulmonary edema."),
    "Enlarged Cardiomediastinum": ("The mediastinum is widened.",
                                   "The mediastinal contours are normal."),
    "Fracture": ("Acute rib fracture.", "No fracture."),
    "Lung Lesion": ("A nodule in the lung.", "No nodule or mass."),
    "Lung Opacity": ("Patchy opacity in the lung.", "The lungs are clear."),
    "No Finding": ("No acute cardiopulmonary process.",
                   "Acute cardiopulmonary process."),
    "Pleural Effusion": ("Moderate pleural effusion.",
                         "No pleural effusion."),
    "Pleural Other": ("Pleural thickening.", "No pleural thickening."),
    "Pneumonia": ("Findings consistent with pneumonia.", "No pneumonia."),
    "Pneumothorax": ("There is a pneumothorax.", "No pneumothorax."),
    "Support Devices": ("Endotracheal tube in standard position.",
                        "No support devices."),
}


def zero_shot(img_emb: np.ndarray, encode_prompts, y: np.ndarray) -> dict:
  """AUROC of cos(img, positive prompt) - cos(img, negative prompt).

  Args:
    img_emb: [N, D] global image embeddings.
    encode_prompts: list of sentences -> [M, D] global text embeddings.
    y: [N, 14] binary labels.
  """
  pos = encode_prompts([PROMPTS[n][0] for n in CHEXPERT_LABELS])
  neg = encode_prompts([PROMPTS[n][1] for n in CHEXPERT_LABELS])
  zi = np.asarray(rm.l2_normalize(img_emb))
  scores = zi @ np.asarray(rm.l2_normalize(pos)).T - zi @ np.asarray(
      rm.l2_normalize(neg)).T
  return auroc_table(y, scores, "zeroshot")
