"""Phrase and cue tables of the rule-based report labeler (`labeler.py`).

Our own tables, written from the CheXpert labeler / NegBio behaviour
described in DATA_FORMATS.md A4: mention phrases per observation (regexes
anchored at a word start, so "atelecta" matches atelectasis and
atelectatic), unmention phrases that cancel an overlapping mention, and cue
patterns for uncertainty and negation with the clause as their scope.
"""

CHEXPERT = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion",
    "Lung Opacity", "Edema", "Consolidation", "Pneumonia", "Atelectasis",
    "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices")

MENTIONS = {
    "Enlarged Cardiomediastinum": [
        r"cardiomediastinal (?:silhouette|contours?|shadow)",
        r"mediastinal (?:contours?|silhouette|widening|width)",
        r"widen\w* (?:of )?(?:the )?(?:upper )?mediastinum",
        r"mediastinum", r"mediastinal", r"cardiomediastinal"],
    "Cardiomegaly": [
        r"cardiomegaly", r"(?:the )?heart size", r"cardiac size",
        r"cardiac (?:silhouette|shadow|contours?)", r"cardiac enlargement",
        r"enlarged heart", r"heart enlargement", r"the heart",
        r"enlarged cardiac (?:silhouette|shadow)"],
    "Lung Lesion": [
        r"mass(?:es)?\b", r"nodul\w*", r"lesions?", r"lump", r"carcinoma",
        r"neoplasm", r"tumou?r", r"cavitary lesion", r"metasta\w*"],
    "Lung Opacity": [
        r"opaci\w*", r"infiltrat\w*", r"air ?space (?:disease|opacit\w*)",
        r"interstitial (?:markings?|pattern|lung disease|opacit\w*)",
        r"reticula\w*", r"reticulonodular", r"densit(?:y|ies)",
        r"ground[- ]glass", r"scar\w*", r"parenchymal disease"],
    "Edema": [
        r"(?:pulmonary |interstitial |alveolar )?edema", r"chf",
        r"(?:congestive )?heart failure",
        r"(?:pulmonary |vascular )?(?:vascular )?congestion",
        r"vascular prominence", r"indistinctness", r"cephalization"],
    "Consolidation": [r"consolidat\w*"],
    "Pneumonia": [r"pneumonia", r"infectio\w*", r"infectious process"],
    "Atelectasis": [r"atelecta\w*", r"collapse"],
    "Pneumothorax": [r"(?:hydro)?pneumothora\w*", r"ptx"],
    "Pleural Effusion": [
        r"(?:pleural )?effusions?", r"pleural fluid", r"hydrothorax"],
    "Pleural Other": [
        r"pleural thickening", r"fibrothorax", r"pleural scar\w*",
        r"pleural plaques?", r"fibrosis"],
    "Fracture": [r"fractur\w*"],
    "Support Devices": [
        r"pacer", r"lines?\b", r"picc", r"tubes?\b", r"valves?\b",
        r"catheters?", r"pacemakers?", r"hardware", r"arthroplast\w*",
        r"markers?", r"icd\b", r"defib\w*", r"devices?", r"drains?\b",
        r"plates?\b", r"screws?", r"cannula", r"apparatus", r"coils?\b",
        r"stents?", r"mediport", r"clips?\b", r"sternotomy wires?"],
}

# A mention overlapping one of these is not a mention of that observation.
UNMENTIONS = {
    "Pleural Effusion": [r"pericardial effusion"],
    "Lung Lesion": [r"calcified nodul\w*", r"massive"],
    "Lung Opacity": [r"pleural scar\w*"],
    "Cardiomegaly": [
        r"(?:over|in|behind|projecting over|overlying|through) the "
        r"(?:left |right |superior |inferior )?(?:heart|cardiac silhouette)"],
    "Enlarged Cardiomediastinum": [r"pneumomediastinum"],
    "Support Devices": [r"midline", r"pleural line", r"septal lines?",
                        r"kerley b lines?", r"lines? of sight"],
    "Pleural Other": [r"pulmonary fibrosis"],
}

# Positive or uncertain mentions of these prevent "No Finding".
OTHER_ABNORMALITIES = [
    r"emphysema", r"blunt\w*", r"calcifi\w*", r"scoliosis", r"hernia",
    r"granuloma", r"pneumomediastinum", r"thickening", r"hyperinflat\w*",
    r"hyperexpan\w*", r"kyphosis", r"bronchiectasis", r"bulla\w*",
    r"pneumoperitoneum", r"free air", r"deformit\w*", r"cyst\w*",
    r"tortuous", r"ectatic",
]

