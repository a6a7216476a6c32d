"""Phrase and cue tables of the rule-based report labeler (`labeler.py`).

Our own tables, written from the CheXpert labeler / NegBio behaviour
described in DATA_FORMATS.md A4: mention phrases per observation (regexes
anchored at word boundaries, so "atelecta\\w*" matches atelectasis and
atelectatic) and unmention phrases that cancel an overlapping mention. The
negation and uncertainty triggers are in `negex_cues.py`.
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

# ChestX-ray14 observations (Wang et al. 2017), each with its own mentions:
# the name of the finding, not the anatomy ("heart size" is a CheXpert
# mention of Cardiomegaly, so that "heart size normal" is a negative; here
# only an enlarged heart is a mention). A pattern with a group `m` (a word
# that must follow an anatomy phrase in the same clause) is classified at
# that group, so "the heart is not enlarged" is negated by its "not".
CHESTXRAY14 = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass",
    "Nodule", "Pneumonia", "Pneumothorax", "Consolidation", "Edema",
    "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
_HEART = (r"(?:heart|cardiac (?:silhouette|shadow|contours?|size|"
          r"diameter)|heart (?:size|silhouette|shadow))")
_LARGE = r"(?P<m>enlarg\w*|large|increased in size|increase in size)"
CHESTXRAY14_MENTIONS = {
    "Atelectasis": [r"atelecta\w*", r"collapsed?"],
    "Cardiomegaly": [
        r"cardiomegaly", r"cardiac enlargement", r"heart enlargement",
        r"cardiac hypertrophy",
        r"(?:enlarged|large) (?:\w+ )?" + _HEART,
        r"enlargement of (?:the )?" + _HEART,
        _HEART + r"(?: is| are| appears?| remains?)?(?: \w+){0,3} " + _LARGE,
        r"increase in (?:the )?size of (?:the )?" + _HEART,
        r"increased? in (?:the )?(?:heart|cardiac) size",
        r"borderline (?P<m>" + _HEART + ")",
        r"(?P<m>" + _HEART + r")(?: is)? borderline"],
    "Effusion": [
        r"(?:pleural )?effusions?", r"pleural fluid", r"hydrothorax",
        r"fluid (?:in|within|along) the (?:\w+ )?(?:fissures?|pleural "
        r"space)"],
    "Infiltration": [r"infiltrat\w*"],
    "Mass": [r"mass(?:es)?", r"mass-?like", r"tumou?rs?"],
    "Nodule": [r"nodules?", r"micronodul\w*"],
    "Pneumonia": [r"(?:broncho)?pneumonia", r"pneumonitis"],
    "Pneumothorax": [r"(?:hydro)?pneumothora\w*", r"ptx"],
    "Consolidation": [r"consolidat\w*"],
    "Edema": [r"(?:pulmonary |interstitial |alveolar )?edema"],
    "Emphysema": [r"emphysema\w*"],
    "Fibrosis": [r"fibros[ie]s", r"fibrotic"],
    "Pleural_Thickening": [
        r"pleural(?:-\w+| (?!effusion|fluid|versus|vs|or )\w+)? thickening",
        r"thickening of (?:the )?pleura",
        r"thickened pleura", r"pleural plaques?", r"apical (?:pleural )?cap"
        r"(?:ping|s)?", r"(?:fissural|fissure) thickening",
        r"thickening (?:of|in|along) the (?:\w+ ){0,2}fissures?",
        r"(?:effusion|fluid) (?:versus|vs|or) (?:pleural )?(?P<m>thickening)"],
    "Hernia": [r"hernia\w*"],
}
CHESTXRAY14_UNMENTIONS = {
    "Effusion": [r"pericardial effusions?", r"joint effusions?"],
    "Mass": [r"massive"],
    "Emphysema": [r"subcutaneous emphysema", r"soft tissue emphysema"],
    "Edema": [r"soft tissue edema", r"subcutaneous edema"],
    "Atelectasis": [r"collapse of (?:the )?(?:\w+ )?vertebra\w*",
                    r"vertebral (?:body )?collapse"],
}

# "stable / unchanged cardiac silhouette" is uncertain for these two (but
# not the word "cardiomegaly" itself).
STABLE = r"\b(?:stable|unchanged|similar|again|grossly unchanged)\b"
STABLE_LABELS = ("Cardiomegaly", "Enlarged Cardiomediastinum")
