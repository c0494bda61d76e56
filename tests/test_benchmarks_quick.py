"""The speed benchmarks' --quick modes run end to end and write well-formed JSON."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(script: str, out: pathlib.Path) -> dict:
  env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick",
                         f"--out={out}"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert "|---" in proc.stdout  # the printed table
  return json.loads(out.read_text())


def _positive(row: dict, keys: list[str]) -> None:
  for key in keys:
    assert row[key] > 0, (row.get("name"), key, row[key])


def test_inference_speed_quick(tmp_path):
  result = _run("inference_speed.py", tmp_path / "inference.json")
  assert result["quick"] and result["peak_before"]["gflops"] > 0
  names = [r["name"] for r in result["rows"]]
  assert names[0] == "dense" and "penrose 0.6" in names and "grid 0.6" in names
  for row in result["rows"]:
    _positive(row, ["prefill_1x32_tok_s", "prefill_8x32_tok_s", "decode_tok_s",
                    "flops_per_token_prefill_1x32", "flops_per_token_decode",
                    "speedup_prefill_1x32"])
  dense, pen = result["rows"][0], result["rows"][names.index("penrose 0.6")]
  # Compression at ratio 0.6 must lower the FLOPs XLA counts (the factored matmul is used).
  assert pen["flops_per_token_prefill_1x32"] < dense["flops_per_token_prefill_1x32"]
  assert 0.5 < pen["param_ratio"] < 0.7
  assert "penrose_over_grid_prefill_0.6" in result["targets"]
  # --quick times both inference forms (per-layer and shared); compile time is per row.
  assert "dense shared" in names and all(r["compile_s"] > 0 for r in result["rows"])
  assert "penrose_0.6_compile_over_dense" in result["targets"]


def test_train_throughput_quick(tmp_path):
  result = _run("train_throughput.py", tmp_path / "train.json")
  assert result["quick"] and result["peak_gflops"] > 0
  assert [r["name"] for r in result["rows"]] == ["align", "qa", "qa_dense"]
  for row in result["rows"]:
    _positive(row, ["tokens_per_s", "step_s", "flops_per_step", "achieved_gflops",
                    "fraction_of_peak"])


def test_compression_speed_quick(tmp_path):
  result = _run("compression_speed.py", tmp_path / "compression.json")
  assert [r["svd_method"] for r in result["stages"]] == ["exact", "randomized"]
  for run in result["stages"]:
    assert {"load", "calibrate", "factor", "write"} <= set(run["stage_s"]), run["stage_s"]
    assert 0.5 < run["param_ratio"] < 0.7
  # The randomized SVD costs (almost) nothing in quality on the tiny model.
  cmp = result["randomized_vs_exact"]
  assert cmp["mean_rel_fro_error_randomized"] < cmp["mean_rel_fro_error_exact"] * 1.05
  assert len(result["scaling"]) == 2 * 2 * 2  # 2 sizes x 2 shapes x 2 ranks
  for row in result["scaling"]:
    assert row["exact_s"] > 0 and row["randomized_s"] > 0
    assert row["sigma_max_rel_err"] < 0.05 and row["excess_trunc_err"] < 0.05