# ChestX-ray14 observations with their own mention lists where CheXpert's
# categories are too coarse (Mass vs Nodule, Emphysema, Fibrosis, Hernia).
CHESTXRAY14 = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass",
    "Nodule", "Pneumonia", "Pneumothorax", "Consolidation", "Edema",
    "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
CHESTXRAY14_MENTIONS = {
    "Atelectasis": MENTIONS["Atelectasis"],
    "Cardiomegaly": MENTIONS["Cardiomegaly"],
    "Effusion": MENTIONS["Pleural Effusion"],
    "Infiltration": [r"infiltrat\w*", r"opaci\w*", r"air ?space disease"],
    "Mass": [r"mass(?:es)?\b", r"tumou?r", r"neoplasm", r"carcinoma"],
    "Nodule": [r"nodul\w*"],
    "Pneumonia": MENTIONS["Pneumonia"],
    "Pneumothorax": MENTIONS["Pneumothorax"],
    "Consolidation": MENTIONS["Consolidation"],
    "Edema": [r"(?:pulmonary |interstitial |alveolar )?edema",
              r"vascular congestion"],
    "Emphysema": [r"emphysema\w*", r"copd", r"hyperinflat\w*"],
    "Fibrosis": [r"fibros\w*", r"fibrotic"],
    "Pleural_Thickening": [r"pleural thickening", r"pleural plaques?"],
    "Hernia": [r"hernia\w*"],
}
CHESTXRAY14_UNMENTIONS = {
    "Effusion": UNMENTIONS["Pleural Effusion"],
    "Mass": [r"massive"],
    "Nodule": [r"calcified nodul\w*"],
    "Cardiomegaly": UNMENTIONS["Cardiomegaly"],
    "Emphysema": [r"subcutaneous emphysema"],
}

# Clause breakers: cues do not reach across them. Cues after a mention also
# stop at commas ("opacity, may reflect atelectasis" keeps the opacity).
PRE_BREAK = (r"\b(?:but|however|although|though|which|whereas|except|"
             r"apart from|otherwise)\b|;|:")
POST_BREAK = PRE_BREAK + r"|,|\bwith\b"

# (a) Uncertainty checked before negation ("cannot exclude X").
PRE_NEG_UNCERTAIN_BEFORE = (
    r"\b(?:cannot|can not|could not|unable to) (?:be )?(?:entirely |"
    r"completely |fully |definitely )?(?:exclude|excluded|rule out|ruled out"
    r"|evaluate|assess)\b|\brule out\b|\br/o\b|\bto exclude\b|\bno new\b|"
    r"\bnot (?:be )?(?:entirely )?excluded\b")
PRE_NEG_UNCERTAIN_AFTER = (
    r"^[^.;]*?\b(?:cannot|can not|could not|not) (?:be )?(?:entirely |"
    r"completely |fully |definitely )?(?:excluded|ruled out|evaluated|"
    r"assessed)\b")
# (b) Negation.
NEG_BEFORE = (
    r"\b(?:no|not|without|negative for|free of|absence of|absent|"
    r"resolution of|resolved|clear of|rather than|never|neither|nor|"
    r"no evidence of|no signs? of|removal of)\b|\b(?:normal|unremarkable)"
    r"(?: \w+)?\s*$")
# "heart and mediastinum are normal": a short conjunct may sit in between.
NEG_AFTER = (
    r"^\s*(?:(?:and|or) (?:the )?[a-z]+(?: [a-z]+)? )?(?:(?:is|are|was|were|appears?|remains?|has|have|had|been|now|"
    r"also|again|otherwise|size|sizes|overall|grossly|essentially|"
    r"within)\s+)*(?:normal|unremarkable|within normal limits|not\b|absent|"
    r"resolved|cleared|removed|negative|stable and normal)")
# (c) Uncertainty after negation.
UNCERTAIN_BEFORE = (
    r"\b(?:possible|possibly|probable|probably|likely|may|might|could|"
    r"suspect\w*|suspicious for|suspicion of|concern\w* for|worrisome for|"
    r"question of|questionable|borderline|equivocal|suggest\w*|versus|vs|"
    r"differential|consider\w*|presumed|presumably|maybe|perhaps|"
    r"cannot|indeterminate|atypical|unclear)\b")
UNCERTAIN_AFTER = (
    r"^\s*(?:(?:is|are|was|were|would|\w+ly)\s+)*(?:may|might|could|"
    r"possible|likely|suspected|versus|vs|questioned|not excluded)\b|^\s*\?")
# "stable / unchanged cardiac silhouette" is uncertain for these two (but
# not the word "cardiomegaly" itself).
STABLE = r"\b(?:stable|unchanged|similar|again|grossly unchanged)\b"
STABLE_LABELS = ("Cardiomegaly", "Enlarged Cardiomediastinum")
