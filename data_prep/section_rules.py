"""Per-study sectioning rules of MIMIC-CXR, as data.

Facts about the dataset recorded by MIT-LCP/mimic-cxr (`txt/section_parser.py`,
`custom_mimic_cxr_rules`): 54 reports the automatic sectioner gets wrong,
each with where its conclusion really is. `data_prep.sections` applies them
by default (`official_rules=True`).

* `SECTION_NAMES` (23 studies): the conclusion is the last section with
  this normalised name (the report names its impression otherwise).
* `SPANS` (31 studies): the conclusion is the character span
  `text[start:end]` of the report (as read in text mode, so "\\r\\n" is one
  character). The 8 spans (0, 0) are reports with no findings at all.

Keys are study ids as in the report file names (`s<study_id>`); the
comment is the report's path under `files/`.
"""

SECTION_NAMES = {
    "s50058765": "indication",       # p14/p14731346
    "s50743547": "examination",      # p11/p11388341
    "s50808053": "technique",        # p16/p16631485
    "s50913680": "recommendations",  # p11/p11851243
    "s51491012": "history",          # p19/p19314266
    "s51966317": "indication",       # p10/p10817099
    "s53202765": "technique",        # p16/p16076182
    "s53356173": "examination",      # p15/p15898350
    "s54365831": "indication",       # p13/p13876470
    "s54654948": "indication",       # p17/p17090359
    "s55124749": "indication",       # p12/p12428492
    "s55157853": "examination",      # p18/p18975498
    "s56451190": "note",             # p11/p11842879
    "s56482935": "recommendations",  # p15/p15388421
    "s57936451": "indication",       # p14/p14325424
    "s58157373": "recommendations",  # p15/p15032392
    "s58375018": "recommendations",  # p15/p15505556
    "s59067458": "recommendations",  # p11/p11984647
    "s59087630": "recommendations",  # p14/p14267880
    "s59215320": "examination",      # p12/p12408912
    "s59279892": "technique",        # p13/p13150370
    "s59363654": "examination",      # p12/p12128253
    "s59768032": "recommendations",  # p13/p13249077
}

SPANS = {
    "s50196495": (59, 399),   # p13/p13894879
    "s50525523": (201, 349),  # p10/p10602608
    "s51410602": (47, 320),   # p17/p17069955
    "s52119491": (179, 454),  # p17/p17959278
    "s52648681": (292, 631),  # p15/p15666238
    "s52674888": (145, 296),  # p19/p19381919
    "s53182247": (59, 412),   # p16/p16770442
    "s53488209": (149, 475),  # p12/p12458657
    "s53514462": (73, 377),   # p16/p16297706
    "s54875119": (234, 988),  # p13/p13687044
    "s54986978": (59, 306),   # p17/p17912487
    "s55258338": (192, 568),  # p13/p13719117
    "s56412866": (522, 822),  # p17/p17612000
    "s56579911": (59, 218),   # p15/p15394326
    "s56760320": (219, 457),  # p18/p18418794
    "s57150433": (61, 394),   # p18/p18335791
    "s57564132": (233, 554),  # p10/p10637168
    "s59003148": (262, 505),  # p17/p17916384
    "s59330497": (140, 655),  # p15/p15479218
    "s59505494": (59, 450),   # p16/p16730991
    "s59562049": (158, 348),  # p18/p18502016
    "s59889364": (172, 453),  # p15/p15835529
    "s59982525": (313, 717),  # p11/p11989982
    # No findings at all in these reports.
    "s50798377": (0, 0),      # p12/p12632853
    "s52035334": (0, 0),      # p19/p19349312
    "s53071062": (0, 0),      # p15/p15774521
    "s53607029": (0, 0),      # p17/p17603668
    "s54168089": (0, 0),      # p14/p14463099
    "s54231141": (0, 0),      # p16/p16312859
    "s56724958": (0, 0),      # p16/p16175671
    "s58235663": (0, 0),      # p11/p11573679
}
