"""The sweep job: overrides, skip logic, CSV, and each configs/sweep_*.py quick variant end to end.

The end-to-end tests run each quick sweep on the session's tiny model (2 runs each), check
results.csv / report.md / plots, then rerun the sweep and check that every run is reused.
"""

import csv
import importlib
import json
import os
import pathlib
import time

import ml_collections
import pytest

from configs import compress as compress_config
from penrose_jax.jobs import sweep
from penrose_jax.reporting import report_json, sweep_report

SWEEPS = ("sweep_tiling", "sweep_spectral", "sweep_ratio", "sweep_bytes", "sweep_alignment",
          "sweep_adaptation", "sweep_baseline", "sweep_injection")
# Plots each quick sweep must produce (file names under DIR/plots).
EXPECTED_PLOTS = {
    "sweep_tiling": ("param_ratio_vs_ppl_compressed.png", "hidden_kl_per_layer.png"),
    "sweep_spectral": ("param_ratio_vs_ppl_compressed.png", "param_ratio_vs_hidden_kl.png"),
    "sweep_ratio": ("param_ratio_vs_ppl_compressed.png", "hidden_kl_per_layer.png"),
    "sweep_bytes": ("bytes_compressed_vs_ppl_compressed.png",),
    "sweep_baseline": ("param_ratio_vs_ppl_compressed.png",),
    "sweep_alignment": ("bar_logit_kl_after.png", "train_loss.png"),
    "sweep_adaptation": ("bar_heldout_ll_accuracy_after.png", "train_loss.png",
                         "qa_loss_by_section.png"),
    "sweep_injection": ("train_tokens_vs_exam_accuracy_sum_after.png",
                        "train_tokens_vs_exam_accuracy_mean_after.png",
                        "bar_exam_accuracy_sum_after.png", "train_loss.png",
                        "learning_curve_exam_accuracy_mean.png",
                        "learning_curve_exam_accuracy_sum.png"),
}


def test_apply_overrides_copies_and_rejects_unknown_keys():
  base = compress_config.get_config("quick")
  tiling = base.compression.tiling
  new = sweep.apply_overrides(base, {"compression.tiling": "grid", "compression.tau": 0.1})
  assert new.compression.tiling == "grid" and new.compression.tau == 0.1
  assert tiling != "grid" and base.compression.tiling == tiling and base.compression.tau is None
  with pytest.raises(KeyError, match="tilling"):
    sweep.apply_overrides(base, {"compression.tilling": "grid"})


def test_sweep_config_checks_names_before_any_work():
  base = compress_config.get_config("quick")
  for runs, message in (([("a", {}), ("a", {})], "unique"), ([("../x", {})], "folder"),
                        ([("a", {"nope.key": 1})], "nope"), ([], "empty")):
    with pytest.raises((ValueError, KeyError), match=message):
      sweep._check_sweep_config(sweep.make_sweep_config(base, "compress", runs))


def test_finished_report_compares_resolved_config(tmp_path):
  base = compress_config.get_config("quick")
  report_json.write_json_atomic(tmp_path / "report.json",
                                report_json.build_report("compress", base, "m", 1.0, {"x": 1}))
  assert sweep.finished_report(tmp_path, base)["x"] == 1
  changed = sweep.apply_overrides(base, {"compression.param_ratio": 0.5})
  assert sweep.finished_report(tmp_path, changed) is None
  assert sweep.finished_report(tmp_path / "missing", base) is None
  # A field added to the configs later with an empty value does not invalidate the run.
  added = sweep.apply_overrides(base, {})
  added.eval.new_off_field = ""
  assert sweep.finished_report(tmp_path, added)["x"] == 1
  added.eval.new_off_field = "on"
  assert sweep.finished_report(tmp_path, added) is None


