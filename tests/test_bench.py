"""The benchmark suite's own logic: accelerator MFU mode and the summary."""

import json
import math
import os

import pytest

from bench import accelerator
from bench import report
from bench import run_all


def test_spec_peak_matches_device_kinds():
  assert accelerator.spec_peak_flops("NVIDIA H100 PCIe") == 756e12
  assert accelerator.spec_peak_flops("NVIDIA H100 80GB HBM3") == 989.4e12
  assert accelerator.spec_peak_flops("NVIDIA H200") == 989.4e12
  assert accelerator.spec_peak_flops("TPU v5 lite") == 197e12
  assert accelerator.spec_peak_flops("TPU v4") == 275e12
  assert accelerator.spec_peak_flops("cpu") is None


def test_projection_is_epochs_times_examples_over_throughput():
  p = accelerator.project(10.0, 1000, epochs=100, chips=(1, 8))
  assert p["hours_1_chips"] == pytest.approx(100 * 1000 / 10.0 / 3600)
  assert p["hours_8_chips"] == pytest.approx(p["hours_1_chips"] / 8)


def test_cpu_backend_measures_nothing_and_says_so(tmp_path):
  r = accelerator.run(methods=["lovt"], steps=1, smoke=False,
                      epoch_examples=10, joimternet_size=64,
                      peak_tflops=None)
  assert r["backend"] == "cpu" and "methods" not in r
  md = accelerator.to_markdown(r)
  assert "Not measured: the JAX backend is cpu" in md


def test_smoke_run_times_the_bf16_step(tmp_path):
  r = accelerator.run(methods=["lovt"], steps=1, smoke=True,
                      epoch_examples=1000, joimternet_size=64,
                      peak_tflops=100.0)
  (m,) = r["methods"]
  assert "error" not in m, m
  assert m["flops_per_step"] > 0 and m["step_s"] > 0
  # The tiny LoVT config accumulates 2 micro-batches: XLA's cost analysis
  # counts the scan body once, so model FLOPs come from the micro-step.
  assert m["accum_steps"] == 2
  assert m["flops_per_step"] == 2 * m["micro_step_flops"]
  assert m["flops_per_step"] > 1.5 * m["xla_flops_of_step_program"]
  assert math.isfinite(m["loss"])
  assert m["examples_per_s"] == pytest.approx(m["batch"] / m["step_s"])
  assert m["mfu"] == pytest.approx(m["flops_per_s"] / 100e12)
  assert r["lovt_projection"]["hours_1_chips"] == pytest.approx(
      100 * 1000 / m["examples_per_s"] / 3600)
  json_path, md_path = report.write_pair(str(tmp_path), "accelerator", r,
                                         accelerator.to_markdown(r))
  assert json.load(open(json_path))["methods"][0]["method"] == "lovt"
  assert "| lovt | 8 (2) | 64 |" in open(md_path).read()


def test_summary_reports_failures_and_tables():
  rows = [
      {"name": "matmul_peak", "command": "python -m bench.matmul_peak",
       "wall_s": 1.0, "ok": True, "markdown": "# Matmul peak\n\n| a |\n"},
      {"name": "retrieval", "command": "python -m bench.retrieval",
       "wall_s": 2.0, "ok": False, "error": "exit 1: boom"}]
  md = run_all.summary(rows, "python -m bench.run_all")
  assert "| retrieval | FAILED | 2.0 |" in md
  assert "Failed: retrieval" in md
  assert "## Matmul peak" in md  # demoted one level under the summary
  assert "exit 1: boom" in md


def test_run_one_reports_a_crashing_benchmark(tmp_path, monkeypatch):
  monkeypatch.setitem(run_all.BENCHMARKS, "matmul_peak",
                      (["--size=0"], ["--size=0"]))
  row = run_all.run_one("matmul_peak", str(tmp_path), quick=False)
  assert not row["ok"]
  assert "--size and --repeats must be positive" in row["error"]
  assert not os.path.exists(tmp_path / "matmul_peak.json")


def test_earlier_results_are_kept_and_marked(tmp_path):
  (tmp_path / "retrieval.md").write_text("# Retrieval\n\n| x |\n")
  row = run_all.earlier_row("retrieval", str(tmp_path))
  assert row["ok"] and row["earlier"]
  assert run_all.earlier_row("train_step", str(tmp_path)) is None
  md = run_all.summary([row], "python -m bench.run_all --only=matmul_peak")
  assert "| retrieval | earlier run (not re-run) |  |" in md
  assert "## Retrieval" in md


def test_input_pipeline_stream_is_timed_and_compared(converted_mimic,
                                                    tokenizer_path,
                                                    tmp_path):
  from bench import input_pipeline  # pylint: disable=g-import-not-at-top
  row = input_pipeline.time_method("convirt", str(converted_mimic),
                                   str(tokenizer_path), batch=4, batches=2)
  assert row["image_size"] == 224 and row["text_aug"] == "one_sentence"
  assert row["examples_per_s"] == pytest.approx(8 / row["wall_s"])
  assert row["examples_per_cpu_s"] == pytest.approx(8 / row["cpu_s"])
  # The comparison reads the same method's step at the same image size.
  (tmp_path / "train_step.json").write_text(json.dumps({
      "config": {"date": "D"},
      "rows": [{"method": "convirt", "size": {"image_size": 224},
                "jax_examples_per_s": 2.0},
               {"method": "lovt", "error": "exit 1"}]}))
  lovt = dict(row, method="lovt")
  assert input_pipeline.attach_step([row, lovt], str(tmp_path)) == "D"
  assert row["input_over_step"] == pytest.approx(row["examples_per_s"] / 2)
  assert "input_over_step" not in lovt
  r = {"date": "D", "cpu_count": 2, "subjects": 24, "train_examples": 9,
       "batches": 2, "methods": [row, lovt], "train_step_date": "D"}
  md = input_pipeline.to_markdown(r)
  assert "| convirt | 224 | lovt | one_sentence | 512 |" in md
  assert md.rstrip().endswith("| n/a | n/a | n/a |")


