"""Trigger tables of the NegEx-style certainty classifier (`negex.py`).

Our own lists, written from the NegEx / ConText trigger classes and common
chest radiograph report phrasing. Every entry is a regex on a lower-cased
sentence; `negex.alternation` anchors each at word boundaries. The scope
rules live in `negex.py`; only phrases are here.
"""

# Phrases that contain a trigger word but are not triggers; blanked first.
PSEUDO = [
    r"(?:no|without) (?:(?:significant|substantial|appreciable|definite|"
    r"interval|major|radiographic|gross|marked|real|acute|other|"
    r"appreciable) ){0,3}(?:change|increase|decrease|difference)",
    r"not (?:significantly |substantially )?(?:changed|increased|decreased)",
    r"not only", r"gram[- ]negative", r"not necessarily", r"unchanged",
    r"no longer (?=[a-z]+ (?:seen|visible|present|evident|identified))",
    r"no other", r"no further",
]

# Clause boundaries: a trigger never reaches across one.
TERMINATORS = [
    r"but", r"however", r"although", r"though", r"whereas", r"except",
    r"apart from", r"aside from", r"otherwise", r"nevertheless", r"yet",
    r"which", r"who", r"that (?:is|are|was|were|may|might|could|has|have)",
    r"there (?:is|are|was|were|has|have)", r"[;:()]", r"given",
    r"in the setting of", r"allowing for", r"accounting for", r"considering",
]
# Only after a mention: "cardiomegaly with normal vascularity".
POST_TERMINATORS = [r"with", r"without", r"and (?:no|a|an)"]

# Finite verbs: a preceding negation stops at one ("no effusion is seen and
# the heart is enlarged"); VERBS also end a list item.
FINITE_VERBS = [r"is", r"are", r"was", r"were", r"has", r"have", r"had"]
VERBS = FINITE_VERBS + [
    r"seen", r"noted", r"identified", r"demonstrated", r"present",
    r"appears?", r"remains?", r"shows?", r"measures?", r"persists?",
    r"represents?", r"reflects?", r"suggests?", r"involves?", r"extends?",
]
# A list item without a conjunction in the list must not start like a new
# finding ("no pneumothorax, mild cardiomegaly").
ITEM_MODIFIERS = [
    r"mild(?:ly)?", r"moderate(?:ly)?", r"severe(?:ly)?", r"small",
    r"large", r"minimal", r"trace", r"stable", r"persistent", r"new",
    r"increased", r"increasing", r"decreased", r"improved", r"unchanged",
    r"slight(?:ly)?", r"marked(?:ly)?", r"extensive", r"chronic", r"old",
    r"healed", r"prominent", r"borderline", r"enlarged", r"there", r"a",
    r"an", r"the", r"but", r"with",
]

# Uncertainty checked before negation: these contain a negation word.
PRE_POSSIBLE_NEG = [
    r"(?:cannot|can not|could not|can't|unable to|not able to|difficult to|"
    r"hard to) (?:be )?(?:entirely |completely |fully |definitely |"
    r"definitively |totally |reliably |confidently )?(?:exclude[ds]?|rule "
    r"out|ruled out|evaluate[ds]?|assess(?:ed)?|distinguish|differentiate)",
    r"rule out", r"r/o", r"exclude", r"no new",
    r"not (?:be )?(?:entirely |completely |definitely )?(?:excluded|"
    r"ruled out)",
    r"not (?:well |definitely |clearly )?(?:assessed|evaluated)",
]
POST_POSSIBLE_NEG = [
    r"(?:cannot|can not|could not|can't) (?:be )?(?:entirely |completely |"
    r"fully |definitely |definitively |totally )?(?:excluded|ruled out|"
    r"evaluated|assessed)",
    r"(?:is|are|was|were)? ?not (?:be )?(?:entirely |completely |"
    r"definitely )?(?:excluded|ruled out)",
]

