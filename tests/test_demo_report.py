"""The demo's verdict lines say what the numbers say (planted results)."""

from jointcxr import demo_report


def _res(dice, lo, hi, r10, auroc):
  return {"seg/rsna/linear-frozen-100/dice_mean": dice,
          "seg/rsna/linear-frozen-100/dice_ci95_low": lo,
          "seg/rsna/linear-frozen-100/dice_ci95_high": hi,
          "seg/siim/linear-frozen-100/dice_mean": dice / 2,
          "seg/siim/linear-frozen-100/dice_ci95_low": dice / 2 - 5,
          "seg/siim/linear-frozen-100/dice_ci95_high": dice / 2 + 5,
          "retrieval/t2i/R@10": r10, "probe/auroc_mean": auroc,
          "meta/num_examples": 361.0,
          "grounding/ms_cxr/pointing_game_chance": 0.2047}


def test_verdicts_count_wins_separated_wins_and_state_chance():
  results = {"LoVT": _res(10.0, 9.0, 11.0, 0.127, 0.687),
             "ConVIRT": _res(9.0, 8.5, 9.5, 0.186, 0.665),
             "random init": _res(5.0, 4.0, 6.0, 0.025, 0.578)}
  tasks, _ = demo_report._localized_rows(results)
  assert tasks == ["seg/rsna/linear-frozen-100", "seg/siim/linear-frozen-100"]
  lines = demo_report._verdicts(results, tasks)
  # rsna: LoVT's interval [9, 11] clears random init's [4, 6] but not
  # ConVIRT's [8.5, 9.5]; siim: every interval overlaps.
  assert lines[0] == ("- LoVT beats random init on 2 of 2 localized tasks "
                      "(1 with non-overlapping 95% CIs over the probe "
                      "seeds).")
  assert lines[1] == ("- LoVT beats ConVIRT on 2 of 2 localized tasks (0 "
                      "with non-overlapping 95% CIs over the probe seeds).")
  assert lines[2] == ("- report→image R@10: LoVT 0.127, ConVIRT 0.186, "
                      "random init 0.025 (best: ConVIRT).")
  assert lines[-1] == ("- chance: R@10 = 10 / 361 test studies = 0.028; "
                       "pointing game of a random region 0.205.")