def test_hsu_claims_measure_end_to_end(converted_mimic, tokenizer_path,
                                       tmp_path):
  from bench import hsu_claims  # pylint: disable=g-import-not-at-top
  r = hsu_claims.measure(
      str(converted_mimic), str(tokenizer_path), str(tmp_path),
      seeds=(0, 1), fractions=(0.0, 0.1, 1.0), image_features="random",
      dims=(4, 8), config_overrides={"total_steps": 20,
                                     "log_every_steps": 10,
                                     "adv.hidden": 16})
  table = r["table"]["random"]["tfidf"]
  assert set(table) == {"ea", "adv", "ea_adv"}
  assert set(table["ea"]) == {"0.1", "1.0"}  # EA at fraction 0: undefined
  assert set(table["adv"]) == set(table["ea_adv"]) == {"0.0", "0.1", "1.0"}
  for by_f in table.values():
    for cell in by_f.values():
      for key in ("i2t/R@10", "t2i/R@10", "i2t/MRR", "t2i/MRR",
                  "mean/R@10", "pair_cosine"):
        s = cell[key]
        assert s["n"] == 2 and len(s["values"]) == 2
        assert all(math.isfinite(v) for v in [s["mean"], *s["ci95"]])
        assert s["ci95"][0] <= s["mean"] <= s["ci95"][1]
  # Adv is one game per seed; EA+Adv without pairs is the same game.
  assert table["adv"]["0.0"] == table["adv"]["1.0"] == table["ea_adv"]["0.0"]
  # The PCA dimension is chosen per seed on validate, never on test.
  sel = r["dim_selection"]["random"]["tfidf"]
  assert [s["seed"] for s in sel] == [0, 1]
  assert all(set(s["validate"]) == {"4", "8"} and s["dim"] in (4, 8)
             for s in sel)
  assert r["dim"]["random/tfidf"] == [s["dim"] for s in sel]
  n = r["n"]["test"]
  assert r["chance"]["R@10"] == pytest.approx(min(10, n) / n)
  assert set(r["baselines"]["random"]["tfidf"]) == {"identity", "random map"}
  verdicts = {c["id"]: c for c in r["claims"]["random"]["tfidf"]}
  assert set(verdicts) == {"adv_above_chance", "adv_beats_identity",
                           "ea_10pct_near_full", "ea_adv_ge_ea@0.1"}
  for c in verdicts.values():
    assert c["verdict"] in ("yes", "no") and math.isfinite(c["mean"])
  assert verdicts["adv_above_chance"]["threshold"] == r["chance"]["R@10"]
  md = hsu_claims.to_markdown(r)
  assert "| ea | n/a | " in md and "| chance | " in md
  assert md.count("**yes**") + md.count("**no**") == 4
  json.dumps(r)  # the report is JSON-able as written by write_pair


def test_machine_header_names_cpu_and_isa(tmp_path):
  m = report.machine()
  assert m["cpu_count"] == os.cpu_count() and m["cpu_model"]
  assert set(m["isa"]) <= set(report._ISA)  # pylint: disable=protected-access
  line = report.machine_line({"cpu_model": "X CPU", "cpu_count": 2,
                              "machine": "x86_64", "isa": ["avx2", "fma"]})
  assert line == "X CPU, 2 CPUs (x86_64; ISA: avx2, fma)"
  # Results written before the header existed still render.
  assert report.machine_line({"cpu_count": 2, "machine": "x86_64"}) == (
      "CPU model not recorded, 2 CPUs (x86_64; ISA: not recorded)")


def test_retrieval_bench_times_blocked_against_unfused(tmp_path):
  from bench import retrieval  # pylint: disable=g-import-not-at-top
  r = retrieval.run(3000, chunk_size=512, peak_n=128, peak_repeats=2)
  assert r["metrics"]["R@1"] == 1.0
  assert r["ranks_differing"] == 0 and r["topk_rows_differing"] <= 30
  assert r["unfused_over_blocked"] == pytest.approx(
      r["unfused_wall_s"] / r["wall_s"])
  md = retrieval.to_markdown(r)
  assert "| blocked pass (the evaluator) | 3,000 |" in md
  assert "| unfused (before)" in md and r["config"]["cpu_model"] in md


def test_every_result_names_its_host(tmp_path):
  md = "# Title\n\nbody\n"
  j, m = report.write_pair(str(tmp_path), "x", {"a": 1}, md)
  with open(j) as f:
    assert json.load(f)["host_machine"] == report.machine()
  with open(m) as f:
    text = f.read()
  assert text.startswith("# Title\n\nHost: " + report.machine_line(
      report.machine()) + ".\n\nbody")
  # A header that already names the host is left as it is; a re-rendered
  # result from elsewhere keeps its own host.
  host = {"cpu_model": "Other CPU", "cpu_count": 4, "machine": "arm64",
          "isa": []}
  md = "# T\n\n" + report.machine_line(host) + ", more\n"
  _, m = report.write_pair(str(tmp_path), "y", {"host_machine": host}, md)
  with open(m) as f:
    assert f.read() == md + "\n"
  _, m = report.write_pair(str(tmp_path), "z", {}, "# T\n",
                           measured_here=False)
  with open(m) as f:
    assert f.read() == "# T\n\nHost: not recorded.\n\n"