# Negation before the mention ("no", "without", "free of").
PRE_NEGATION = [
    r"no", r"not", r"without", r"negative for", r"free of", r"absence of",
    r"absent", r"resolution of", r"resolved", r"clear of", r"rather than",
    r"never", r"neither", r"nor", r"removal of", r"no (?:radiographic |"
    r"definite |convincing |other )?(?:evidence|signs?|findings?) of",
    r"(?:normal|unremarkable)(?=\s*(?:[a-z]+\s*)?$)", r"cleared of",
    r"interval resolution of", r"to suggest", r"to indicate",
]
# Negation after the mention: an optional copula, then the negating
# predicate ("heart size is within normal limits", "have cleared").
_COPULA = (r"(?:(?:is|are|was|were|appears?|appear to be|remains?|has been|"
           r"have been|has|have|looks?|seems?|now|also|again|otherwise|"
           r"still|overall|grossly|essentially|stable and|size|in size)\s+)*")
_NORMAL = (r"(?:normal(?! (?:for|except))|unremarkable|negative|absent|"
           r"resolved|cleared|removed|"
           r"within (?:the )?(?:normal limits|limits of normal|normal range)|"
           r"(?:at |near |in )?(?:the )?(?:upper|top|high)[- ](?:limits? "
           r"(?:of )?|range of )?normal|"
           r"not (?:\w+ly |well[- ])?(?:seen|visualized|identified|present|"
           r"evident|appreciated|demonstrated|visible|detected|enlarged|"
           r"large|increased|widened|dilated|displaced|found|noted)|"
           r"no longer (?:seen|visible|present|evident|identified)|"
           r"of normal size|normal in size)")
POST_NEGATION = [_COPULA + _NORMAL]

# A finding raised only as a possibility.
PRE_POSSIBLE = [
    r"possible", r"possibly", r"may", r"might", r"could", r"question of",
    r"questionable", r"questioned", r"question", r"equivocal", r"perhaps",
    r"maybe", r"(?:differential|diagnostic)(?: diagnosis| considerations?)?"
    r"(?: includes?| including| is)?", r"consider(?:ed|ations?)?",
    r"cannot", r"uncertain",
    r"unclear", r"indeterminate", r"concern(?:ing)? for", r"worrisome for",
    r"suspicious for", r"suspicion (?:of|for)", r"suggest(?:s|ed|ing)?",
    r"suggestive of", r"suggestion of", r"to be (?:excluded|considered)",
    r"if", r"whether", r"(?:evaluat\w*|assess\w*|correlat\w*|look)"
    r"(?: clinically)? for",
]
POST_POSSIBLE = [
    r"(?:(?:is|are|was|were|would|\w+ly)\s+)*(?:may|might|could)(?! (?:"
    r"\w+ ){0,2}(?:represent|reflect|indicate|relate|be (?:due|secondary|"
    r"related|from|caused|explained|accentuated|exaggerated)))",
    r"(?:is|are)? ?(?:possible|questioned|questionable|suspected|"
    r"considered)", r"\?",
    r"(?:is|are) (?:also )?(?:a |another )?(?:possibility|consideration)",
]
# A condition that hedges its whole sentence, wherever it stands ("in the
# appropriate clinical setting, this is compatible with pneumonia").
SENTENCE_POSSIBLE = [
    r"in the (?:appropriate|correct|proper|right) clinical (?:setting|"
    r"context)", r"if clinically (?:indicated|warranted)",
]
# The mention is what is seen; only its cause is hedged ("consolidation may
# represent atelectasis"): positive, except in CheXpert's convention.
POST_ATTRIBUTION = [
    r"(?:(?:is|are|was|were|\w+ly)\s+)*(?:may|might|could) (?:\w+ ){0,2}"
    r"(?:represent|reflect|indicate|relate|be (?:due|secondary|related|from|"
    r"caused|explained|accentuated|exaggerated))",
]
# A finding given as the probable reading: stronger than a possibility.
PRE_PROBABLE = [
    r"most (?:suggestive of|typical (?:of|for))", r"probable", r"probably",
    r"likely", r"most likely", r"presumed", r"presumably",
    r"favou?r(?:s|ed|ing)?", r"borderline", r"suspected", r"versus", r"vs",
]
# A finding stated as the reading of what is seen ("opacity consistent with
# pneumonia"): positive, and recorded as its own rule so it can be measured.
PRE_ASSERTION = [
    r"(?:most )?(?:consistent|compatible) with", r"in keeping with",
    r"representing", r"represents?", r"reflecting", r"diagnostic of",
    r"characteristic of", r"typical (?:of|for)",
]
POST_PROBABLE = [
    r"(?:is|are)? ?(?:likely|probable|favou?red|presumed|borderline)",
    r"versus", r"vs",
]