def test_rows_csv_and_best_per_metric():
  config = sweep.apply_overrides(compress_config.get_config("quick"),
                                 {"compression.tiling": "grid"})
  report = {"job": "compress", "config": {}, "wall_s": 2.0, "ppl_compressed": 10.0,
            "ppl_compressed_by_set": {"a": 10.0}, "matrices": [1], "hidden_kl_per_layer": [1.0]}
  row = sweep.result_row("g", {"compression.tiling": "grid"}, config, report,
                         ["compression.whiten"])
  assert row == {"run": "g", "compression.tiling": "grid", "compression.whiten": True,
                 "wall_s": 2.0, "ppl_compressed": 10.0, "ppl_compressed_by_set.a": 10.0}
  rows = [row, {"run": "h", "ppl_compressed": 5.0, "heldout_f1_after": 0.5, "extra": None}]
  parsed = list(csv.DictReader(sweep.results_csv_text(rows).splitlines()))
  assert [r["run"] for r in parsed] == ["g", "h"] and parsed[1]["compression.tiling"] == ""
  best = {b["metric"]: b["run"] for b in sweep_report.best_per_metric(
      rows, ["ppl_compressed", "heldout_f1_after", "heldout_f1_before", "extra", "wall_s"])}
  assert best == {"ppl_compressed": "h", "heldout_f1_after": "h", "wall_s": "g"}


def _quick_config(name: str, tiny_model_dir: pathlib.Path) -> ml_collections.ConfigDict:
  config = importlib.import_module(f"configs.{name}").get_config("quick")
  for key in ("model", "compress.model"):
    if sweep._has(config.base, key):
      config.base = sweep.apply_overrides(config.base, {key: str(tiny_model_dir)})
  return config


@pytest.mark.slow
@pytest.mark.parametrize("name", SWEEPS)
def test_quick_sweep_end_to_end_and_rerun_skips(name, tiny_model_dir, tmp_path):
  config = _quick_config(name, tiny_model_dir)
  assert 2 <= len(config.runs) <= 3
  report = sweep.run(config, tmp_path)
  names = [n for n, _ in config.runs]
  assert report["status"] == {n: "ran" for n in names}
  with open(tmp_path / "results.csv", encoding="utf-8") as handle:
    rows = list(csv.DictReader(handle))
  assert [r["run"] for r in rows] == names
  for key in {k for _, overrides in config.runs for k in overrides}:
    assert key in rows[0]
  assert "wall_s" in rows[0]
  markdown = (tmp_path / "report.md").read_text()
  assert "## Reading" in markdown and "Not written yet" in markdown and "best " in markdown
  for plot in report["plots"]:
    assert (tmp_path / plot).is_file() and plot in markdown
  for plot in EXPECTED_PLOTS[name]:
    assert (tmp_path / "plots" / plot).is_file(), (plot, report["plots"])
  if config.job == "compress":
    assert "Tiling pictures" in markdown
  mtimes = {n: os.path.getmtime(tmp_path / "runs" / n / "report.json") for n in names}
  start = time.time()
  again = sweep.run(config, tmp_path)
  assert again["status"] == {n: "reused" for n in names}
  assert time.time() - start < 30
  assert {n: os.path.getmtime(tmp_path / "runs" / n / "report.json") for n in names} == mtimes
  assert json.loads((tmp_path / "report.json").read_text())["status"] == again["status"]
  # A person's reading.md goes into report.md; with the time budget spent, a run added to the
  # config is listed as not run (no row), and the finished ones are still reused.
  (tmp_path / "reading.md").write_text("Nothing helped here.\n")
  extra_name, extra_overrides = config.runs[0]
  config.runs = list(config.runs) + [(extra_name + "_again", dict(extra_overrides))]
  config.time_budget_s = 1e-9
  budgeted = sweep.run(config, tmp_path)
  assert budgeted["status"] == {**{n: "reused" for n in names},
                                extra_name + "_again": "not run (time budget)"}
  assert not (tmp_path / "runs" / (extra_name + "_again") / "report.json").exists()
  markdown = (tmp_path / "report.md").read_text()
  assert "Nothing helped here." in markdown and "Not written yet" not in markdown
  assert "Not run yet (1; the time budget ran out" in markdown and extra_name + "_again" in markdown
  with open(tmp_path / "results.csv", encoding="utf-8") as handle:
    assert [r["run"] for r in csv.DictReader(handle)] == names
  # results_dir: the files a reader needs are copied out, picture links rewritten.
  config.results_dir = str(tmp_path / "published")
  sweep.run(config, tmp_path)
  published = tmp_path / "published"
  for file in ("results.csv", "report.md", "report.json", "reading.md"):
    assert (published / file).is_file(), file
  assert sorted(p.name for p in (published / "plots").glob("*.png")) == sorted(
      p.name for p in (tmp_path / "plots").glob("*.png"))
  copied = (published / "report.md").read_text()
  assert "](runs/" not in copied
  if config.job == "compress":
    assert any((published / "pictures").glob("*.png")) and "](pictures/" in copied
